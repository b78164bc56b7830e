"""Spark's own CSV reader over ppml envelopes (the JVM codec) vs over the plaintext.

    .venv/bin/python bench/codec.py [--rows 8000000] [--repeat 3]

Uses the people.csv that bench/simple_query.py generates (cached under bench/.data/, made here if
missing) and the same rows as one ppml envelope (1 MiB segments, written by Python's encrypt_file).
The envelope splits on segment boundaries, so Spark cuts it into as many tasks as the plaintext.
In ONE session (local[2], ppml's session settings, the JVM library on the class path and a key
agent in this process, as under ``ppml submit --tee none``) it times, best of --repeat after a
warm-up, ``spark.read.csv(header, schema given)`` on each file for:

* ``count()``;
* a filtered count (SimpleQuery's developers aged 20-40);
* a group-by (rows and mean age per job).

Target: encrypted <= 1.15x plaintext for each (PASS/BELOW). A quick JCE throughput line (AES-GCM
segments through the codec's own classes) is printed for reference; compare with
``openssl speed -evp aes-256-gcm``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "name STRING, age INT, job STRING"
TARGET = 1.15


def best(repeat: int, action: Callable[[], object]) -> tuple[float, object]:
    rounds = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        rounds.append((time.perf_counter() - started, result))
    return min(rounds, key=lambda r: r[0])


def main() -> int:
    from simple_query import spark_bench_arguments  # bench/ is on sys.path

    args = spark_bench_arguments(__doc__, repeat=3)
    from simple_query import people_data  # bench/ is on sys.path: this script's directory

    from ppml.kms.registry import open_kms
    from ppml.spark.jvm import classpath_conf, library_jar
    from ppml.spark.launch import spark_home
    from ppml.tee.agent import AGENT_ENV, KeyAgent

    # the same files simple_query.py reads (its envelope is what it reads through format("ppml"))
    store, _, plain, expected, encrypted = people_data(args.data, args.rows)

    classpath = os.pathsep.join([str(library_jar()), str(spark_home() / "jars" / "*")])
    micro = subprocess.run(["java", "-cp", classpath, "org.ppml.envelope.Throughput"], capture_output=True,
                           text=True, check=False)
    print(micro.stdout.strip() or micro.stderr.strip())

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from ppml.spark.session import performance_conf, security_conf

    agent = KeyAgent(open_kms, tee="none").start()
    builder = (SparkSession.builder.master("local[2]").appName("bench-codec").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    for name, value in {**performance_conf(), **security_conf(), **classpath_conf()}.items():
        builder = builder.config(name, value)
    os.environ[AGENT_ENV] = str(agent.path)
    try:
        spark = builder.getOrCreate()
    finally:
        del os.environ[AGENT_ENV]
    spark.sparkContext.setLogLevel("ERROR")
    try:
        developers = (F.col("job") == "Developer") & F.col("age").between(20, 40)
        reader = spark.read.schema(SCHEMA).option("header", "true").option("ppml.kms.uri", store.uri)
        frames = {"plain": reader.csv(str(plain)), "ppml": reader.csv(str(encrypted))}
        queries: dict[str, Callable[[object], object]] = {
            "count()": lambda df: df.count(),  # type: ignore[attr-defined]
            "filtered count": lambda df: df.filter(developers).count(),  # type: ignore[attr-defined]
            "group-by": lambda df: sorted(tuple(r) for r in df.groupBy("job").agg(  # type: ignore[attr-defined]
                F.count("*"), F.avg("age")).collect()),
        }
        print(f"\nspark.read.csv, {args.rows:,} rows ({plain.stat().st_size / 2**20:.0f} MiB CSV, "
              f"{encrypted.stat().st_size / 2**20:.0f} MiB envelope), local[2], best of {args.repeat}; "
              f"tasks: plain {frames['plain'].rdd.getNumPartitions()}, "  # type: ignore[attr-defined]
              f"ppml {frames['ppml'].rdd.getNumPartitions()}")  # type: ignore[attr-defined]
        print(f"{'query':<18}{'plain s':>9}{'ppml s':>9}{'ratio':>8}")
        failed = False
        for name, query in queries.items():
            results = {}
            for which, df in frames.items():
                query(df)  # warm-up (JIT, page cache)
                results[which] = best(args.repeat, lambda: query(df))
            if results["plain"][1] != results["ppml"][1]:
                print(f"  WRONG RESULT for {name}: {results['plain'][1]!r} vs {results['ppml'][1]!r}")
                return 1
            ratio = results["ppml"][0] / results["plain"][0]
            verdict = "PASS" if ratio <= TARGET else "BELOW"
            print(f"{name:<18}{results['plain'][0]:>9.2f}{results['ppml'][0]:>9.2f}{ratio:>8.2f}  "
                  f"(target <= {TARGET}: {verdict})")
            failed |= verdict != "PASS"
        counts = (queries["count()"](frames["ppml"]), queries["filtered count"](frames["ppml"]))
        if counts != (args.rows, expected):
            print(f"  WRONG RESULT: expected {args.rows:,} rows and {expected:,} developers, got {counts}")
            return 1
        print("all targets met" if not failed else "some targets missed")
    finally:
        spark.stop()
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
