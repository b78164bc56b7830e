"""Spark ML models (``PipelineModel``, ``LogisticRegressionModel``, ``GBTRegressionModel``,
``KMeansModel``…, and ``xgboost.spark`` models, which are Spark ML models) in Spark ML's own format.

Where plaintext lives, briefly. Spark ML's writers and readers only go through Hadoop's
FileSystem: ``model.write().save(path)`` runs Spark jobs that write JSON metadata and Parquet
data, and ``Model.load(path)`` reads them back with Spark. So :meth:`SparkMlFamily.dump` lets the
writer save into a private temporary directory (``tempfile.mkdtemp``: mode 0700, under
``scratch_dir`` or the system's temporary directory, a ``file:`` URI so a cluster's default
file system is never used), reads every file into memory and removes the directory before
anything is encrypted; :meth:`SparkMlFamily.restore` writes the verified files into such a
directory, loads (Spark's model readers collect the model into the driver, so nothing is read
later) and removes it. The plaintext model is therefore on the local disk of the driver for the
duration of one save or load, readable by the driver's user only. Inside a TEE, point
``scratch_dir`` at memory (tmpfs) or the TEE's protected file system; Spark's executors must
reach the same directory, which holds in ``local`` and ``local-tee`` modes and on a cluster
sharing one machine's disk, not across hosts. Avoiding the disk entirely would take a Hadoop
FileSystem that encrypts (JVM code) or Spark's internal local-saving mode (a different format).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Final

from ppml.ml.family import LoadOptions, ModelFiles, qualified_name, resolve_class

__all__ = ["SPARK_ML_MODULES", "SparkMlFamily", "private_scratch"]

SPARK_ML_MODULES: Final = ("pyspark.ml", "xgboost.spark")
"""Where the Python classes of loadable Spark ML models live."""


@contextmanager
def private_scratch(parent: Path | None) -> Iterator[Path]:
    """A new directory only this user can enter (0700), removed with everything in it on exit."""
    directory = Path(tempfile.mkdtemp(prefix="ppml-model-", dir=parent))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _version(distribution: str) -> str:
    try:
        return f"{distribution}=={metadata.version(distribution)}"
    except metadata.PackageNotFoundError:
        return distribution


class SparkMlFamily:
    """Any ``MLWritable`` Spark ML model, through its own writer and reader."""

    name: Final = "spark-ml"

    def handles(self, model_type: type) -> bool:
        util = sys.modules.get("pyspark.ml.util")  # not loaded: model_type cannot be a Spark ML model
        return util is not None and issubclass(model_type, util.MLWritable)

    def dump(self, model: Any, *, scratch_dir: Path | None) -> ModelFiles:
        self._model_type(qualified_name(type(model)))  # refused now rather than on load
        versions = [_version("pyspark")]
        if type(model).__module__.startswith("xgboost"):
            versions.append(_version("xgboost"))
        with private_scratch(scratch_dir) as scratch:
            target = scratch / "model"
            model.write().save(target.as_uri())
            files = {}
            for root, _, names in os.walk(target):
                for name in names:
                    file = Path(root) / name
                    files[file.relative_to(target).as_posix()] = file.read_bytes()
        return ModelFiles(model_class=qualified_name(type(model)), library_version=" ".join(versions),
                          files=files)

    def restore(self, files: ModelFiles, options: LoadOptions) -> Any:
        model_type = self._model_type(files.model_class)
        with private_scratch(options.scratch_dir) as scratch:
            target = scratch / "model"
            for name, data in files.files.items():
                file = target.joinpath(*name.split("/"))
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(data)
            return model_type.load(target.as_uri())  # type: ignore[attr-defined]

    def load_plaintext(self, path: Path, model_type: type, options: LoadOptions) -> Any:
        self._model_type(qualified_name(model_type))
        return model_type.load(path.absolute().as_uri())  # type: ignore[attr-defined]

    @staticmethod
    def _model_type(model_class: str) -> type:
        from pyspark.ml.util import MLReadable

        return resolve_class(model_class, modules=SPARK_ML_MODULES, base=MLReadable)
