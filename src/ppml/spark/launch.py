"""How ppml starts Spark's JVMs from the pyspark wheel: its Spark home, the quiet log
configuration, and JVM options quoted for Spark's launcher.

Spark's default log4j2 configuration logs every step at INFO on stderr, which buries a job's own
output and the attestation line; ppml's (``log4j2-quiet.properties``, shipped in the package)
keeps warnings and errors, plus the few INFO lines ``ppml submit`` watches for on a standalone
cluster. It is passed to the JVM that runs on this machine through ``SPARK_SUBMIT_OPTS`` or a
daemon's ``SPARK_*_OPTS``: never through ``spark.driver.extraJavaOptions``, which would send a path
on this machine into Kubernetes pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ppml.errors import UsageError

__all__ = ["java_option", "quiet_log_config", "quiet_log_options", "spark_home"]


def spark_home() -> Path:
    """pyspark's directory: the Spark home of the pip wheel (``bin/``, ``jars/``)."""
    try:
        import pyspark
    except ModuleNotFoundError:
        raise UsageError("this needs pyspark: pip install 'ppml[spark]'") from None
    return Path(pyspark.__file__).parent


def quiet_log_config() -> Path:
    """ppml's log4j2 configuration for Spark's JVMs: warnings and errors only."""
    return Path(__file__).with_name("log4j2-quiet.properties")


def java_option(name: str, value: str) -> str:
    """``-Dname=value`` quoted for Spark's launcher, which splits ``SPARK_*_OPTS`` like a shell
    (double quotes, backslash escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"-D{name}={escaped}"'


def quiet_log_options(variable: str, environ: Mapping[str, str]) -> str:
    """The value for the JVM options variable ``variable`` (``SPARK_SUBMIT_OPTS``,
    ``SPARK_HISTORY_OPTS``): ppml's quiet log configuration, then whatever ``environ`` already
    has there, so a log configuration the user set wins."""
    quiet = java_option("log4j2.configurationFile", f"file:{quiet_log_config()}")
    return " ".join(option for option in (quiet, environ.get(variable, "")) if option)
