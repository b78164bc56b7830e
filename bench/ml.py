"""Spark ML training on encrypted input vs the same training on plaintext input, and encrypted
model save+load vs plaintext save+load of the same models.

    .venv/bin/python bench/ml.py [--rows 1000000] [--repeat 3] [--parts scan,lr,xgboost,io] [--no-parquet]

Data: ``ppml.datagen.generate_tabular`` (classification, 20 standard-normal features, seed 12),
--rows training rows and 20,000 held-out rows after them, cached under bench/.data/. The training
rows are written as plaintext CSV, as one ppml envelope of that CSV (1 MiB segments, a primary key
of the benches' local key store, as bench/simple_query.py does) and as plaintext and PME Parquet
(PyArrow, 8 row groups, every column encrypted, encrypted footer; bench/pme.py's way). ONE Spark
session (local[2], ppml's performance_conf and native_session_conf, a key agent in this process
with no TEE: what ``ppml submit --tee none`` gives a job) runs everything.

Measured, per model: ``pipeline.fit(df)`` on a DataFrame read afresh for every fit and never cached
by the bench, so reading, decrypting and parsing the input are inside the time, as often as the
trainer reads it (counted from the Spark jobs of a fit, Spark 4.3, xgboost 3.2):

* lr: VectorAssembler -> StandardScaler -> LogisticRegression(maxIter=20). The fit reads its input
  three times: StandardScaler's summary, LogisticRegression's summary, and the standardized blocks
  LogisticRegression caches (MEMORY_AND_DISK) for its iterations, which then run on the cache.
* xgboost: SparkXGBClassifier(num_workers=2, n_estimators=50, max_depth=6, the 20 columns as
  ``features_col``). The fit reads its input twice: a distinct count of the labels (which through
  the ppml source converts every column, as Spark 4.3 gives Python sources no column pruning),
  then the training job, which hands each of the input's 2 partitions to one XGBoost worker (no
  repartition: every input here has 2) and collects the booster.

Rounds alternate between the inputs after one warm-up fit each (bench/pme.py's rounds); best of
--repeat. The baseline is ``spark.read.csv`` (header, the same explicit schema) on the plaintext
CSV; the target is ppml's Python source, ``format("ppml").option("format", "csv")`` with that
schema, on the envelope: <= 1.05x the baseline for each model (PASS/BELOW; the exit status is 0
either way). Reported beside them: ``spark.read.parquet`` on the PME file (parquet-mr's PME reader
with ppml's JVM KmsClient) against ``spark.read.parquet`` on the plaintext Parquet. Every fitted
model is scored on the held-out rows (AUC). The models trained on the encrypted inputs must be
their baseline's: LogisticRegression's coefficients within 1e-6, XGBoost's AUC within 0.005 (see
AUC_TOLERANCE), else the run says WRONG MODEL and exits 1.

scan (reported): one full read of every column (a sum of each) through each input, what a fit pays
per pass over it; the sums must agree. io (reported, no target): ``ppml.ml.save`` + ``ppml.ml.load``
(the local key store) of the fitted PipelineModel and SparkXGBClassifierModel vs
``model.write().overwrite().save(path)`` + ``Model.load(path)`` in plaintext, best of --repeat
alternating after a warm-up; each loaded model must predict as the original on 1,000 held-out rows.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TARGET = 1.05
SEED = 12
HOLDOUT = 20_000
ROW_GROUPS = 8  # per Parquet file: Spark's 2 splits of it get 4 each, so no XGBoost worker is idle
FEATURES = [f"f{i}" for i in range(20)]
SCHEMA = ", ".join(f"{name} DOUBLE" for name in [*FEATURES, "label"])
# XGBoost's 2 workers each train on one input partition, and the CSV readers cut the file at
# slightly different rows (Spark at a byte offset, ppml at a segment boundary): the models then
# differ a little (with one worker, every input gives the identical model: measured).
AUC_TOLERANCE = {"lr": 1e-4, "xgboost": 0.005}
COEFFICIENT_TOLERANCE = 1e-6
PARTS = ("scan", "lr", "xgboost", "io")

PLAIN_CSV = "plaintext CSV, spark.read.csv"
PPML_CSV = "envelope CSV, format(ppml)"
PLAIN_PARQUET = "plaintext Parquet, spark.read.parquet"
PME_PARQUET = "PME Parquet, spark.read.parquet"
BASELINES = {PLAIN_CSV: PLAIN_CSV, PPML_CSV: PLAIN_CSV, PLAIN_PARQUET: PLAIN_PARQUET, PME_PARQUET: PLAIN_PARQUET}


@dataclass
class Data:
    kms_uri: str
    key_id: str
    store: Any
    csv: Path  # the training rows
    envelope: Path  # the same CSV as one ppml envelope
    plain: Path  # the same rows, plaintext Parquet
    pme: Path  # and PME Parquet
    holdout: Path  # the held-out rows, plaintext CSV
    oracle: float  # the AUC of the true probabilities over all generated rows


def split_rows(source: Path, rows: int, first: Path, rest: Path) -> None:
    """Copy the header and the first ``rows`` lines of the CSV ``source`` to ``first``, and the
    header and the remaining lines to ``rest``."""
    with open(source, "rb") as lines:
        header = lines.readline()
        with open(first, "wb") as out:
            out.write(header)
            out.writelines(itertools.islice(lines, rows))
        with open(rest, "wb") as out:
            out.write(header)
            shutil.copyfileobj(lines, out)


def prepare(data: Path, rows: int) -> Data:
    """``rows`` training rows and the held-out rows (made once under ``data``, then reused) in
    every form the benchmark reads."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from simple_query import bench_key  # bench/ is on sys.path: this script's directory

    from ppml.core.envelope import encrypt_file
    from ppml.datagen import generate_tabular
    from ppml.tabular.parquet import write_encrypted_table

    store, key_id = bench_key(data)
    stem = data / f"tabular-{rows}"
    csv, holdout, oracle = stem.with_suffix(".csv"), stem.with_suffix(".holdout.csv"), stem.with_suffix(".oracle")
    if not (csv.exists() and holdout.exists() and oracle.exists()):
        print(f"generating {rows:,} + {HOLDOUT:,} rows ...", flush=True)
        everything = stem.with_suffix(".all.csv")
        summary = generate_tabular(everything, rows + HOLDOUT, features=len(FEATURES), seed=SEED)
        split_rows(everything, rows, csv, holdout)
        everything.unlink()
        for stale in (csv.with_suffix(".csv.ppml"), stem.with_suffix(".parquet"), stem.with_suffix(".pme.parquet")):
            stale.unlink(missing_ok=True)
        oracle.write_text(repr(summary.oracle))  # last: marks the CSV files complete
    envelope = csv.with_suffix(".csv.ppml")
    if not envelope.exists():
        encrypt_file(csv, envelope, kms=store, key_id=key_id)
    plain, pme = stem.with_suffix(".parquet"), stem.with_suffix(".pme.parquet")
    if not plain.exists() or not pme.exists():
        types = {name: pa.float64() for name in [*FEATURES, "label"]}
        table = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(column_types=types))
        row_group = -(-rows // ROW_GROUPS)
        pq.write_table(table, plain, row_group_size=row_group)
        write_encrypted_table(table, pme, kms=store, footer_key=key_id, row_group_size=row_group)
    return Data(kms_uri=f"local:{data / 'keys'}", key_id=key_id, store=store, csv=csv, envelope=envelope,
                plain=plain, pme=pme, holdout=holdout, oracle=float(oracle.read_text()))


def readers(spark: Any, data: Data, parquet: bool) -> dict[str, Callable[[], Any]]:
    """A fresh, uncached DataFrame of the training rows per input, by name."""
    found: dict[str, Callable[[], Any]] = {
        PLAIN_CSV: lambda: spark.read.schema(SCHEMA).option("header", "true").csv(str(data.csv)),
        PPML_CSV: lambda: (spark.read.format("ppml").schema(SCHEMA).option("format", "csv")
                           .option("header", "true").option("kms", data.kms_uri).load(str(data.envelope))),
    }
    if parquet:
        found[PLAIN_PARQUET] = lambda: spark.read.parquet(str(data.plain))
        found[PME_PARQUET] = lambda: spark.read.parquet(str(data.pme))
    return found


def lr_pipeline() -> Any:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    return Pipeline(stages=[VectorAssembler(inputCols=FEATURES, outputCol="raw"),
                            StandardScaler(inputCol="raw", outputCol="features"),
                            LogisticRegression(maxIter=20)])


def xgboost_classifier() -> Any:
    from xgboost.spark import SparkXGBClassifier

    return SparkXGBClassifier(features_col=FEATURES, label_col="label", num_workers=2, n_estimators=50,
                              max_depth=6, verbose=False, verbosity=0)


ESTIMATORS: dict[str, Callable[[], Any]] = {"lr": lr_pipeline, "xgboost": xgboost_classifier}


def summing(read: Callable[[], Any], sums: list[Any]) -> Callable[[], tuple[float, ...]]:
    """A full read of a fresh DataFrame from ``read``: the ``sums`` of its columns."""
    return lambda: tuple(read().agg(*sums).first())


def fitting(estimator: Any, read: Callable[[], Any]) -> Callable[[], Any]:
    """``estimator`` fitted on a fresh DataFrame from ``read``."""
    return lambda: estimator.fit(read())


def held_out_auc(model: Any, frame: Any) -> float:
    """The AUC of ``model``'s probability of class 1 on ``frame``."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from ppml.datagen import ranking_auc

    scored = model.transform(frame).select(vector_to_array(F.col("probability"))[1].alias("p"), "label").collect()
    return ranking_auc(np.array([r.label for r in scored]), np.array([r.p for r in scored]))


def lr_coefficients(pipeline_model: Any) -> np.ndarray:
    """The fitted LogisticRegression's intercept and coefficients (in the scaled features' space)."""
    lr = pipeline_model.stages[-1]
    return np.array([lr.intercept, *lr.coefficients.toArray()])


def disagreement(name: str, model: Any, baseline: Any, auc: float, baseline_auc: float) -> str | None:
    """Why ``model`` is not the same training as ``baseline``, or None."""
    if abs(auc - baseline_auc) > AUC_TOLERANCE[name]:
        return f"held-out AUC {auc:.6f} vs {baseline_auc:.6f}"
    if name == "lr":
        difference = float(np.max(np.abs(lr_coefficients(model) - lr_coefficients(baseline))))
        if difference > COEFFICIENT_TOLERANCE:
            return f"LogisticRegression coefficients differ by up to {difference:.3g}"
    return None


def predictions(model: Any, frame: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in model.transform(frame).select("prediction", "probability").collect()]


def save_load_actions(model: Any, work: Path, data: Data) -> dict[str, Callable[[], Any]]:
    """Encrypted and plaintext save+load of ``model`` into ``work``, each giving the loaded model."""
    import ppml.ml

    def encrypted() -> Any:
        ppml.ml.save(model, work / "encrypted", kms=data.store, key_id=data.key_id, overwrite=True)
        return ppml.ml.load(work / "encrypted", kms=data.store)

    def plaintext() -> Any:
        model.write().overwrite().save(str(work / "plaintext"))
        return type(model).load(str(work / "plaintext"))

    return {"plaintext, write().save + load": plaintext, "encrypted, ppml.ml.save + load": encrypted}


def main() -> int:
    from pme import best_interleaved  # bench/ is on sys.path: this script's directory
    from simple_query import spark_bench_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    parser.add_argument("--no-parquet", dest="parquet", action="store_false",
                        help="leave out the plaintext and PME Parquet inputs")
    parser.add_argument("--driver-memory", default="3g")
    args = spark_bench_arguments(__doc__, repeat=3, rows=1_000_000, parser=parser)
    parts = [part for part in args.parts.split(",") if part]
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(unknown)}; choose among {','.join(PARTS)}")
    data = prepare(args.data, args.rows)
    logging.getLogger("XGBoost-PySpark").setLevel(logging.WARNING)  # its workers take the driver's level

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from ppml.kms.registry import open_kms
    from ppml.spark.jvm import native_session_conf
    from ppml.spark.session import performance_conf
    from ppml.spark.source import register
    from ppml.tee.agent import AGENT_ENV, KeyAgent

    agent = KeyAgent(open_kms, tee="none").start()  # the JVM's keys, as under ppml submit --tee none
    builder = (SparkSession.builder.master("local[2]").appName("bench-ml").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false").config("spark.driver.memory", args.driver_memory))
    for name, value in {**performance_conf(), **native_session_conf(data.kms_uri)}.items():
        builder = builder.config(name, value)
    os.environ[AGENT_ENV] = str(agent.path)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    register(spark)
    inputs = readers(spark, data, args.parquet)
    holdout = spark.read.schema(SCHEMA).option("header", "true").csv(str(data.holdout)).cache()
    work = Path(tempfile.mkdtemp(prefix="ppml-bench-ml-"))
    status = 0
    try:
        partitions = {name: read().rdd.getNumPartitions() for name, read in inputs.items()}
        print(f"\ninputs: {args.rows:,} rows x {len(FEATURES)} features ({data.csv.stat().st_size / 2**20:.0f} MiB "
              f"CSV), partitions: " + ", ".join(f"{name} {count}" for name, count in partitions.items()))
        print(f"the true probabilities' AUC (the best any model can do): {data.oracle:.4f}", flush=True)
        print(f"\n{'part':<11}{'input':<38}{'seconds':>9}{'ratio':>7}{'AUC':>9}")

        def row(part: str, name: str, seconds: float, base: float, auc: str = "") -> None:
            verdict = ""
            if name == PPML_CSV and part in ESTIMATORS:
                verdict = f"  target <= {TARGET}: {'PASS' if seconds / base <= TARGET else 'BELOW'}"
            print(f"{part:<11}{name:<38}{seconds:>9.2f}{seconds / base:>7.2f}{auc:>9}{verdict}", flush=True)

        if "scan" in parts:
            sums = [F.sum(column) for column in [*FEATURES, "label"]]
            timed = best_interleaved(args.repeat, {name: summing(read, sums) for name, read in inputs.items()})
            for name, (seconds, result) in timed.items():
                row("scan", name, seconds, timed[BASELINES[name]][0])
                if not np.allclose(result, timed[BASELINES[name]][1], rtol=1e-9, atol=1e-6):
                    print(f"  WRONG RESULT: column sums {result} != {timed[BASELINES[name]][1]}")
                    status = 1

        fitted: dict[str, Any] = {}
        for part in (p for p in ESTIMATORS if p in parts):
            estimator = ESTIMATORS[part]()
            timed = best_interleaved(args.repeat, {name: fitting(estimator, read) for name, read in inputs.items()})
            aucs = {name: held_out_auc(model, holdout) for name, (_, model) in timed.items()}
            for name, (seconds, model) in timed.items():
                baseline = BASELINES[name]
                row(part, name, seconds, timed[baseline][0], f"{aucs[name]:.4f}")
                if reason := disagreement(part, model, timed[baseline][1], aucs[name], aucs[baseline]):
                    print(f"  WRONG MODEL: not the baseline's training: {reason}")
                    status = 1
            fitted[part] = timed[PLAIN_CSV][1]

        if "io" in parts:
            sample = holdout.limit(1000).cache()
            for part, make in ESTIMATORS.items():
                model = fitted.get(part) or make().fit(inputs[PLAIN_CSV]())
                expected = predictions(model, sample)
                timed = best_interleaved(args.repeat, save_load_actions(model, work, data))
                base = timed["plaintext, write().save + load"][0]
                for name, (seconds, loaded) in timed.items():
                    row(f"io {part}", name, seconds, base)
                    if predictions(loaded, sample) != expected:
                        print("  WRONG MODEL: the loaded model predicts otherwise than the saved one")
                        status = 1
        print(f"(local[2], best of {args.repeat}, load average {os.getloadavg()[0]:.1f}; ratio: to {PLAIN_CSV}"
              + (f" for the CSV inputs, to {PLAIN_PARQUET} for the Parquet ones" if args.parquet else "")
              + "; io: to the plaintext save+load)")
        return status
    finally:
        spark.stop()
        agent.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
