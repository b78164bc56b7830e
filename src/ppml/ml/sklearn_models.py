"""scikit-learn estimators (and LightGBM's scikit-learn API) through skops, never pickle.

skops stores an object tree as JSON and NumPy arrays in a zip file and rebuilds it only from types
it trusts: its own default set (scikit-learn estimators, NumPy, SciPy) plus the types the caller
lists. ppml never passes ``trusted=True`` or the file's own list of types: a type beyond skops'
defaults must be named by the caller (``trusted_types=`` of :func:`ppml.ml.load`), after review,
because rebuilding it runs its code. The one fixed extension is LightGBM's scikit-learn API
(:mod:`ppml.ml.lightgbm_models`), whose booster skops rebuilds from LightGBM's text format.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from ppml.errors import UsageError
from ppml.ml.family import LoadOptions, ModelFiles, qualified_name

__all__ = ["SKOPS_FILE", "SklearnFamily", "skops_dumps", "skops_loads"]

SKOPS_FILE: Final = "model.skops"


def skops_dumps(model: Any) -> bytes:
    import skops.io

    return bytes(skops.io.dumps(model))


def skops_loads(data: bytes, trusted_types: Sequence[str], source: str, *, expected_class: str) -> Any:
    """Rebuild a skops file holding a model of ``expected_class`` (``module:QualName``), refusing
    any type outside skops' defaults and ``trusted_types``.

    Raises:
        UsageError: the file holds types nobody trusted (listed, so they can be reviewed), or
            its model is of another class.
    """
    import skops.io

    untrusted = [t for t in skops.io.get_untrusted_types(data=data) if t not in trusted_types]
    if untrusted:
        error = UsageError(f"{source}: the model holds types that are not trusted: {', '.join(untrusted)}")
        error.hint = "review them; if they are safe to construct, pass trusted_types=[...] to load"
        raise error
    model = skops.io.loads(data, trusted=list(trusted_types))
    if qualified_name(type(model)) != expected_class:
        raise UsageError(f"{source} holds a {qualified_name(type(model))}, not a {expected_class}")
    return model


class SklearnFamily:
    """Any scikit-learn estimator that skops can store."""

    name: Final = "sklearn"

    def handles(self, model_type: type) -> bool:
        base = sys.modules.get("sklearn.base")  # not loaded: model_type cannot be an estimator
        return base is not None and issubclass(model_type, base.BaseEstimator)

    def dump(self, model: Any, *, scratch_dir: Path | None) -> ModelFiles:
        return ModelFiles(model_class=qualified_name(type(model)),
                          library_version=f"scikit-learn=={metadata.version('scikit-learn')} "
                                          f"skops=={metadata.version('skops')}",
                          files={SKOPS_FILE: skops_dumps(model)})

    def restore(self, files: ModelFiles, options: LoadOptions) -> Any:
        return skops_loads(files.files[SKOPS_FILE], options.trusted_types, "the encrypted model",
                           expected_class=files.model_class)

    def load_plaintext(self, path: Path, model_type: type, options: LoadOptions) -> Any:
        return skops_loads(path.read_bytes(), options.trusted_types, str(path),
                           expected_class=qualified_name(model_type))

