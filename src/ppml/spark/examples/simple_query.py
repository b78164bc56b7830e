"""SimpleQuery: the developers aged 20 to 40 in an encrypted people.csv (BigDL PPML's example).

Arguments keep BigDL's names (``--inputPath --outputPath --inputEncryptModeValue
--outputEncryptModeValue --inputPartitionNum --outputPartitionNum``) plus ppml's KMS options.
Encrypt modes: ``plain_text``; ``ppml`` (ppml's envelope: AES-256-GCM streaming, one data key per
file); ``AES/CBC/PKCS5Padding`` (BigDL's legacy files, input only, with ``--bigdlPrimaryKey``).

    ppml submit --tee simulated … examples/simple_query.py --inputPath people.csv.ppml \\
        --inputEncryptModeValue ppml --outputPath out --outputEncryptModeValue ppml \\
        --kms ppml+https://127.0.0.1:9000?ca=…&credentials=… --primaryKey KEY_ID
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

PLAIN, ENVELOPE, LEGACY = "plain_text", "ppml", "AES/CBC/PKCS5Padding"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="simple_query", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputPath", required=True)
    parser.add_argument("--outputPath", required=True)
    parser.add_argument("--inputEncryptModeValue", default=ENVELOPE, choices=[PLAIN, ENVELOPE, LEGACY])
    parser.add_argument("--outputEncryptModeValue", default=ENVELOPE, choices=[PLAIN, ENVELOPE])
    parser.add_argument("--inputPartitionNum", type=int, default=0, help="0: one per split (default)")
    parser.add_argument("--outputPartitionNum", type=int, default=1)
    parser.add_argument("--kms", help="KMS URI (local:DIR, ppml+https://…, ehsm+https://…)")
    parser.add_argument("--primaryKey", help="primary key id for the output's data keys")
    parser.add_argument("--bigdlPrimaryKey", help="BigDL plaintext primary key file (legacy input)")
    parser.add_argument("--master", help="Spark master when run without spark-submit")
    args = parser.parse_args(argv)
    if ENVELOPE in (args.inputEncryptModeValue, args.outputEncryptModeValue) and not args.kms:
        parser.error("the ppml mode needs --kms")
    if args.outputEncryptModeValue == ENVELOPE and not args.primaryKey:
        parser.error("encrypted output needs --primaryKey KEY_ID")
    if args.inputEncryptModeValue == LEGACY and not args.bigdlPrimaryKey:
        parser.error("AES/CBC/PKCS5Padding input needs --bigdlPrimaryKey FILE")
    return args


SCHEMA = "name STRING, age INT, job STRING"


def _source_options(args: argparse.Namespace) -> dict[str, str]:
    options = {"format": "csv", "header": "true", "kms": args.kms or ""}
    if args.inputEncryptModeValue == LEGACY:
        options.update(mode=LEGACY, bigdlPrimaryKey=args.bigdlPrimaryKey)
    return options


def read_people(spark: Any, args: argparse.Namespace, *, pushdown: bool = False) -> Any:
    """A fresh DataFrame over the input. With ``pushdown`` the ppml source filters rows itself
    (Spark 4.3 reuses a planned reader across scans of one DataFrame, so a DataFrame that had a
    filter pushed must not be scanned again without it: each query gets its own DataFrame)."""
    if args.inputEncryptModeValue == PLAIN:
        return spark.read.schema(SCHEMA).option("header", "true").csv(args.inputPath)
    reader = spark.read.format("ppml").schema(SCHEMA).option("filterPushdown", "true" if pushdown else "false")
    for name, value in _source_options(args).items():
        reader = reader.option(name, value)
    return reader.load(args.inputPath)


def count_people(spark: Any, args: argparse.Namespace) -> int:
    """The row count. Spark's csv reader answers ``count()`` with every column pruned; for the
    ppml source Spark 4.3 prunes nothing, so the source counts its records itself (rowCount)."""
    if args.inputEncryptModeValue == PLAIN:
        return int(read_people(spark, args).count())
    from ppml.spark.source import count_rows

    return count_rows(spark, args.inputPath, **_source_options(args))


def write_result(df: Any, args: argparse.Namespace) -> None:
    df = df.repartition(args.outputPartitionNum) if args.outputPartitionNum > 0 else df
    if args.outputEncryptModeValue == PLAIN:
        df.write.mode("overwrite").option("header", "true").csv(args.outputPath)
        return
    (df.write.format("ppml").mode("overwrite").option("format", "csv").option("header", "true")
     .option("kms", args.kms).option("key", args.primaryKey).save(args.outputPath))


def run(spark: Any, args: argparse.Namespace) -> int:
    from pyspark.sql import functions as F

    print(f"Num of rows in people is {count_people(spark, args)}", flush=True)
    developers = read_people(spark, args, pushdown=args.inputPartitionNum <= 0)
    if args.inputPartitionNum > 0:
        developers = developers.repartition(args.inputPartitionNum)
    developers = developers.filter((F.col("job") == "Developer") & (F.col("age") >= 20) & (F.col("age") <= 40))
    developers = developers.cache()
    print(f"Num of Developer age between 20,40 is {developers.count()}", flush=True)
    write_result(developers, args)
    developers.unpersist()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from ppml.spark.session import secure_session

    spark = secure_session("SimpleQuery", master=args.master)
    try:
        return run(spark, args)
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
