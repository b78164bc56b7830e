"""One SparkSession (local[2]) for the whole test session (loaded by conftest.py's
``pytest_plugins``: request ``spark`` by name; do not import it)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    from ppml.spark.source import register

    session = (
        SparkSession.builder.master("local[2]")
        .appName("ppml-tests")
        .config("spark.sql.python.filterPushdown.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    register(session)
    try:
        yield session
    finally:
        session.stop()
