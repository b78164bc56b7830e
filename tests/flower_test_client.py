"""A ClientApp for tests, copied into the Flower App's directory: ppml's client, except that a node
whose config lists ``wrong-shape`` in ``behaviour`` returns an extra row in its first weight matrix and
one that lists ``hang`` writes ``marker`` and stalls in training (the test then kills
its SuperNode mid-round); ``wrong_shape_app`` and ``dropout_app`` each enact one of them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.client import ClientApp
from flwr.client.mod import secaggplus_mod
from flwr.common import Context

from ppml.fl.flower.client_app import _Party


class _TestParty(_Party):
    active = ""

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        behaviours = str(context.node_config.get("behaviour", "")).split(",")
        self.behaviour = self.active if self.active in behaviours else ""
        self.marker = str(context.node_config.get("marker", ""))

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        weights, count, metrics = super().fit(parameters, config)
        if self.behaviour == "wrong-shape":
            weights[0] = np.vstack([weights[0], weights[0][:1]])
        elif self.behaviour == "hang":
            Path(self.marker).write_text("training")
            time.sleep(600)
        return weights, count, metrics


class _WrongShape(_TestParty):
    active = "wrong-shape"


class _Hang(_TestParty):
    active = "hang"


wrong_shape_app = ClientApp(client_fn=lambda context: _WrongShape(context).to_client(), mods=[secaggplus_mod])
dropout_app = ClientApp(client_fn=lambda context: _Hang(context).to_client(), mods=[secaggplus_mod])
