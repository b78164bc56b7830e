"""Distributed XGBoost on encrypted data: ``xgboost.spark`` (SparkXGBClassifier / SparkXGBRegressor,
``--num-workers`` barrier tasks, 2 by default) trains on CSV read through ppml's source; the Spark
model and its booster are saved encrypted (XGBoost's UBJ inside ppml envelopes). The score stage runs
without Spark: single-node inference with the booster on the held-out split, decrypted into Arrow.
Stages and arguments: :mod:`ppml.examples.tabular_job`.

    ppml submit --tee simulated … ppml/examples/xgboost_example.py --stage train --train train.csv.ppml \\
        --test test.csv.ppml --model model --predictions predictions-trained --kms URI \\
        --modelKey K1 --outputKey K2
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ppml.examples.tabular_job import (
    CLASSIFICATION,
    Timer,
    feature_names,
    metric_line,
    parse_args,
    read_split,
    write_held_out,
)

SPARK_MODEL, BOOSTER = "spark-model", "booster"
"""The two encrypted models under ``--model``: the xgboost.spark model, and its booster."""
PARAMETERS: dict[str, Any] = {"n_estimators": 100, "max_depth": 4, "learning_rate": 0.1, "tree_method": "hist"}


def train(args: Any, kms: Any) -> None:
    import ppml.ml
    from ppml.spark.session import secure_session

    spark = secure_session("xgboost train", master=args.master)
    try:
        from pyspark.ml.feature import VectorAssembler
        from pyspark.ml.functions import vector_to_array
        from pyspark.sql import functions as F
        from xgboost.spark import SparkXGBClassifier, SparkXGBRegressor

        assemble = VectorAssembler(inputCols=feature_names(args.features), outputCol="features")
        timer = Timer()
        frame = assemble.transform(read_split(spark, args.train, args))
        estimator = SparkXGBClassifier if args.task == CLASSIFICATION else SparkXGBRegressor
        model = estimator(num_workers=args.num_workers, label_col="label", features_col="features",
                          **PARAMETERS).fit(frame)
        print(f"trained {estimator.__name__} with {args.num_workers} workers in {timer}", flush=True)
        Path(args.model).mkdir(parents=True, exist_ok=True)
        for name, saved in ((SPARK_MODEL, model), (BOOSTER, model.get_booster())):
            manifest = ppml.ml.save(saved, Path(args.model, name), kms=kms, key_id=args.modelKey, overwrite=True)
            print(f"saved the {type(saved).__name__} encrypted: {Path(args.model, name)} ({len(manifest.files)} "
                  "files)", flush=True)
        scored = model.transform(assemble.transform(read_split(spark, args.test, args)))
        score = vector_to_array(F.col("probability"))[1] if args.task == CLASSIFICATION else F.col("prediction")
        print(write_held_out(scored.select("id", "label", score.alias("score")), args), flush=True)
    finally:
        spark.stop()


def score(args: Any, kms: Any) -> None:
    """Single-node inference inside the TEE: no Spark, the booster and Arrow."""
    import numpy as np
    import pyarrow as pa

    import ppml.ml
    from ppml.tabular.tables import read_csv_table, write_csv_table

    booster = ppml.ml.load(Path(args.model, BOOSTER), kms=kms)
    where = "no Spark in this process" if "pyspark" not in sys.modules else "pyspark loaded"
    print(f"loaded the encrypted {type(booster).__name__} ({booster.num_boosted_rounds()} rounds; {where})",
          flush=True)
    names = feature_names(args.features)
    table = read_csv_table(args.test, kms=kms, column_types={"id": pa.int64(), **dict.fromkeys(names, pa.float64()),
                                                               "label": pa.float64()})
    features = np.column_stack([table.column(name).to_numpy() for name in names])
    scores = booster.inplace_predict(features).astype(np.float64)
    if args.task == CLASSIFICATION and scores.ndim == 2:
        scores = scores[:, 1]
    write_csv_table(pa.table({"id": table.column("id"), "label": table.column("label"), "score": scores}),
                    args.predictions, kms=kms, key_id=args.outputKey, overwrite=True)
    print(f"wrote {table.num_rows:,} encrypted predictions: {args.predictions}", flush=True)
    print(metric_line(args.task, table.column("label").to_numpy(), scores), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.split("\n\n")[0], argv,
                      extra=[("--num-workers", {"type": int, "default": 2, "help": "xgboost.spark barrier tasks"})])
    from ppml.tee.keys import kms_for

    kms = kms_for(args.kms)
    (train if args.stage == "train" else score)(args, kms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
