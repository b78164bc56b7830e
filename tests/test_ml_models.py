"""Encrypted model save and load (ppml.ml, issue 12 point 1): every family round-trips with
identical predictions, nothing of a model is on disk in the clear, and every altered, foreign,
plaintext or unfinished model is refused with ppml's error."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ppml.ml
from model_checks import assert_no_plaintext
from ppml.core.keys import GeneratedDataKey
from ppml.errors import (
    InputNotFound,
    InvalidCiphertext,
    NotAnEncryptedModel,
    OutputExists,
    UnsafeWarning,
    UsageError,
)
from ppml.kms.embedded import EmbeddedKms
from ppml.kms.local import LocalKeyStore
from ppml.kms.service import KmsService
from ppml.kms.types import RequestContext
from ppml.ml.format import MANIFEST_NAME

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["plantedfeature_alpha", "plantedfeature_beta", "plantedfeature_gamma", "plantedfeature_delta"]


def data(rows: int = 240) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(rows, len(FEATURES)))
    score = 1.5 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2]
    return x, (score > 0).astype(int), score + rng.normal(scale=0.1, size=rows)


# -- the families outside Spark --------------------------------------------------------------------


@dataclass
class Case:
    name: str
    train: Callable[[], Any]
    predict: Callable[[Any, np.ndarray], np.ndarray]
    marker: bytes  # a plaintext byte string the library's own format holds for this model


def xgb_booster() -> Any:
    import xgboost

    x, y, _ = data()
    train = xgboost.DMatrix(x, y, feature_names=FEATURES)
    return xgboost.train({"objective": "binary:logistic", "max_depth": 3}, train, num_boost_round=5)


def xgb_classifier() -> Any:
    import pandas as pd
    import xgboost

    x, y, _ = data()
    return xgboost.XGBClassifier(n_estimators=5, max_depth=3).fit(pd.DataFrame(x, columns=FEATURES), y)


def lgb_booster() -> Any:
    import lightgbm

    x, _, target = data()
    return lightgbm.train({"objective": "regression", "verbose": -1, "num_leaves": 7},
                          lightgbm.Dataset(x, target, feature_name=FEATURES), num_boost_round=5)


def lgb_regressor() -> Any:
    import lightgbm
    import pandas as pd

    x, _, target = data()
    model = lightgbm.LGBMRegressor(n_estimators=5, num_leaves=7, verbose=-1)
    return model.fit(pd.DataFrame(x, columns=FEATURES), target)


def sk_pipeline() -> Any:
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, _ = data()
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(pd.DataFrame(x, columns=FEATURES), y)


def frame(x: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame(x, columns=FEATURES)


def dmatrix_predict(model: Any, x: np.ndarray) -> np.ndarray:
    import xgboost

    return model.predict(xgboost.DMatrix(x, feature_names=FEATURES))


CASES = [
    Case("xgboost-booster", xgb_booster, dmatrix_predict, b"plantedfeature_alpha"),
    Case("xgboost-sklearn", xgb_classifier, lambda m, x: m.predict_proba(frame(x)), b"plantedfeature_alpha"),
    Case("lightgbm-booster", lgb_booster, lambda m, x: m.predict(x), b"tree\nversion"),
    Case("lightgbm-sklearn", lgb_regressor, lambda m, x: m.predict(frame(x)), b"plantedfeature_alpha"),
    Case("sklearn-skops", sk_pipeline, lambda m, x: m.predict_proba(frame(x)), b"plantedfeature_alpha"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_round_trip_predicts_the_same_and_leaves_no_plaintext(
    case: Case, tmp_path: Path, key_store: LocalKeyStore, key_id: str
) -> None:
    model = case.train()
    family = ppml.ml.family_for(type(model))
    dumped = family.dump(model, scratch_dir=None)
    assert any(case.marker in data for data in dumped.files.values()), "the scan would look for nothing"

    manifest = ppml.ml.save(model, tmp_path / "model", kms=key_store, key_id=key_id)
    assert manifest.family == family.name
    assert_no_plaintext(tmp_path / "model")
    loaded = ppml.ml.load(tmp_path / "model", kms=key_store)
    assert type(loaded) is type(model)
    x, _, _ = data(50)
    assert np.array_equal(case.predict(loaded, x), case.predict(model, x))


def test_loading_never_unpickles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key_store: LocalKeyStore,
                                 key_id: str) -> None:
    models = {case.name: case.train() for case in CASES}
    for name, model in models.items():
        ppml.ml.save(model, tmp_path / name, kms=key_store, key_id=key_id)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used on stored data")

    numpy_load = np.load

    def load_without_pickle(*args: Any, allow_pickle: bool = False, **kwargs: Any) -> Any:
        assert not allow_pickle, "np.load(allow_pickle=True) on stored data"
        return numpy_load(*args, allow_pickle=False, **kwargs)

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(np, "load", load_without_pickle)  # skops reads its arrays with np.load
    for name in models:
        assert ppml.ml.load(tmp_path / name, kms=key_store) is not None


def saved(tmp_path: Path, store: LocalKeyStore, key_id: str, name: str = "model") -> Path:
    """An XGBClassifier (two files: the booster and its parameters) saved encrypted."""
    ppml.ml.save(xgb_classifier(), tmp_path / name, kms=store, key_id=key_id)
    return tmp_path / name


def refused(path: Path, store: Any, error: type[Exception] = InvalidCiphertext) -> None:
    with pytest.raises(error):
        ppml.ml.load(path, kms=store)


def test_another_key_service_is_refused(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    model = saved(tmp_path, key_store, key_id)
    other = LocalKeyStore(tmp_path / "other-keys")
    other.create_primary_key()
    refused(model, other)


def test_another_apps_key_is_refused(tmp_path: Path) -> None:
    service, admin = KmsService.open(data_dir=tmp_path / "kms")
    assert admin is not None
    try:
        ctx = RequestContext(appid=admin.appid)
        app = EmbeddedKms.for_app(service, service.enroll(ctx))
        other_app = EmbeddedKms.for_app(service, service.enroll(ctx))
        key = app.create_primary_key()
        other_app.create_primary_key()
        ppml.ml.save(lgb_booster(), tmp_path / "model", kms=app, key_id=key.key_id)
        refused(tmp_path / "model", other_app)
        assert ppml.ml.load(tmp_path / "model", kms=app) is not None
    finally:
        service.close()


@pytest.mark.parametrize("where", [MANIFEST_NAME, "files/000000.ppml", "files/000001.ppml"])
@pytest.mark.parametrize("how", ["flip-first", "flip-last", "truncate", "extend"])
def test_altered_file_is_refused(where: str, how: str, tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    model = saved(tmp_path, key_store, key_id)
    target = model / where
    raw = bytearray(target.read_bytes())
    if how == "flip-first":
        raw[40] ^= 1  # inside the header: its length fields, key id or associated data
    elif how == "flip-last":
        raw[-1] ^= 1
    elif how == "truncate":
        raw = raw[: len(raw) - 17]
    else:
        raw += b"\0"
    target.write_bytes(bytes(raw))
    refused(model, key_store)


def test_files_swapped_within_a_model_are_refused(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    model = saved(tmp_path, key_store, key_id)
    first, second = model / "files/000000.ppml", model / "files/000001.ppml"
    first.rename(model / "swap")
    second.rename(first)
    (model / "swap").rename(second)
    refused(model, key_store)


@pytest.mark.parametrize("what", [MANIFEST_NAME, "files/000000.ppml"])
def test_a_file_from_another_model_is_refused(what: str, tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    model, other = saved(tmp_path, key_store, key_id, "a"), saved(tmp_path, key_store, key_id, "b")
    shutil.copyfile(other / what, model / what)
    refused(model, key_store)


@pytest.mark.parametrize("change", ["missing", "extra", "staging"])
def test_missing_or_extra_entries_are_refused(change: str, tmp_path: Path, key_store: LocalKeyStore,
                                              key_id: str) -> None:
    model = saved(tmp_path, key_store, key_id)
    if change == "missing":
        (model / "files/000001.ppml").unlink()
    elif change == "extra":
        shutil.copyfile(model / "files/000001.ppml", model / "files/000002.ppml")
    else:
        (model / "_temporary" / "0").mkdir(parents=True)
    with pytest.raises(InvalidCiphertext) as caught:
        ppml.ml.load(model, kms=key_store)
    assert caught.value.hint and ("missing" in caught.value.hint or "not part of the model" in caught.value.hint)


def test_plaintext_model_is_refused_unless_the_caller_says_so(tmp_path: Path, key_store: LocalKeyStore) -> None:
    import xgboost

    model = xgb_classifier()
    (tmp_path / "plain").mkdir()
    model.save_model(tmp_path / "plain" / "model.ubj")
    for path in (tmp_path / "plain", tmp_path / "plain" / "model.ubj"):
        with pytest.raises(NotAnEncryptedModel) as caught:
            ppml.ml.load(path, kms=key_store)
        assert "plaintext=True" in (caught.value.hint or "")
    with pytest.warns(UnsafeWarning):
        loaded = ppml.ml.load(tmp_path / "plain" / "model.ubj", plaintext=True, model_type=xgboost.XGBClassifier)
    x, _, _ = data(20)
    assert np.array_equal(loaded.predict_proba(frame(x)), model.predict_proba(frame(x)))
    with pytest.raises(InputNotFound):
        ppml.ml.load(tmp_path / "nothing", kms=key_store)


def test_plaintext_files_of_each_library_load_when_asked(tmp_path: Path) -> None:
    import lightgbm
    import skops.io
    from sklearn.pipeline import Pipeline

    booster, pipeline = lgb_booster(), sk_pipeline()
    booster.save_model(tmp_path / "model.txt")
    (tmp_path / "model.skops").write_bytes(skops.io.dumps(pipeline))
    x, _, _ = data(20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeWarning)
        loaded = ppml.ml.load(tmp_path / "model.txt", plaintext=True, model_type=lightgbm.Booster)
        assert np.array_equal(loaded.predict(x), booster.predict(x))
        loaded = ppml.ml.load(tmp_path / "model.skops", plaintext=True, model_type=Pipeline)
        assert np.array_equal(loaded.predict_proba(frame(x)), pipeline.predict_proba(frame(x)))
        with pytest.raises(UsageError, match="not a"):
            ppml.ml.load(tmp_path / "model.skops", plaintext=True, model_type=lightgbm.LGBMRegressor)


def test_untrusted_types_need_the_callers_review(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    import operator

    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, _, target = data()
    model = make_pipeline(FunctionTransformer(operator.neg), Ridge()).fit(x, target)
    ppml.ml.save(model, tmp_path / "model", kms=key_store, key_id=key_id)
    with pytest.raises(UsageError, match=r"_operator\.neg"):
        ppml.ml.load(tmp_path / "model", kms=key_store)
    loaded = ppml.ml.load(tmp_path / "model", kms=key_store, trusted_types=["_operator.neg"])
    assert np.array_equal(loaded.predict(x), model.predict(x))


def test_existing_model_is_kept_unless_overwrite(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    model = saved(tmp_path, key_store, key_id)
    with pytest.raises(OutputExists):
        ppml.ml.save(lgb_booster(), model, kms=key_store, key_id=key_id)
    ppml.ml.save(lgb_booster(), model, kms=key_store, key_id=key_id, overwrite=True)
    assert type(ppml.ml.load(model, kms=key_store)).__module__.startswith("lightgbm")


def test_unknown_model_type_is_a_usage_error(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    with pytest.raises(UsageError, match="no model family"):
        ppml.ml.save(object(), tmp_path / "model", kms=key_store, key_id=key_id)
    assert not (tmp_path / "model").exists()


class FailingKms:
    """A key service that fails (or, in a child process, hangs) at its ``after``-th data key."""

    def __init__(self, inner: LocalKeyStore, after: int, hang: bool = False) -> None:
        self.inner, self.after, self.hang, self.calls = inner, after, hang, 0

    @property
    def uri(self) -> str:
        return self.inner.uri

    def generate_data_key(self, key_id: str, *, associated_data: bytes | None = None) -> GeneratedDataKey:
        self.calls += 1
        if self.calls == self.after:
            if self.hang:
                print("saving", flush=True)
                signal.pause()
            raise OSError("key service died")
        return self.inner.generate_data_key(key_id, associated_data=associated_data)

    def unwrap_data_key(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.unwrap_data_key(*args, **kwargs)


def test_failed_save_leaves_nothing(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    with pytest.raises(OSError, match="died"):
        ppml.ml.save(xgb_classifier(), tmp_path / "model", kms=FailingKms(key_store, 3), key_id=key_id)
    assert list(tmp_path.iterdir()) == [tmp_path / "keys"]


def test_killed_save_is_never_loadable(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    """A save killed before its manifest: no model at the path, and its staging directory
    (which the atomic commit never renamed) has no manifest, so it does not load either."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from pathlib import Path
        import ppml.ml
        from ppml.kms.local import LocalKeyStore
        from test_ml_models import FailingKms, xgb_classifier
        kms = FailingKms(LocalKeyStore({str(tmp_path / "keys")!r}), after=3, hang=True)
        ppml.ml.save(xgb_classifier(), Path({str(tmp_path / "model")!r}), kms=kms, key_id={key_id!r})
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "saving\n"
    finally:
        child.kill()
        child.wait()
    assert not (tmp_path / "model").exists()
    (staging,) = tmp_path.glob(".model.*.partial")
    assert sorted(p.name for p in (staging / "files").iterdir()) == ["000000.ppml", "000001.ppml"]
    refused(tmp_path / "model", key_store, InputNotFound)
    refused(staging, key_store, NotAnEncryptedModel)


