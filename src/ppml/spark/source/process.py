"""State the source keeps per Python process that Spark runs it in: frozen start-up objects, and
one set of PME keys per KMS."""

from __future__ import annotations

import functools
import gc
import os

from ppml.tabular.parquet import PmeKeys
from ppml.tee.keys import kms_for

__all__ = ["freeze_loaded_objects", "pme_keys"]


@functools.cache
def freeze_loaded_objects() -> None:
    """In a Spark Python worker, once: move the objects alive now (the imported modules of
    pyspark, pyarrow and ppml, mostly) to gc's permanent generation.

    Spark's Python workers and planners run ``gc.collect()`` after every task or call; walking
    those ~80,000 long-lived objects took 30-90 ms each time (pyspark 4.3, 2 cores), and a query
    makes four to seven such calls. Frozen objects are still freed by reference counting; only
    cyclic garbage among them would stay until the worker exits. Outside a Spark worker (a
    driver, a test calling the source directly) nothing is done.
    """
    if os.environ.get("SPARK_PYTHON_RUNTIME") == "PYTHON_WORKER":
        gc.freeze()


_pme_keys_by_kms: dict[str, PmeKeys] = {}


def pme_keys(uri: str | None) -> PmeKeys:
    """This process's PME keys for the KMS ``uri``: one per process, so the key-encryption keys
    PyArrow caches serve every task the process runs (see :mod:`ppml.tabular.parquet`)."""
    assert uri is not None
    keys = _pme_keys_by_kms.get(uri)
    if keys is None:
        keys = _pme_keys_by_kms.setdefault(uri, PmeKeys(kms_for(uri)))
    return keys
