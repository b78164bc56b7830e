"""What the ML example applications share: their arguments, the tabular schema, metrics, and the
predictions they write.

Each example runs in two stages, each its own ``ppml submit`` (so its own attested process):
``--stage train`` trains on the encrypted training split, saves the model encrypted and writes its
predictions on the held-out split; ``--stage score`` loads the model in a new process, writes its
predictions on the same rows and prints the held-out metric (``AUC: 0.xxxx`` or ``RMSE: x.xxxx``).
Predictions are ``id,label,score`` (``score``: P(label = 1) for classification, the predicted value
for regression), encrypted under the results key, so the data owner can check that both stages
predicted exactly the same.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ppml.datagen import ranking_auc

__all__ = ["CLASSIFICATION", "REGRESSION", "Timer", "feature_names", "metric_line", "parse_args", "read_split",
           "schema_ddl", "write_held_out"]

CLASSIFICATION, REGRESSION = "classification", "regression"


def parse_args(description: str, argv: Sequence[str] | None = None, *,
               extra: Sequence[tuple[str, dict[str, Any]]] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--stage", choices=["train", "score"], required=True)
    parser.add_argument("--task", choices=[CLASSIFICATION, REGRESSION], default=CLASSIFICATION)
    parser.add_argument("--train", help="the encrypted training split (train stage)")
    parser.add_argument("--test", required=True, help="the encrypted held-out split")
    parser.add_argument("--model", required=True, help="the encrypted model's directory")
    parser.add_argument("--predictions", required=True, help="where to write the encrypted predictions")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--kms", required=True, help="KMS URI (keys come through the TEE's key agent)")
    parser.add_argument("--modelKey", required=True, help="primary key id for the model's data keys")
    parser.add_argument("--outputKey", required=True, help="primary key id for the predictions' data keys")
    parser.add_argument("--master", help="Spark master when run without spark-submit")
    for flags, options in extra:
        parser.add_argument(flags, **options)
    args = parser.parse_args(argv)
    if args.stage == "train" and not args.train:
        parser.error("--stage train needs --train")
    return args


def feature_names(count: int) -> list[str]:
    return [f"f{i}" for i in range(count)]


def schema_ddl(features: int) -> str:
    """The splits' Spark schema: ``id``, the features, ``label`` (what ``ppml example`` writes)."""
    return ", ".join(["id BIGINT", *(f"{name} DOUBLE" for name in feature_names(features)), "label DOUBLE"])


def read_split(spark: Any, path: str, args: argparse.Namespace) -> Any:
    """A split as a DataFrame through ppml's source (keys from the TEE's key agent)."""
    return (spark.read.format("ppml").option("format", "csv").option("header", "true").option("kms", args.kms)
            .schema(schema_ddl(args.features)).load(path))


def write_held_out(frame: Any, args: argparse.Namespace) -> str:
    """Write the ``id,label,score`` DataFrame encrypted to ``--predictions`` (one file); return the
    metric line over it."""
    frame = frame.cache()
    (frame.coalesce(1).write.format("ppml").mode("overwrite").option("format", "csv").option("header", "true")
     .option("kms", args.kms).option("key", args.outputKey).save(args.predictions))
    held_out = frame.select("label", "score").toPandas()
    frame.unpersist()
    print(f"wrote {len(held_out):,} encrypted predictions: {args.predictions}", flush=True)
    return metric_line(args.task, held_out["label"].to_numpy(), held_out["score"].to_numpy())


def metric_line(task: str, labels: np.ndarray, scores: np.ndarray) -> str:
    """``AUC: 0.xxxx`` (Mann-Whitney, exact) or ``RMSE: x.xxxx`` of ``scores`` against ``labels``."""
    if task == CLASSIFICATION:
        return f"AUC: {ranking_auc(labels, scores):.4f}"
    return f"RMSE: {float(np.sqrt(np.mean((np.asarray(scores) - np.asarray(labels)) ** 2))):.4f}"


class Timer:
    """Seconds since construction, for the one-line reports the stages print."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.started:.1f} s"
