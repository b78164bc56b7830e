"""The Flower ServerApp (imports ``flwr``: only ever imported inside the Flower venv).

FedAvg for ``num-rounds`` rounds, every fit round through Flower's ``SecAggPlusWorkflow``
(``secagg = false`` in the run config: plain FedAvg, for the benchmark), so the server only ever
holds the sum of the clients' quantized, masked updates. Before the workflow sums the masked
vectors, ppml checks each one's shapes against the global model's and drops a vector that does not
fit: SecAgg+ then treats its sender as dropped and removes its masks (within the threshold)
instead of failing the round. With ``record-dir`` set it also writes every masked vector it
received there (the tests assert that no plaintext update is among them). The final model is
saved with :func:`ppml.torch.checkpoint.save` under ``model-key`` in ``model-kms``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common import Context, Message, bytes_to_ndarray, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from ppml.fl.flower import model as models
from ppml.fl.flower.params import SecAggPlusParams

__all__ = ["server_app"]

_log = logging.getLogger("ppml.fl.flower")


def _global_model(config: Any) -> Any:
    return models.build(str(config["model"]), features=int(config["features"]), classes=int(config["classes"]),
                        hidden=int(config.get("hidden", 32)), seed=int(config.get("seed", 0)))



class _CheckingGrid:
    """The Grid the workflow sees: drops masked vectors of the wrong shape, records the rest."""

    def __init__(self, grid: Grid, shapes: list[tuple[int, ...]], record_dir: Path | None) -> None:
        self._grid = grid
        self._shapes = [(1,), *shapes]  # Flower puts the quantized weight ratio first
        self._record_dir = record_dir
        self.refused: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        stages = {str(m.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE))
                  for m in messages if RECORD_KEY_CONFIGS in m.content.config_records}
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        if stages != {Stage.COLLECT_MASKED_VECTORS}:
            return replies
        kept = []
        for reply in replies:
            if reply.has_error():
                kept.append(reply)
                continue
            masked = reply.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
            vectors = [bytes_to_ndarray(b) for b in masked]
            node = reply.metadata.src_node_id
            if [tuple(v.shape) for v in vectors] != self._shapes:
                _log.warning("ppml: refused the masked update of node %s: shapes %s, the model's are %s", node,
                             [tuple(v.shape) for v in vectors], self._shapes)
                self.refused.append(node)
                continue
            if self._record_dir is not None:
                np.save(self._record_dir / f"masked-{node}-{time.monotonic_ns()}.npy",
                        np.concatenate([v.ravel().astype(np.float64) for v in vectors[1:]]), allow_pickle=False)
            kept.append(reply)
        return kept


class _KeepLast(FedAvg):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.final: list[np.ndarray] | None = None
        self.history: list[dict[str, Any]] = []

    def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is not None:
            self.final = parameters_to_ndarrays(parameters)
        self.history.append({"round": server_round, "results": len(results), "failures": len(failures)})
        return parameters, metrics


server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    config = context.run_config
    clients = int(config["clients"])
    model = _global_model(config)
    initial = models.get_weights(model)
    strategy = _KeepLast(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=int(config["min-clients"]),
                         min_evaluate_clients=0, min_available_clients=clients,
                         initial_parameters=ndarrays_to_parameters(initial))
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=int(config["num-rounds"])),
                           strategy=strategy)
    record_dir = Path(str(config["record-dir"])) if config.get("record-dir") else None
    checking = _CheckingGrid(grid, [tuple(w.shape) for w in initial], record_dir)
    started = time.monotonic()
    if bool(config.get("secagg", True)):
        params = SecAggPlusParams(clients=clients, num_shares=int(config["num-shares"]),
                                  threshold=int(config["threshold"]), clipping_range=float(config["clipping-range"]),
                                  quantization_range=int(config["quantization-range"]),
                                  modulus_range=int(config["modulus-range"]), max_weight=float(config["max-weight"]),
                                  timeout=float(config["secagg-timeout"]))
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=params.num_shares, reconstruction_threshold=params.threshold,
            clipping_range=params.clipping_range, quantization_range=params.quantization_range,
            modulus_range=params.modulus_range, max_weight=params.max_weight, timeout=params.timeout))
    else:
        workflow = DefaultWorkflow()
    workflow(checking, legacy)
    elapsed = time.monotonic() - started
    if strategy.final is None:
        raise RuntimeError("no round produced an aggregate")
    models.set_weights(model, strategy.final)
    summary = {"rounds": strategy.history, "refused": checking.refused, "seconds": elapsed}
    if config.get("result-dir"):
        result_dir = Path(str(config["result-dir"]))
        np.savez(result_dir / "aggregate.npz", *strategy.final)
        (result_dir / "summary.json").write_text(json.dumps(summary))
    if config.get("model-path"):
        from ppml.tee.keys import kms_for
        from ppml.torch.checkpoint import save

        save(model.state_dict(), str(config["model-path"]), kms=kms_for(str(config["model-kms"])),
             key_id=str(config["model-key"]), overwrite=True)
    _log.warning("ppml: federated training done: %s", json.dumps(summary))
