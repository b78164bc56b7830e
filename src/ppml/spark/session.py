"""Spark security settings for ppml jobs, and a SparkSession builder that applies them.

What is protected, with Spark's own mechanisms (DESIGN.md, "Spark"):

* RPC authentication (``spark.authenticate``) with a shared secret that comes from a 0600 file,
  never from argv; for standalone clusters it travels in a 0600 ``--properties-file``;
* RPC encryption (``spark.network.crypto.enabled``, AES-GCM) and shuffle/spill encryption
  (``spark.io.encryption.enabled``);
* TLS for the web UI when a keystore is given (``spark.ssl.ui.*``);
* redaction: Spark's regex extended so ``apikey``, ``api_key``, ``token``, credentials and ``key``
  values never show in the UI's environment page or the event log.

:func:`performance_conf` holds the settings that only make jobs faster and steadier.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ppml.core._files import create_private, write_private
from ppml.errors import KeyStoreUnreadable, UsageError

__all__ = [
    "REDACTION_REGEX",
    "UiTls",
    "performance_conf",
    "python_environment",
    "read_properties_file",
    "read_secret_file",
    "secure_session",
    "security_conf",
    "write_properties_file",
    "write_secret_file",
]

#: Spark's default ((?i)secret|password|token|access[.]?key) plus apikey/api_key/credentials and
#: any config whose last name part is "key" (kms keys, key ids are not secret but key material is).
REDACTION_REGEX: Final = (
    r"(?i)secret|password|token|access[.]?key|api[_-]?key|credential|(^|[._-])key([._-]|$)"
)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UiTls:
    """A JKS/PKCS12 keystore for the Spark UI; its password comes from a 0600 file."""

    keystore: Path
    password_file: Path
    keystore_type: str = "PKCS12"


def write_secret_file(path: Path) -> str:
    """Create a random 256-bit secret (hex) in ``path`` with mode 0600; returns it."""
    value = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    create_private(path, (value + "\n").encode())
    return value


def read_secret_file(path: Path) -> str:
    """Read a secret file; refuse one that group or others can read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such secret file "
                         f"(create one with `(umask 077; openssl rand -hex 32 > {path})`)") from None
    with os.fdopen(fd, "r") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & 0o077:
            raise KeyStoreUnreadable(path, f"permissions {stat.S_IMODE(mode):04o} are too open; run chmod 600")
        value = f.read(4096).strip()
    if len(value) < 32:
        raise KeyStoreUnreadable(path, "secret shorter than 32 characters")
    return value


def security_conf(*, secret: str | None = None, network_crypto: bool = True, io_encryption: bool = True,
                  ui_tls: UiTls | None = None) -> dict[str, str]:
    """Spark settings for an authenticated, encrypted job. ``secret`` may be None where Spark
    generates one itself (local and Kubernetes masters)."""
    conf = {
        "spark.authenticate": "true",
        "spark.network.crypto.enabled": "true" if network_crypto else "false",
        # Without this, a peer that does not speak the encrypted protocol is silently served over
        # unencrypted SASL instead (measured: a crypto mismatch with the cluster "worked").
        "spark.network.crypto.saslFallback": "false",
        "spark.io.encryption.enabled": "true" if io_encryption else "false",
        "spark.redaction.regex": REDACTION_REGEX,
        "spark.sql.redaction.options.regex": REDACTION_REGEX,
        "spark.sql.python.filterPushdown.enabled": "true",
    }
    if secret is not None:
        conf["spark.authenticate.secret"] = secret
    if ui_tls is not None:
        password = read_secret_file(ui_tls.password_file)
        conf.update({
            "spark.ssl.ui.enabled": "true",
            "spark.ssl.ui.keyStore": str(ui_tls.keystore),
            "spark.ssl.ui.keyStorePassword": password,
            "spark.ssl.ui.keyStoreType": ui_tls.keystore_type,
            "spark.ssl.ui.protocol": "TLSv1.3",
        })
    return conf


def performance_conf() -> dict[str, str]:
    """Spark settings that make ppml's jobs faster and steadier; none of them bears on security.

    * ``spark.sql.execution.arrow.maxBytesPerBatch`` at its largest value, 2147483647, which
      Spark 4 takes as "no byte limit": below it, Spark measures the Arrow batch it builds for
      a Python writer (or any Arrow UDF) after every row (``ArrowWriter.sizeInBytes``), which
      took about half of the JVM's time in an encrypted csv write (measured with JFR, 8M rows,
      local[2]). Batches are still cut at ``spark.sql.execution.arrow.maxRecordsPerBatch`` rows
      (10,000 by default), as before Spark 4.0; for rows above ~6 KB that is more than Spark
      4's 64 MB default cap, so lower maxRecordsPerBatch for such data.
    * ``spark.sql.artifact.isolation.enabled`` off. On (Spark 4's default), every SQL task loads
      classes through an ``ExecutorClassLoader`` that asks the driver over Spark's RPC
      (``spark://…/artifacts/<session>/classes/``) for each class its own class path lacks, and
      Janino's code generation probes many (``…expressions.Object.class``); in local mode, on
      these machines, about one job in ten had such a request stall until Spark's 120 s idle
      timeout and fail with ``RemoteClassLoaderError``. Isolation keeps the artifacts that Spark
      Connect sessions add apart; ppml's jobs are one classic session, which adds none (Spark's
      own shell and Hive support turn it off too). Set it back with ``--conf`` for Spark Connect.
    """
    return {"spark.sql.execution.arrow.maxBytesPerBatch": "2147483647",
            "spark.sql.artifact.isolation.enabled": "false"}


