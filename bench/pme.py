"""PME Parquet through Spark's own reader (ppml's JVM KmsClient) vs ``spark.read.parquet`` on the
same rows in plaintext.

    .venv/bin/python bench/pme.py [--rows 8000000] [--repeat 3]

People data (``ppml.datagen``, cached under bench/.data/ with bench/simple_query.py's files) is
written by PyArrow twice with the same layout (one file, 1 Mi-row row groups, Snappy): in plaintext,
and as PME with every column encrypted under one primary key of a local key store (ppml's PyArrow
``KmsClient``, double wrapping, encrypted footer). One Spark session (local[2]) with
``native_session_conf`` and a key agent in this process (app credentials, no TEE: what ``ppml
submit --tee none`` gives a job) times, best of --repeat rounds that alternate the readers, after a warm-up:

* filtered count: the developers aged 20-40 (SimpleQuery's filter);
* group-by: rows and mean age per job.

Each query runs through ``spark.read.parquet`` on the plaintext (the baseline), through
``spark.read.parquet`` on the PME file (the native path; target <= 1.1x the baseline, PASS/BELOW) and
through ppml's Python source (``format("ppml").option("format", "parquet")``, reported). Results
must agree across the three.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.1
ROW_GROUP = 1 << 20


@dataclass
class Data:
    kms_uri: str
    key_id: str
    store: Any
    csv: Path  # people.csv
    developers: int  # SimpleQuery's answer on it
    plain: Path  # the same rows, plaintext Parquet
    pme: Path  # and PME Parquet
    envelope: Path  # people.csv as one ppml envelope


def prepare(data: Path, rows: int) -> Data:
    """``rows`` people as CSV and as plaintext and PME Parquet copies (made once under ``data``,
    then reused; bench/simple_query.py reads the same files)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from simple_query import people_data  # bench/ is on sys.path: this script's directory

    from ppml.tabular.parquet import write_encrypted_table

    store, key_id, csv, developers, envelope = people_data(data, rows)
    plain, pme = csv.with_suffix(".parquet"), csv.with_suffix(".pme.parquet")
    if not plain.exists() or not pme.exists():
        table = pacsv.read_csv(csv)
        pq.write_table(table, plain, row_group_size=ROW_GROUP)
        write_encrypted_table(table, pme, kms=store, footer_key=key_id, row_group_size=ROW_GROUP)
    return Data(kms_uri=f"local:{data / 'keys'}", key_id=key_id, store=store, csv=csv,
                developers=developers, plain=plain, pme=pme, envelope=envelope)


def best_interleaved(repeat: int, actions: dict[str, Callable[[], Any]]) -> dict[str, tuple[float, Any]]:
    """Each action's fastest round; rounds alternate between the actions (after one warm-up
    each: JIT, KEK caches, page cache), so a machine whose speed drifts is compared with itself."""
    for action in actions.values():
        action()
    rounds: dict[str, list[tuple[float, Any]]] = {name: [] for name in actions}
    for _ in range(repeat):
        for name, action in actions.items():
            started = time.perf_counter()
            result = action()
            rounds[name].append((time.perf_counter() - started, result))
    return {name: min(timed, key=lambda r: r[0]) for name, timed in rounds.items()}


def main() -> int:
    from simple_query import spark_bench_arguments  # bench/ is on sys.path

    args = spark_bench_arguments(__doc__, repeat=3)
    data = prepare(args.data, args.rows)

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from ppml.kms.registry import open_kms
    from ppml.spark.jvm import native_session_conf
    from ppml.spark.source import register
    from ppml.tee.agent import AGENT_ENV, KeyAgent

    agent = KeyAgent(open_kms, tee="none").start()
    builder = (SparkSession.builder.master("local[2]").appName("bench-pme").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false").config("spark.sql.shuffle.partitions", "4"))
    for name, value in native_session_conf(data.kms_uri).items():
        builder = builder.config(name, value)
    os.environ[AGENT_ENV] = str(agent.path)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    register(spark)
    developers = (F.col("job") == "Developer") & (F.col("age") >= 20) & (F.col("age") <= 40)

    readers: dict[str, Callable[[], Any]] = {
        "plaintext, spark.read.parquet": lambda: spark.read.parquet(str(data.plain)),
        "PME, spark.read.parquet (native)": lambda: spark.read.parquet(str(data.pme)),
        "PME, format(ppml) (Python source)": lambda: (
            spark.read.format("ppml").option("format", "parquet").option("kms", data.kms_uri).load(str(data.pme))),
    }
    queries: dict[str, Callable[[Any], Any]] = {
        "filtered count": lambda df: df.filter(developers).count(),
        "group-by": lambda df: sorted((r[0], r[1], round(r[2], 6)) for r in
                                      df.groupBy("job").agg(F.count("*"), F.avg("age")).collect()),
    }
    try:
        results: dict[tuple[str, str], tuple[float, Any]] = {}
        for query, run in queries.items():
            timed = best_interleaved(args.repeat, {reader: (lambda run=run, read=read: run(read()))
                                                   for reader, read in readers.items()})
            results.update({(query, reader): value for reader, value in timed.items()})
        print(f"\nPME Parquet vs plaintext, {args.rows:,} rows, local[2], one file of "
              f"{ROW_GROUP:,}-row groups, best of {args.repeat}  (load {os.getloadavg()[0]:.1f})")
        print(f"{'query':<16}{'reader':<36}{'seconds':>9}{'ratio':>8}")
        status = 0
        for query in queries:
            base_seconds, base_result = results[(query, "plaintext, spark.read.parquet")]
            for reader in readers:
                seconds, result = results[(query, reader)]
                verdict = ""
                if reader.endswith("(native)"):
                    verdict = f"  target <= {TARGET}: {'PASS' if seconds / base_seconds <= TARGET else 'BELOW'}"
                print(f"{query:<16}{reader:<36}{seconds:>9.2f}{seconds / base_seconds:>8.2f}{verdict}")
                if result != base_result:
                    print(f"  WRONG RESULT: {result!r} != {base_result!r}")
                    status = 1
        return status
    finally:
        spark.stop()
        agent.stop()


if __name__ == "__main__":
    sys.exit(main())
