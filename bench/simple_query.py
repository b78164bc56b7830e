"""SimpleQuery on encrypted data vs Spark's own reader on the same data in plaintext.

    .venv/bin/python bench/simple_query.py [--rows 8000000] [--repeat 2]

Generates people.csv once (cached under bench/.data/), encrypts it with ppml, and writes the same
rows as plaintext Parquet and as PME-encrypted Parquet. Then, in ONE Spark session (local[2],
ppml's session settings: security_conf and performance_conf, which changes nothing for Spark's own
readers), it times each pipeline (best of --repeat):

* CSV: ``spark.read.csv`` on the plaintext vs ``spark.read.format("ppml")`` on the encrypted file;
  each pipeline counts the rows, counts the developers aged 20-40 and writes them out (plaintext
  CSV / ppml-encrypted CSV). Target: ppml <= 0.4x the plaintext time.
* Parquet: ``spark.read.parquet`` on the plaintext vs ``spark.read.parquet`` on the PME-encrypted
  file (Spark's own reader with ppml's JVM ``KmsClient``, keys through a key agent in this process:
  the user's path under ``ppml submit``), each computing the same two counts. Target: PME <= 2x
  (bench/pme.py holds the native path to 1.1x over a filtered count and a group-by).

The CSV pipelines are also timed phase by phase (row count, developer count, encrypted write). The
ppml row count is SimpleQuery's: ``count_rows`` (the source's ``rowCount`` mode, records counted
inside the source, csv fields tokenized but not converted), because Spark 4.3 gives Python sources
no column pruning or aggregate pushdown: ``count()`` would turn every record into a JVM row, while
``spark.read.csv(...).count()`` prunes every column. The floor printed next to it is what such a
``count()`` costs at least: counting as many rows from a Python source that does no work at all.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ppml.kms.local import LocalKeyStore

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "name STRING, age INT, job STRING"


PHASES = ("row count", "developer count", "write")


class Phases:
    """Wall time per named phase of the current round (a pipeline calls :meth:`time` per phase)."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}

    def time(self, name: str, action: Callable[[], object]) -> object:
        started = time.perf_counter()
        result = action()
        self.current[name] = time.perf_counter() - started
        return result


def best(repeat: int, action: Callable[[], tuple[int, int]],
         phases: Phases | None = None) -> tuple[float, tuple[int, int], dict[str, float]]:
    """The fastest of ``repeat`` rounds: its total, result and (when timed) its phases."""
    rounds = []
    for _ in range(repeat):
        if phases is not None:
            phases.current = {}
        started = time.perf_counter()
        result = action()
        rounds.append((time.perf_counter() - started, result, dict(phases.current) if phases else {}))
    return min(rounds, key=lambda r: r[0])


