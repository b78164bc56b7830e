"""One SparkSession (local[2]) for the whole test session (loaded by conftest.py's
``pytest_plugins``: request ``spark`` by name; do not import it).

The session runs like ``ppml submit --tee none``: ppml's JVM library is on its class path and a
key agent in this process (the app's credentials, no TEE) serves data keys to the JVM and the
Python workers, which inherit ``PPML_KEY_AGENT`` from the JVM. The variable is set only while the
JVM starts, so other subprocesses of the tests never inherit it."""

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

    from ppml.kms.registry import open_kms
    from ppml.spark.jvm import classpath_conf
    from ppml.spark.session import performance_conf
    from ppml.spark.source import register
    from ppml.tee.agent import AGENT_ENV, KeyAgent

    agent = KeyAgent(open_kms, tee="none").start()
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("ppml-tests")
        .config("spark.sql.python.filterPushdown.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.host", "127.0.0.1")
    )
    for name, value in {**performance_conf(), **classpath_conf()}.items():
        builder = builder.config(name, value)
    os.environ[AGENT_ENV] = str(agent.path)
    try:
        session = builder.getOrCreate()
    finally:
        del os.environ[AGENT_ENV]
    register(session)
    try:
        yield session
    finally:
        session.stop()
        agent.stop()
