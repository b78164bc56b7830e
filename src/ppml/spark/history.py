"""Spark's history server, from the pyspark wheel, runnable from any shell.

``pyspark/bin/spark-class`` finds its Spark home by running ``python3`` from ``$PATH`` unless
``SPARK_HOME`` is set, so outside the activated virtual environment it fails; here ``SPARK_HOME``
is pyspark's own directory. The event log directory and the port go in ``SPARK_HISTORY_OPTS``,
and the server binds ``127.0.0.1`` unless told otherwise (``SPARK_LOCAL_IP``: Spark's web UIs
bind to it, to every interface without it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from ppml.errors import InputNotFound, NotAFile, UsageError
from ppml.spark.launch import java_option, quiet_log_options, spark_home

__all__ = ["DEFAULT_PORT", "HISTORY_SERVER_CLASS", "history_server_command"]

DEFAULT_PORT: Final = 18080
HISTORY_SERVER_CLASS: Final = "org.apache.spark.deploy.history.HistoryServer"


def history_server_command(event_log_dir: Path, *, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
                           verbose: bool = False) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run Spark's history server over ``event_log_dir`` on
    ``http://host:port`` (in the foreground: stop it with SIGINT or SIGTERM).

    Raises:
        InputNotFound, NotAFile: ``event_log_dir`` is missing or not a directory.
        UsageError: the port is out of range, or pyspark is not installed.
    """
    if not event_log_dir.exists():
        raise InputNotFound(event_log_dir)
    if not event_log_dir.is_dir():
        raise NotAFile(event_log_dir, "is not a directory (the event log directory of `ppml submit --event-log-dir`)")
    if not 0 < port < 65536:
        raise UsageError(f"--port must be in 1..65535, not {port}")
    home = spark_home()
    user_options = quiet_log_options("SPARK_HISTORY_OPTS", os.environ) if not verbose \
        else os.environ.get("SPARK_HISTORY_OPTS", "")
    # The user's own options (and ppml's log configuration) come last, so what they set wins.
    options = [java_option("spark.history.fs.logDirectory", "file://" + str(event_log_dir.resolve())),
               java_option("spark.history.ui.port", str(port)), user_options]
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": host,
           "SPARK_HISTORY_OPTS": " ".join(o for o in options if o)}
    return [str(home / "bin" / "spark-class"), HISTORY_SERVER_CLASS], env