# -- Spark ML ---------------------------------------------------------------------------------------


def spark_frame(spark: Any) -> Any:
    x, y, target = data(120)
    rows = [(*map(float, features), int(label), float(t)) for features, label, t in zip(x, y, target, strict=True)]
    return spark.createDataFrame(rows, [*FEATURES, "label", "target"])


def spark_predictions(model: Any, frame: Any) -> list[Any]:
    return [tuple(r) for r in model.transform(frame).select("prediction").collect()]


@pytest.fixture(scope="module")
def spark_models(spark: Any) -> dict[str, Any]:
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.feature import StandardScaler, VectorAssembler
    from pyspark.ml.regression import GBTRegressor

    frame = spark_frame(spark)
    assembled = VectorAssembler(inputCols=FEATURES, outputCol="features").transform(frame)
    pipeline = Pipeline(stages=[
        VectorAssembler(inputCols=FEATURES, outputCol="raw"),
        StandardScaler(inputCol="raw", outputCol="features"),
        LogisticRegression(maxIter=10),
    ])
    return {
        "pipeline": (pipeline.fit(frame), frame),
        "gbt": (GBTRegressor(labelCol="target", maxIter=3, maxDepth=2).fit(assembled), assembled),
        "kmeans": (KMeans(k=3, seed=1, maxIter=5).fit(assembled), assembled),
    }


