"""LightGBM inside the TEE: the encrypted training split decrypted into Arrow (never to disk), a
booster trained with the ``lightgbm`` package on this node's cores, saved encrypted (LightGBM's text
format inside ppml envelopes), reloaded in a new process and scored. No Spark: LightGBM's Spark
integration is JVM jars from a Maven repository this project cannot use (README); xgboost.spark is
ppml's distributed GBDT. Stages and arguments: :mod:`ppml.examples.tabular_job`.

    ppml submit --tee simulated … ppml/examples/lightgbm_example.py --stage train --train train.csv.ppml \\
        --test test.csv.ppml --model model --predictions predictions-trained --kms URI \\
        --modelKey K1 --outputKey K2
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from ppml.examples.tabular_job import CLASSIFICATION, Timer, feature_names, metric_line, parse_args

ROUNDS = 200


def parameters(task: str) -> dict[str, Any]:
    return {"objective": "binary" if task == CLASSIFICATION else "regression", "learning_rate": 0.1,
            "num_leaves": 15, "min_data_in_leaf": 50, "seed": 1, "deterministic": True, "force_row_wise": True,
            "num_threads": os.cpu_count() or 1, "verbose": -1}


def read_split(path: str, args: Any, kms: Any) -> tuple[Any, Any, Any]:
    """``(ids, features, labels)`` of a split, decrypted into Arrow then NumPy."""
    import numpy as np
    import pyarrow as pa

    from ppml.tabular.tables import read_csv_table

    names = feature_names(args.features)
    table = read_csv_table(path, kms=kms, column_types={"id": pa.int64(), **dict.fromkeys(names, pa.float64()),
                                                          "label": pa.float64()})
    features = np.column_stack([table.column(name).to_numpy() for name in names])
    return table.column("id"), features, table.column("label").to_numpy()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n\n")[0], argv)
    import lightgbm
    import numpy as np
    import pyarrow as pa

    import ppml.ml
    from ppml.tabular.tables import write_csv_table
    from ppml.tee.keys import kms_for

    kms = kms_for(args.kms)
    if args.stage == "train":
        timer = Timer()
        _, features, labels = read_split(args.train, args, kms)
        booster = lightgbm.train(parameters(args.task), lightgbm.Dataset(features, label=labels),
                                 num_boost_round=ROUNDS)
        print(f"trained a LightGBM booster ({ROUNDS} rounds) on {len(labels):,} rows in {timer}", flush=True)
        manifest = ppml.ml.save(booster, args.model, kms=kms, key_id=args.modelKey, overwrite=True)
        print(f"saved the model encrypted: {args.model} ({len(manifest.files)} files)", flush=True)
    else:
        booster = ppml.ml.load(args.model, kms=kms)
        print(f"loaded the encrypted model: a LightGBM booster of {booster.num_trees()} trees", flush=True)
    ids, features, labels = read_split(args.test, args, kms)
    scores = np.asarray(booster.predict(features), dtype=np.float64)
    write_csv_table(pa.table({"id": ids, "label": labels, "score": scores}), args.predictions, kms=kms,
                    key_id=args.outputKey, overwrite=True)
    print(f"wrote {len(labels):,} encrypted predictions: {args.predictions}", flush=True)
    print(metric_line(args.task, labels, scores), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
