"""bench/ml.py's harness at a tiny size: the data it trains on, and the same LogisticRegression
pipeline fitted through ``spark.read.csv`` and through the ppml source giving the same model, and
the check that tells another training apart."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def ml(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # as when the script runs: it imports its sibling benches
    spec = importlib.util.spec_from_file_location("bench_ml", BENCH / "ml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_data_is_the_generated_rows_split_and_encrypted(ml: ModuleType, tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from ppml.core.envelope import decrypt_file
    from ppml.datagen import generate_tabular
    from ppml.tabular.parquet import read_encrypted_table

    data = ml.prepare(tmp_path / "data", 1000)

    generate_tabular(tmp_path / "all.csv", 1000 + ml.HOLDOUT, features=len(ml.FEATURES), seed=ml.SEED)
    header, *lines = (tmp_path / "all.csv").read_bytes().splitlines(keepends=True)
    assert data.csv.read_bytes() == header + b"".join(lines[:1000])
    assert data.holdout.read_bytes() == header + b"".join(lines[1000:])
    decrypt_file(data.envelope, tmp_path / "decrypted.csv", kms=data.store)
    assert (tmp_path / "decrypted.csv").read_bytes() == data.csv.read_bytes()
    plain = pq.read_table(data.plain)
    assert plain.column_names == [*ml.FEATURES, "label"]
    assert pq.ParquetFile(data.plain).metadata.num_row_groups == ml.ROW_GROUPS
    assert read_encrypted_table(data.pme, kms=data.store).equals(plain)
    assert pacsv.read_csv(data.csv).cast(plain.schema).equals(plain)
    assert 0.5 < data.oracle < 1

    before = {path: path.stat().st_mtime_ns for path in data.csv.parent.iterdir()}
    ml.prepare(tmp_path / "data", 1000)
    assert {path: path.stat().st_mtime_ns for path in data.csv.parent.iterdir()} == before, "not reused"


@pytest.mark.spark
def test_encrypted_and_plaintext_csv_train_the_same_pipeline(ml: ModuleType, spark: object, tmp_path: Path) -> None:
    data = ml.prepare(tmp_path / "data", 2000)
    inputs = ml.readers(spark, data, parquet=False)
    holdout = spark.read.schema(ml.SCHEMA).option("header", "true").csv(str(data.holdout))  # type: ignore[attr-defined]

    plain = ml.lr_pipeline().fit(inputs[ml.PLAIN_CSV]())
    encrypted = ml.lr_pipeline().fit(inputs[ml.PPML_CSV]())

    auc = ml.held_out_auc(plain, holdout)
    assert auc > 0.85  # the features carry the signal: a model that learned nothing scores 0.5
    assert ml.disagreement("lr", encrypted, plain, ml.held_out_auc(encrypted, holdout), auc) is None


def test_models_disagree_on_coefficients_or_held_out_auc(ml: ModuleType) -> None:
    def pipeline(*weights: float) -> SimpleNamespace:
        lr = SimpleNamespace(intercept=weights[0], coefficients=SimpleNamespace(toArray=lambda: np.array(weights[1:])))
        return SimpleNamespace(stages=[lr])

    baseline = pipeline(0.5, 1.0, -2.0)
    assert ml.disagreement("lr", pipeline(0.5, 1.0, -2.0 + 1e-9), baseline, 0.9, 0.9) is None
    assert "coefficients" in ml.disagreement("lr", pipeline(0.5, 1.001, -2.0), baseline, 0.9, 0.9)
    assert "AUC" in ml.disagreement("lr", baseline, baseline, 0.9, 0.91)
    assert ml.disagreement("xgboost", object(), object(), 0.912, 0.915) is None  # the workers' row split
    assert "AUC" in ml.disagreement("xgboost", object(), object(), 0.90, 0.915)
