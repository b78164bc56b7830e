"""LightGBM models: ``Booster`` in LightGBM's own text format, its scikit-learn API through skops.

Files: ``model.txt`` (``Booster.model_to_string()``, loaded with ``Booster(model_str=…)``) for a
``Booster``; ``model.skops`` for ``LGBMClassifier``/``LGBMRegressor``/``LGBMRanker``, which have no
documented file format of their own besides pickle: skops rebuilds the estimator and its booster
(whose state is the same text format) trusting exactly the estimator's class, LightGBM's
``Booster`` and ``collections.OrderedDict``, plus what the caller adds.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from ppml.ml.family import LoadOptions, ModelFiles, qualified_name, resolve_class
from ppml.ml.sklearn_models import SKOPS_FILE, skops_dumps, skops_loads

__all__ = ["LightGbmFamily"]

MODEL_FILE: Final = "model.txt"


class LightGbmFamily:
    """``lightgbm.Booster`` and ``lightgbm.LGBMModel`` subclasses."""

    name: Final = "lightgbm"

    def handles(self, model_type: type) -> bool:
        lightgbm = sys.modules.get("lightgbm")  # not loaded: model_type cannot be a LightGBM model
        return lightgbm is not None and issubclass(model_type, (lightgbm.Booster, lightgbm.LGBMModel))

    def dump(self, model: Any, *, scratch_dir: Path | None) -> ModelFiles:
        import lightgbm

        version = f"lightgbm=={metadata.version('lightgbm')}"
        if isinstance(model, lightgbm.Booster):
            return ModelFiles(model_class=qualified_name(lightgbm.Booster), library_version=version,
                              files={MODEL_FILE: model.model_to_string().encode()})
        self._model_type(qualified_name(type(model)))
        return ModelFiles(model_class=qualified_name(type(model)),
                          library_version=f"{version} skops=={metadata.version('skops')}",
                          files={SKOPS_FILE: skops_dumps(model)})

    def restore(self, files: ModelFiles, options: LoadOptions) -> Any:
        import lightgbm

        model_type = self._model_type(files.model_class)
        if model_type is lightgbm.Booster:
            return lightgbm.Booster(model_str=files.files[MODEL_FILE].decode())
        return skops_loads(files.files[SKOPS_FILE], self._trusted(model_type, options), "the encrypted model",
                           expected_class=files.model_class)

    def load_plaintext(self, path: Path, model_type: type, options: LoadOptions) -> Any:
        import lightgbm

        self._model_type(qualified_name(model_type))
        if model_type is lightgbm.Booster:
            return lightgbm.Booster(model_file=str(path))
        return skops_loads(path.read_bytes(), self._trusted(model_type, options), str(path),
                           expected_class=qualified_name(model_type))

    @staticmethod
    def _trusted(model_type: type, options: LoadOptions) -> list[str]:
        own = [f"{model_type.__module__}.{model_type.__qualname__}", "lightgbm.basic.Booster",
               "collections.OrderedDict"]
        return own + list(options.trusted_types)

    @staticmethod
    def _model_type(model_class: str) -> type:
        import lightgbm

        if model_class == qualified_name(lightgbm.Booster):
            return lightgbm.Booster
        return resolve_class(model_class, modules=("lightgbm",), base=lightgbm.LGBMModel)
