"""Spark ML's own shape for encrypted models: ``EncryptedMLWriter(model, …).save(path)`` where
users wrote ``model.write().save(path)``, ``EncryptedMLReader(…).load(path)`` for ``X.load(path)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ppml.core.keys import DataKeyProvider
from ppml.ml.io import load, save
from ppml.ml.spark_ml import SparkMlFamily

__all__ = ["EncryptedMLReader", "EncryptedMLWriter"]


class EncryptedMLWriter:
    """Like ``model.write()``: ``EncryptedMLWriter(model, kms=…, key_id=…).overwrite().save(path)``
    (see :func:`ppml.ml.save`)."""

    def __init__(self, model: Any, *, kms: DataKeyProvider, key_id: str, scratch_dir: Path | None = None) -> None:
        self._model = model
        self._kms = kms
        self._key_id = key_id
        self._scratch_dir = scratch_dir
        self._overwrite = False

    def overwrite(self) -> EncryptedMLWriter:
        """Replace an existing model at the path (atomically), as ``MLWriter.overwrite`` does."""
        self._overwrite = True
        return self

    def save(self, path: Path | str) -> None:
        save(self._model, path, kms=self._kms, key_id=self._key_id, overwrite=self._overwrite,
             scratch_dir=self._scratch_dir, families=(SparkMlFamily(),))


class EncryptedMLReader:
    """Like ``Model.read()``: ``EncryptedMLReader(kms=…).load(path)`` (see :func:`ppml.ml.load`)."""

    def __init__(self, *, kms: DataKeyProvider, scratch_dir: Path | None = None) -> None:
        self._kms = kms
        self._scratch_dir = scratch_dir

    def load(self, path: Path | str) -> Any:
        return load(path, kms=self._kms, scratch_dir=self._scratch_dir, families=(SparkMlFamily(),))