@pytest.mark.spark
def test_spark_ml_models_round_trip_without_plaintext(spark_models: dict[str, Any], tmp_path: Path,
                                                      key_store: LocalKeyStore, key_id: str) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name, (model, frame) in spark_models.items():
        ppml.ml.save(model, tmp_path / name, kms=key_store, key_id=key_id, scratch_dir=scratch)
        assert list(scratch.iterdir()) == [], "the plaintext scratch directory outlived the save"
        assert_no_plaintext(tmp_path / name)
        loaded = ppml.ml.load(tmp_path / name, kms=key_store, scratch_dir=scratch)
        assert list(scratch.iterdir()) == []
        assert type(loaded) is type(model)
        assert spark_predictions(loaded, frame) == spark_predictions(model, frame), name


@pytest.mark.spark
def test_spark_ml_writer_shape_and_refusals(spark_models: dict[str, Any], tmp_path: Path, key_store: LocalKeyStore,
                                           key_id: str) -> None:
    from pyspark.ml import PipelineModel

    from ppml.ml.spark import EncryptedMLReader, EncryptedMLWriter

    model, frame = spark_models["pipeline"]
    EncryptedMLWriter(model, kms=key_store, key_id=key_id).save(tmp_path / "model")
    EncryptedMLWriter(model, kms=key_store, key_id=key_id).overwrite().save(tmp_path / "model")
    loaded = EncryptedMLReader(kms=key_store).load(tmp_path / "model")
    assert spark_predictions(loaded, frame) == spark_predictions(model, frame)

    files = sorted((tmp_path / "model" / "files").iterdir())
    assert len(files) > 10  # metadata, Parquet data, checksums of every stage
    swapped = tmp_path / "swapped"
    shutil.copytree(tmp_path / "model", swapped)
    shutil.copyfile(files[3], swapped / "files" / files[4].name)
    shutil.copyfile(files[4], swapped / "files" / files[3].name)
    refused(swapped, key_store)

    model.write().save(str(tmp_path / "plain"))
    refused(tmp_path / "plain", key_store, NotAnEncryptedModel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeWarning)
        plain = ppml.ml.load(tmp_path / "plain", plaintext=True, model_type=PipelineModel)
    assert spark_predictions(plain, frame) == spark_predictions(model, frame)


@pytest.mark.spark
def test_xgboost_spark_model_round_trip(spark: Any, tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    from pyspark.ml.feature import VectorAssembler
    from xgboost.spark import SparkXGBRegressor

    frame = VectorAssembler(inputCols=FEATURES, outputCol="features").transform(spark_frame(spark))
    model = SparkXGBRegressor(label_col="target", num_workers=1, n_estimators=5, max_depth=3).fit(frame)
    ppml.ml.save(model, tmp_path / "model", kms=key_store, key_id=key_id)
    assert_no_plaintext(tmp_path / "model")
    loaded = ppml.ml.load(tmp_path / "model", kms=key_store)
    assert type(loaded) is type(model)
    assert spark_predictions(loaded, frame) == spark_predictions(model, frame)
