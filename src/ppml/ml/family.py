"""What a model family (Spark ML, XGBoost, LightGBM, scikit-learn) does for ``ppml.ml``: turn a
model into named files in its library's own documented format, and those files back into a model.

A family never writes a file in the clear on its own account and never unpickles: the files it
returns are encrypted by :mod:`ppml.ml.format`; the files it is given were decrypted and verified
by it. (Spark ML is the one exception to "never on disk": see :mod:`ppml.ml.spark_ml`.)
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ppml.errors import UsageError

__all__ = ["LoadOptions", "ModelFamily", "ModelFiles", "qualified_name", "resolve_class"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ModelFiles:
    """A model as its library stores it: relative file names and their bytes, plus the model's
    Python class (``module:QualName``) and the library versions that wrote it (informational)."""

    model_class: str
    library_version: str
    files: Mapping[str, bytes]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LoadOptions:
    """What a caller may add when loading.

    ``scratch_dir``: where Spark ML's private temporary directory goes (default: the system's).
    ``trusted_types``: types a skops file may hold beyond skops' own trusted set (scikit-learn,
    NumPy, SciPy); each one is a type whose constructor or ``__setstate__`` runs on load, so the
    list is the caller's review, never taken from the file.
    """

    scratch_dir: Path | None = None
    trusted_types: Sequence[str] = ()


class ModelFamily(Protocol):
    """One model library's save and load, in its own format."""

    @property
    def name(self) -> str:
        """The family's name in manifests (``spark-ml``, ``xgboost``, ``lightgbm``, ``sklearn``)."""
        ...

    def handles(self, model_type: type) -> bool:
        """Whether models of ``model_type`` are this family's (without importing its library)."""
        ...

    def dump(self, model: Any, *, scratch_dir: Path | None) -> ModelFiles:
        """The model's files in its library's format."""
        ...

    def restore(self, files: ModelFiles, options: LoadOptions) -> Any:
        """The model back from verified files."""
        ...

    def load_plaintext(self, path: Path, model_type: type, options: LoadOptions) -> Any:
        """A model of ``model_type`` saved in the clear by its library at ``path``."""
        ...


def qualified_name(model_type: type) -> str:
    """``module:QualName`` of a class, as stored in manifests (the colon makes it unambiguous)."""
    return f"{model_type.__module__}:{model_type.__qualname__}"


def resolve_class(qualified: str, *, modules: Sequence[str], base: type) -> type:
    """The class a manifest names, if it lives under one of ``modules`` and subclasses ``base``.

    The manifest is authenticated, but the class decides which code runs on load, so it is
    checked against the family's own list too.

    Raises:
        UsageError: the name is outside the family's modules, or is not such a class.
    """
    module_path, _, attributes = qualified.partition(":")
    refused = UsageError(f"model class {qualified!r} is not a {base.__name__} from {', '.join(modules)}")
    if not attributes or not any(module_path == m or module_path.startswith(m + ".") for m in modules):
        raise refused
    try:
        found: Any = importlib.import_module(module_path)
        for attribute in attributes.split("."):
            found = getattr(found, attribute)
    except (ImportError, AttributeError):
        raise refused from None
    if not (isinstance(found, type) and issubclass(found, base)):
        raise refused
    return found
