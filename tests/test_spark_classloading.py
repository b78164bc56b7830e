"""Tasks of ppml's Spark jobs load classes from their own class path, never from the driver.

With Spark 4's per-session artifact isolation on (its default), every SQL task loads classes through
an ``ExecutorClassLoader`` that asks the driver over Spark's RPC for each class the task's class path
lacks; code generation probes many, and on these machines about one local job in ten had such a
request stall until Spark's 120 s idle timeout and fail (``RemoteClassLoaderError``). ppml's
``performance_conf`` turns isolation off; the shared test session runs with it, as ``ppml submit``
does.
"""

from __future__ import annotations

from typing import Any

import pytest

from ppml.spark.session import performance_conf


@pytest.mark.spark
def test_sql_tasks_load_classes_from_their_class_path_not_from_the_driver(spark: Any) -> None:
    assert performance_conf()["spark.sql.artifact.isolation.enabled"] == "false"
    assert spark.conf.get("spark.sql.artifact.isolation.enabled") == "false"
    # a generated aggregation: Janino compiles classes in the tasks
    assert len(spark.range(1000).selectExpr("id % 7 AS k", "id").groupBy("k").count().collect()) == 7
    states = list(spark.sparkContext._jvm.org.apache.spark.executor.IsolatedSessionState.sessions().values())
    assert states
    for state in states:
        assert state.replClassDirUri().isEmpty(), state.replClassDirUri().get()
        assert state.replClassLoader().getClass().getName() != "org.apache.spark.executor.ExecutorClassLoader"