def register_floor_source(spark: object, rows: int) -> None:
    """``format("ppml-bench-floor")``: ``rows`` rows of nothing, in two partitions of 10,000-row
    empty Arrow batches, the least work a Python data source can do."""
    import pyarrow as pa
    from pyspark.sql.datasource import DataSource, DataSourceReader, InputPartition
    from pyspark.sql.types import StructType

    class FloorReader(DataSourceReader):
        def partitions(self) -> list[InputPartition]:
            return [InputPartition(rows // 2), InputPartition(rows - rows // 2)]

        def read(self, partition: InputPartition):  # type: ignore[no-untyped-def]
            left = partition.value
            while left:
                size = min(left, 10_000)
                yield pa.RecordBatch.from_struct_array(pa.StructArray.from_buffers(pa.struct([]), size, [None]))
                left -= size

    class FloorSource(DataSource):
        @classmethod
        def name(cls) -> str:
            return "ppml-bench-floor"

        def schema(self) -> StructType:
            return StructType()

        def reader(self, schema: object) -> FloorReader:
            return FloorReader()

    spark.dataSource.register(FloorSource)  # type: ignore[attr-defined]


def bench_key(data: Path) -> tuple[LocalKeyStore, str]:
    """The benchmarks' local key store under ``data`` and its "bench" primary key (made once)."""
    from ppml.kms.local import LocalKeyStore

    data.mkdir(parents=True, exist_ok=True)
    store = LocalKeyStore(data / "keys")
    key_id = next((k.key_id for k in store.list_keys() if k.description == "bench"), None) or \
        store.create_primary_key(description="bench").key_id
    return store, key_id


def people_data(data: Path, rows: int) -> tuple[LocalKeyStore, str, Path, int, Path]:
    """The benchmarks' people.csv under ``data`` (generated once, seed 42) and the same file as a
    ppml envelope (1 MiB segments) under the store's "bench" key: (store, key id, plaintext path,
    developers aged 20-40, envelope path)."""
    from ppml.core.envelope import encrypt_file
    from ppml.datagen import generate_people

    store, key_id = bench_key(data)
    plain = data / f"people-{rows}.csv"
    expected_file = plain.with_suffix(".expected")
    if not plain.exists() or not expected_file.exists():
        print(f"generating {rows:,} rows ...", flush=True)
        expected_file.write_text(str(generate_people(plain, rows, seed=42).developers_20_40))
    encrypted = plain.with_suffix(".csv.ppml")
    if not encrypted.exists():
        encrypt_file(plain, encrypted, kms=store, key_id=key_id)
    return store, key_id, plain, int(expected_file.read_text()), encrypted


def spark_bench_arguments(description: str | None, *, repeat: int, rows: int = 8_000_000,
                          parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The Spark benchmarks' common command line (rows, rounds, data directory), parsed, with the
    environment set for a local Spark that runs this interpreter's Python workers. ``parser`` is
    one holding a benchmark's own options, to which the common ones are added."""
    if parser is None:
        parser = argparse.ArgumentParser(description=description,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--data", type=Path, default=ROOT / "bench" / ".data")
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    return args


def main() -> int:
    args = spark_bench_arguments(__doc__, repeat=2)
    from pme import prepare

    prepared = prepare(args.data, args.rows)
    key_id, kms_uri = prepared.key_id, prepared.kms_uri
    plain, expected = prepared.csv, prepared.developers
    plain_parquet, pme_parquet = prepared.plain, prepared.pme
    encrypted = prepared.envelope

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from ppml.kms.registry import open_kms
    from ppml.spark.jvm import native_session_conf
    from ppml.spark.session import performance_conf, security_conf
    from ppml.spark.source import count_rows, register
    from ppml.tee.agent import AGENT_ENV, KeyAgent

    builder = (SparkSession.builder.master("local[2]").appName("bench-simple-query").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    for name, value in {**performance_conf(), **security_conf(), **native_session_conf(kms_uri)}.items():
        builder = builder.config(name, value)
    agent = KeyAgent(open_kms, tee="none").start()  # the JVM's keys, as under ppml submit --tee none
    os.environ[AGENT_ENV] = str(agent.path)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    register(spark)
    register_floor_source(spark, args.rows)
    developers = (F.col("job") == "Developer") & (F.col("age") >= 20) & (F.col("age") <= 40)
    work = Path(tempfile.mkdtemp(prefix="ppml-bench-sq-"))
    phases = Phases()
    try:
        def plain_csv() -> tuple[int, int]:
            df = spark.read.schema(SCHEMA).option("header", "true").csv(str(plain))
            rows = phases.time("row count", df.count)
            dev = df.filter(developers)
            count = phases.time("developer count", dev.count)
            phases.time("write", lambda: dev.write.mode("overwrite").csv(str(work / "plain-out")))
            return rows, count  # type: ignore[return-value]

        def ppml_read(pushdown: bool) -> object:
            return (spark.read.format("ppml").schema(SCHEMA).option("format", "csv").option("header", "true")
                    .option("kms", kms_uri).option("filterPushdown", str(pushdown).lower()).load(str(encrypted)))

        def ppml_csv() -> tuple[int, int]:
            # one DataFrame per query: the filtered one pushes its filter into the source
            # as examples/simple_query.py counts: inside the source (rowCount), see below
            rows = phases.time("row count", lambda: count_rows(spark, str(encrypted), format="csv", header="true",
                                                               kms=kms_uri))
            dev = ppml_read(True).filter(developers)  # type: ignore[attr-defined]
            count = phases.time("developer count", dev.count)
            phases.time("write", lambda: (dev.write.format("ppml").mode("overwrite").option("format", "csv")
                                          .option("kms", kms_uri).option("key", key_id).save(str(work / "ppml-out"))))
            return rows, count  # type: ignore[return-value]

        def floor_count() -> tuple[int, int]:
            return spark.read.format("ppml-bench-floor").load().count(), expected

        def plain_parquet_scan() -> tuple[int, int]:
            df = spark.read.parquet(str(plain_parquet))
            return df.count(), df.filter(developers).count()

        def pme_parquet_scan() -> tuple[int, int]:
            df = spark.read.parquet(str(pme_parquet))
            return df.count(), df.filter(developers).count()

        results = {}
        for name, action, timed in (("plain CSV, spark.read.csv", plain_csv, True),
                                    ("ppml CSV, encrypted", ppml_csv, True),
                                    ("plain Parquet, spark.read.parquet", plain_parquet_scan, False),
                                    ("PME Parquet, spark.read.parquet", pme_parquet_scan, False)):
            action()  # warm-up (JIT, caches, page cache)
            results[name] = best(args.repeat, action, phases if timed else None)
        floor_count()
        floor_seconds = best(args.repeat, floor_count)[0]
        print(f"\nSimpleQuery, {args.rows:,} rows ({plain.stat().st_size / 2**20:.0f} MiB CSV), local[2], "
              f"best of {args.repeat}")
        print(f"{'pipeline':<36}{'seconds':>9}{'rows':>12}{'developers':>12}")
        for name, (seconds, (rows, count), _) in results.items():
            print(f"{name:<36}{seconds:>9.2f}{rows:>12,}{count:>12,}")
            if (rows, count) != (args.rows, expected):
                print(f"  WRONG RESULT: expected {args.rows:,} rows and {expected:,} developers")
                return 1
        plain_phases, ppml_phases = results["plain CSV, spark.read.csv"][2], results["ppml CSV, encrypted"][2]
        print(f"\nCSV phases (of the best rounds){'plain':>14}{'ppml':>9}{'ratio':>8}")
        for phase in PHASES:
            print(f"  {phase:<30}{plain_phases[phase]:>12.2f}{ppml_phases[phase]:>9.2f}"
                  f"{ppml_phases[phase] / plain_phases[phase]:>8.2f}")
        print(f"  (ppml's row count is count_rows; count() of {args.rows:,} rows from a Python source doing "
              f"no work takes {floor_seconds:.2f} s, {floor_seconds / plain_phases['row count']:.2f}x plain's)")
        csv_ratio = results["ppml CSV, encrypted"][0] / results["plain CSV, spark.read.csv"][0]
        pq_ratio = results["PME Parquet, spark.read.parquet"][0] / results["plain Parquet, spark.read.parquet"][0]
        print(f"ratio ppml CSV / plain Spark CSV: {csv_ratio:.2f}  (target <= 0.40: "
              f"{'PASS' if csv_ratio <= 0.4 else 'BELOW'})")
        print(f"ratio PME Parquet / plain Spark Parquet: {pq_ratio:.2f}  (target <= 2.0: "
              f"{'PASS' if pq_ratio <= 2.0 else 'BELOW'})")
    finally:
        spark.stop()
        agent.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
