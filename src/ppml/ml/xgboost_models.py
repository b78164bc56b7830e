"""XGBoost models in XGBoost's own UBJSON format: ``Booster`` and the scikit-learn API
(``XGBClassifier``, ``XGBRegressor``, ``XGBRanker``…). ``xgboost.spark`` models are Spark ML
models (:mod:`ppml.ml.spark_ml`).

Files: ``model.ubj`` (``Booster.save_raw("ubj")``, loaded with ``Booster(model_file=bytearray)``);
for the scikit-learn API also ``params.json`` (``get_params()``, which must be JSON: a callable
parameter such as a custom objective cannot be stored), loaded as ``cls(**params)`` then
``load_model(bytearray)``, which is what ``XGBModel.load_model`` does with a file.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from ppml.errors import UsageError
from ppml.ml.family import LoadOptions, ModelFiles, qualified_name, resolve_class

__all__ = ["XGBoostFamily"]

MODEL_FILE: Final = "model.ubj"
PARAMS_FILE: Final = "params.json"


def _not_json(value: object) -> Any:
    raise TypeError(type(value).__name__)


class XGBoostFamily:
    """``xgboost.Booster`` and ``xgboost.XGBModel`` subclasses."""

    name: Final = "xgboost"

    def handles(self, model_type: type) -> bool:
        xgboost = sys.modules.get("xgboost")  # not loaded: model_type cannot be an XGBoost model
        return xgboost is not None and issubclass(model_type, (xgboost.Booster, xgboost.XGBModel))

    def dump(self, model: Any, *, scratch_dir: Path | None) -> ModelFiles:
        import xgboost

        version = f"xgboost=={metadata.version('xgboost')}"
        if isinstance(model, xgboost.Booster):
            return ModelFiles(model_class=qualified_name(xgboost.Booster), library_version=version,
                              files={MODEL_FILE: bytes(model.save_raw("ubj"))})
        self._model_type(qualified_name(type(model)))
        try:
            params = json.dumps(model.get_params(), default=_not_json, sort_keys=True).encode()
        except TypeError as exc:
            name = type(model).__name__
            raise UsageError(f"a parameter of {name} is not JSON ({exc}): it cannot be stored") from None
        return ModelFiles(model_class=qualified_name(type(model)), library_version=version,
                          files={MODEL_FILE: bytes(model.get_booster().save_raw("ubj")), PARAMS_FILE: params})

    def restore(self, files: ModelFiles, options: LoadOptions) -> Any:
        import xgboost

        model_type = self._model_type(files.model_class)
        raw = bytearray(files.files[MODEL_FILE])
        if model_type is xgboost.Booster:
            return xgboost.Booster(model_file=raw)
        model = model_type(**json.loads(files.files[PARAMS_FILE]))
        model.load_model(raw)
        return model

    def load_plaintext(self, path: Path, model_type: type, options: LoadOptions) -> Any:
        import xgboost

        self._model_type(qualified_name(model_type))
        if model_type is xgboost.Booster:
            return xgboost.Booster(model_file=str(path))
        model = model_type()
        model.load_model(str(path))
        return model

    @staticmethod
    def _model_type(model_class: str) -> type:
        import xgboost

        if model_class == qualified_name(xgboost.Booster):
            return xgboost.Booster
        return resolve_class(model_class, modules=("xgboost",), base=xgboost.XGBModel)
