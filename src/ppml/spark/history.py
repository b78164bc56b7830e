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

__all__ = ["DEFAULT_PORT", "HISTORY_SERVER_CLASS", "history_server_command", "quiet_log_config", "spark_home"]

DEFAULT_PORT: Final = 18080
HISTORY_SERVER_CLASS: Final = "org.apache.spark.deploy.history.HistoryServer"


def spark_home() -> Path:
    """pyspark's directory: the Spark home of the pip wheel (``bin/``, ``jars/``)."""
    try:
        import pyspark
    except ModuleNotFoundError:
        raise UsageError("this needs pyspark: pip install 'ppml[spark]'") from None
    return Path(pyspark.__file__).parent


def quiet_log_config() -> Path:
    """ppml's log4j2 configuration for Spark's JVMs: warnings and errors only (Spark's default
    logs every step at INFO, burying a job's own output)."""
    return Path(__file__).with_name("log4j2-quiet.properties")


def _java_option(name: str, value: str) -> str:
    """``-Dname=value`` quoted for Spark's launcher, which splits ``SPARK_*_OPTS`` like a shell
    (double quotes, backslash escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"-D{name}={escaped}"'


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
    options = [_java_option("spark.history.fs.logDirectory", "file://" + str(event_log_dir.resolve())),
               _java_option("spark.history.ui.port", str(port))]
    if not verbose:
        options.append(_java_option("log4j2.configurationFile", f"file:{quiet_log_config()}"))
    # The caller's own SPARK_HISTORY_OPTS come last, so what they set wins.
    options.append(os.environ.get("SPARK_HISTORY_OPTS", ""))
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": host,
           "SPARK_HISTORY_OPTS": " ".join(o for o in options if o)}
    return [str(home / "bin" / "spark-class"), HISTORY_SERVER_CLASS], env
