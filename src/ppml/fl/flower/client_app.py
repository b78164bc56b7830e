"""The Flower ClientApps (import ``flwr``: only ever imported inside the Flower venv).

``client_app`` runs under Flower's ``secaggplus_mod`` (``plain_client_app``: without it, for the
benchmark). Flower starts one ClientApp process per message, four per SecAgg+ round, so torch and
the node's data are loaded only for the training step. The node's data is its ppml-encrypted CSV
table (node config ``data-path`` and ``kms``; the last column is the label); the client trains from
the global weights and returns its weights and row count.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context

__all__ = ["client_app", "load_party_data", "plain_client_app"]



def load_party_data(path: str, kms_uri: str) -> tuple[np.ndarray, np.ndarray]:
    """The node's encrypted table: every column but the last is a feature, the last the label."""
    from ppml.tabular.tables import read_csv_table
    from ppml.tee.keys import kms_for

    table = read_csv_table(path, kms=kms_for(kms_uri))
    columns = [np.asarray(table.column(i).to_numpy(), dtype=np.float64) for i in range(table.num_columns)]
    return np.stack(columns[:-1], axis=1), columns[-1].astype(np.int64)


class _Party(NumPyClient):  # type: ignore[misc,unused-ignore]
    def __init__(self, context: Context) -> None:
        self.run_config = context.run_config
        node = context.node_config
        self.x, self.y = load_party_data(str(node["data-path"]), str(node["kms"]))
        self.seed = int(node.get("seed", 0))

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        from ppml.fl.flower import model as models

        c = self.run_config
        model = models.build(str(c["model"]), features=int(c["features"]), classes=int(c["classes"]),
                             hidden=int(c.get("hidden", 32)), seed=int(c.get("seed", 0)))
        models.set_weights(model, parameters)
        loss = models.train(model, self.x, self.y, epochs=int(self.run_config["local-epochs"]),
                            batch_size=int(self.run_config["batch-size"]),
                            learning_rate=float(self.run_config["learning-rate"]), seed=self.seed)
        return models.get_weights(model), len(self.y), {"loss": loss}


def _client_fn(context: Context) -> Any:
    return _Party(context).to_client()


client_app = ClientApp(client_fn=_client_fn, mods=[secaggplus_mod])
plain_client_app = ClientApp(client_fn=_client_fn)
