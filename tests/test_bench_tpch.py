"""bench/tpch.py's harness at a tiny scale factor: tpchgen-cli data, the plaintext and PME copies,
and two queries giving the same rows through ``spark.read.parquet`` and the ppml source."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ppml.kms.local import LocalKeyStore

BENCH = Path(__file__).resolve().parents[1] / "bench" / "tpch.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tpch", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.spark
@pytest.mark.slow
def test_plaintext_and_python_source_agree_on_tpch(spark: object, tmp_path: Path, key_store: LocalKeyStore,
                                                   key_id: str) -> None:
    tpch = load_bench()
    raw = tpch.generate(tmp_path / "sf", 0.01)
    plain, encrypted = tpch.prepare(raw, tmp_path / "sf", kms=key_store, key_id=key_id)
    assert tpch.layout(plain)["lineitem"] == (1, pq_row_groups(raw / "lineitem.parquet"))
    readers = {"plain": tpch.plain_reader(spark, plain),
               "python-source": tpch.python_source_reader(spark, encrypted, f"local:{tmp_path / 'keys'}")}
    frames = tpch.views(readers)
    assert tpch.schema_mismatches(frames) == []

    seconds, differing = tpch.run_all(spark, frames, tpch.query_texts([1, 13]), repeat=1, warm_up=False)

    assert differing == []
    assert set(seconds) == {"q01", "q13"}
    assert all(set(times) == {"plain", "python-source"} for times in seconds.values())


def pq_row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_row_groups
