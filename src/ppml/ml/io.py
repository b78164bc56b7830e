"""Save and load a model encrypted: :func:`save` and :func:`load`, for every model family.

The family is chosen from the model's type when saving and from the manifest when loading,
among the ``families`` passed (by default :data:`DEFAULT_FAMILIES`, an immutable tuple: a caller
adds a family by passing its own tuple, never by registering). The format is
:mod:`ppml.ml.format`; the user manual is ``docs/ml-models.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from ppml.core.keys import DataKeyProvider
from ppml.errors import InputNotFound, UnsafeWarning, UsageError
from ppml.ml.family import LoadOptions, ModelFamily
from ppml.ml.format import Manifest, read_model, write_model
from ppml.ml.lightgbm_models import LightGbmFamily
from ppml.ml.sklearn_models import SklearnFamily
from ppml.ml.spark_ml import SparkMlFamily
from ppml.ml.xgboost_models import XGBoostFamily

__all__ = ["DEFAULT_FAMILIES", "family_for", "load", "save"]

DEFAULT_FAMILIES: Final[tuple[ModelFamily, ...]] = (
    SparkMlFamily(), XGBoostFamily(), LightGbmFamily(),
    SklearnFamily(),  # last: XGBoost's and LightGBM's scikit-learn models are estimators too
)


def family_for(model_type: type, families: Sequence[ModelFamily] = DEFAULT_FAMILIES) -> ModelFamily:
    """The first of ``families`` that handles ``model_type``.

    Raises:
        UsageError: none does.
    """
    for family in families:
        if family.handles(model_type):
            return family
    names = ", ".join(f.name for f in families)
    raise UsageError(f"no model family ({names}) saves a {model_type.__module__}.{model_type.__qualname__}")


def save(
    model: Any,
    path: Path | str,
    *,
    kms: DataKeyProvider,
    key_id: str,
    overwrite: bool = False,
    scratch_dir: Path | None = None,
    families: Sequence[ModelFamily] = DEFAULT_FAMILIES,
) -> Manifest:
    """Save ``model`` encrypted under a fresh data key per file wrapped by ``key_id`` in ``kms``.

    The model directory ``path`` appears whole, or not at all. ``scratch_dir`` is where a Spark
    ML model is written in the clear for a moment (see :mod:`ppml.ml.spark_ml`).

    Raises:
        UsageError: no family saves this model, or it holds something its format cannot.
        OutputExists: ``path`` exists and ``overwrite`` is false.
        KeyServiceError: the key service failed or does not know ``key_id``.
    """
    family = family_for(type(model), families)
    files = family.dump(model, scratch_dir=scratch_dir)
    return write_model(Path(path), files, family=family.name, kms=kms, key_id=key_id, overwrite=overwrite)


def load(
    path: Path | str,
    *,
    kms: DataKeyProvider | None = None,
    plaintext: bool = False,
    model_type: type | None = None,
    trusted_types: Sequence[str] = (),
    scratch_dir: Path | None = None,
    families: Sequence[ModelFamily] = DEFAULT_FAMILIES,
) -> Any:
    """Load a model saved by :func:`save`; the key comes from ``kms`` (so, for a key whose release
    needs attestation, only inside an attested TEE).

    ``plaintext=True`` loads instead a model its library saved in the clear (``model_type`` names
    its class); it warns every time, since nothing then protects the model. ``trusted_types``
    extends skops' trusted set for scikit-learn models (see :mod:`ppml.ml.sklearn_models`).

    Raises:
        NotAnEncryptedModel: ``path`` holds no encrypted model (a plaintext one, or an unfinished
            save) and ``plaintext`` is false.
        InvalidCiphertext: the wrong key (another app's or key service's), or any file of the
            model was altered, truncated, swapped, removed or added.
        UsageError: the arguments do not fit, or the model holds types nobody trusted.
    """
    path = Path(path)
    options = LoadOptions(scratch_dir=scratch_dir, trusted_types=tuple(trusted_types))
    if plaintext:
        if model_type is None:
            raise UsageError("loading a plaintext model needs model_type= (its class)")
        if not path.exists():
            raise InputNotFound(path)
        warnings.warn(f"loading the plaintext model {path}: it is not encrypted or authenticated",
                      UnsafeWarning, stacklevel=2)
        return family_for(model_type, families).load_plaintext(path, model_type, options)
    if kms is None:
        raise UsageError("loading an encrypted model needs kms= (or plaintext=True for a plaintext one)")
    manifest, files = read_model(path, kms=kms)
    for family in families:
        if family.name == manifest.family:
            return family.restore(files, options)
    raise UsageError(f"{path} is a {manifest.family!r} model, and no family given loads it")