def python_environment() -> dict[str, str]:
    """The environment that makes Spark run its Python workers (and a submitted driver) with
    this interpreter, whose environment has ppml, pyarrow and pyspark. Without it Spark runs
    ``python3`` from ``$PATH``, which fails with ``No module named 'ppml'`` (or ``'pyarrow'``)
    unless the virtual environment is activated."""
    return {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}


def write_properties_file(conf: Mapping[str, str], path: Path) -> Path:
    """Write Spark properties (which may hold the secret) to ``path`` with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, value in sorted(conf.items()):
        escaped = value.replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"{name}={escaped}\n")
    write_private(path, "".join(lines).encode())
    return path


_PROPERTY_ESCAPES: Final = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def read_properties_file(path: Path) -> dict[str, str]:
    """Spark properties from a file in Java's ``.properties`` format, read as Spark reads a
    ``--properties-file`` (``java.util.Properties.load`` over UTF-8, values trimmed): ``#``/``!``
    comments, ``=``, ``:`` or blanks between key and value, backslash continuations and escapes
    (``\\t \\n \\uXXXX``).

    Raises:
        InputNotFound, NotAFile: there is no such file, or it is a directory.
        UsageError: the file is not UTF-8 or has a malformed ``\\u`` escape.
    """
    from ppml.core._files import open_input

    with open_input(path) as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: a properties file must be UTF-8 text") from None
    properties: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].lstrip(" \t\f")
        index += 1
        if not line or line[0] in "#!":
            continue
        # A line ending in an odd number of backslashes continues on the next one.
        while (len(line) - len(line.rstrip("\\"))) % 2 == 1 and index < len(lines):
            line = line[:-1] + lines[index].lstrip(" \t\f")
            index += 1
        key, value = _split_property(line, path)
        properties[key] = value.strip()
    return properties


def _split_property(line: str, path: Path) -> tuple[str, str]:
    chars: list[str] = []
    position = 0
    while position < len(line):
        char = line[position]
        if char == "\\" and position + 1 < len(line):
            position, decoded = _unescape(line, position, path)
            chars.append(decoded)
            continue
        if char in "=: \t\f":
            break
        chars.append(char)
        position += 1
    rest = line[position:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    value: list[str] = []
    position = 0
    while position < len(rest):
        if rest[position] == "\\" and position + 1 < len(rest):
            position, decoded = _unescape(rest, position, path)
            value.append(decoded)
        else:
            value.append(rest[position])
            position += 1
    return "".join(chars), "".join(value)


def _unescape(text: str, position: int, path: Path) -> tuple[int, str]:
    """The character the backslash escape at ``position`` stands for, and the position after it."""
    code = text[position + 1]
    if code == "u":
        digits = text[position + 2:position + 6]
        if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise UsageError(f"{path}: malformed \\u escape in a property")
        return position + 6, chr(int(digits, 16))
    return position + 2, _PROPERTY_ESCAPES.get(code, code)


def secure_session(app_name: str, *, master: str | None = None, secret_file: Path | None = None,
                   conf: Mapping[str, str] | None = None, ui_tls: UiTls | None = None,
                   kms_uri: str | None = None) -> Any:
    """A SparkSession with ppml's security settings, its :func:`performance_conf`, ppml's JVM
    library on the class path (``conf`` overrides all three) and the ``ppml`` data source
    registered. With ``kms_uri``, Spark's own Parquet reader and writer also do Parquet Modular
    Encryption with keys from that KMS through the key agent
    (:func:`ppml.spark.jvm.native_session_conf`).

    Needs ``pip install 'ppml[spark]'``.
    """
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError:
        raise UsageError("Spark support needs pyspark: pip install 'ppml[spark]'") from None
    from ppml.spark.jvm import classpath_conf, native_session_conf
    from ppml.spark.source import register

    secret = read_secret_file(secret_file) if secret_file else None
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    jvm_conf = native_session_conf(kms_uri) if kms_uri else classpath_conf()
    user_conf = dict(conf or {})
    for name in ("spark.driver.extraClassPath", "spark.executor.extraClassPath"):
        if user_conf.get(name):
            jvm_conf[name] = os.pathsep.join((jvm_conf[name], user_conf.pop(name)))
    settings = {**performance_conf(), **security_conf(secret=secret, ui_tls=ui_tls), **jvm_conf, **user_conf}
    for name, value in settings.items():
        builder = builder.config(name, value)
    session = builder.getOrCreate()
    register(session)
    return session
