"""ppml's JVM library: where its jar is, how it is built, and the Spark settings that load it.

The library (Java sources under ``jvm/`` in the repository: the key agent client, the envelope
codec, the Parquet ``KmsClient``) is compiled with ``javac`` against the jars pyspark ships (no
Maven or Gradle repository is reachable from where ppml is built) and zipped into
``ppml/spark/jars/ppml-jvm.jar``. ``make venv`` builds it (``ppml jvm build``); in a source
checkout :func:`library_jar` rebuilds it when a source changed, so a stale jar never runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ppml.errors import UsageError
from ppml.spark.launch import spark_home

__all__ = ["CODEC_CLASS", "CRYPTO_FACTORY_CLASS", "ENCRYPTION_REQUIRED", "JAR_NAME", "KMS_CLIENT_CLASS",
           "build_library", "classpath_conf", "javac", "library_jar", "native_session_conf", "source_dir"]

JAR_NAME: Final = "ppml-jvm.jar"
#: The Hadoop codec for ``.ppml`` envelope files (registered by the jar's service file).
CODEC_CLASS: Final = "org.ppml.codec.PpmlCodec"
#: parquet-mr's ``parquet.encryption.kms.client.class`` for PME keys wrapped by a ppml KMS.
KMS_CLIENT_CLASS: Final = "org.ppml.parquet.PpmlKmsClient"
#: parquet-mr's ``parquet.crypto.factory.class``: its properties-driven factory, made to write
#: what ppml writes and to refuse plaintext files where a read requires encryption.
CRYPTO_FACTORY_CLASS: Final = "org.ppml.parquet.PpmlCryptoFactory"
#: The Hadoop setting (or DataFrame option) by which a read refuses any file that is not PME with
#: an encrypted footer; also implied by naming a key (``parquet.encryption.footer.key``) on a read.
ENCRYPTION_REQUIRED: Final = "ppml.parquet.encryption.required"
_JAVA_RELEASE: Final = "17"


def source_dir() -> Path | None:
    """The ``jvm/`` directory of a source checkout, or None in an installed wheel."""
    candidate = Path(__file__).resolve().parents[3] / "jvm"
    return candidate if (candidate / "src").is_dir() else None


def _jar_path() -> Path:
    return Path(__file__).with_name("jars") / JAR_NAME


def _sources_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def javac() -> Path:
    """The Java compiler: ``$JAVA_HOME/bin/javac``, else the one on ``$PATH``."""
    home = os.environ.get("JAVA_HOME")
    candidates = [Path(home) / "bin" / "javac"] if home else []
    found = shutil.which("javac")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise UsageError("building ppml's JVM library needs a JDK 17+ (javac): e.g. "
                     "apt-get install openjdk-17-jdk-headless, or set JAVA_HOME to a JDK")


def build_library(*, force: bool = False) -> Path:
    """Compile ``jvm/`` into the package's jar unless it is already built from these sources."""
    root = source_dir()
    jar = _jar_path()
    if root is None:
        if jar.is_file():
            return jar
        raise UsageError(f"ppml's JVM library {jar} is missing and this installation has no Java sources "
                         "to build it from; reinstall ppml from a source checkout (make venv)")
    digest = _sources_digest(root)
    stamp = jar.with_suffix(".sha256")
    if not force and jar.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return jar
    sources = sorted(str(p) for p in (root / "src").rglob("*.java"))
    classpath = os.pathsep.join(sorted(str(p) for p in (spark_home() / "jars").glob("*.jar")))
    with tempfile.TemporaryDirectory(prefix="ppml-javac-") as tmp:
        classes = Path(tmp) / "classes"
        argv = [str(javac()), "--release", _JAVA_RELEASE, "-encoding", "UTF-8", "-Xlint:all,-serial,-options",
                "-Werror", "-nowarn", "-d", str(classes), "-cp", classpath, *sources]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise UsageError(f"javac failed building ppml's JVM library:\n{result.stdout}{result.stderr}")
        jar.parent.mkdir(parents=True, exist_ok=True)
        partial = jar.with_name(jar.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\nCreated-By: ppml\r\n\r\n")
            for tree in (classes, root / "resources"):
                for path in sorted(p for p in tree.rglob("*") if p.is_file()):
                    out.write(path, str(path.relative_to(tree)))
        partial.replace(jar)
    stamp.write_text(digest + "\n")
    return jar


def library_jar() -> Path:
    """The jar to put on Spark's classpath, built (or rebuilt) first where needed."""
    return build_library()


def classpath_conf(user_conf: Mapping[str, str] | None = None) -> dict[str, str]:
    """Spark settings that put the library on the driver's and executors' class path (before
    any the user gave), where Hadoop's codec lookup and parquet-mr's class loading find it.

    Local and standalone executors on this machine read the same path; on Kubernetes the image
    holds ppml at the same place (see docs).
    """
    jar = str(library_jar())
    user_conf = user_conf or {}
    conf = {}
    for name in ("spark.driver.extraClassPath", "spark.executor.extraClassPath"):
        existing = user_conf.get(name, "")
        conf[name] = os.pathsep.join(p for p in (jar, existing) if p)
    return conf


def native_session_conf(kms_uri: str | None = None) -> dict[str, str]:
    """Spark settings for Parquet Modular Encryption through Spark's own Parquet reader and
    writer (``spark.read.parquet``, ``df.write.option("parquet.encryption.footer.key", id)``),
    keyed through ppml's key agent: :func:`classpath_conf`, ppml's crypto factory and
    ``KmsClient``, and parquet-mr settings that make Spark write what ppml writes (256-bit data
    keys and KEKs, double wrapping, encrypted footer, key material inside the file).

    ``kms_uri`` is the KMS the keys come from, as ``parquet.encryption.kms.instance.id``. It is
    the only KMS the client asks: the one stored in a file's key material is never used (see
    docs/jvm-parquet.md). Without it, each read or write names its KMS with that option.

    The JVM gets keys only from the key agent (``PPML_KEY_AGENT``): run the job under
    ``ppml submit`` or ``ppml tee run``.
    """
    conf = classpath_conf()
    hadoop = {
        "parquet.crypto.factory.class": CRYPTO_FACTORY_CLASS,
        "parquet.encryption.kms.client.class": KMS_CLIENT_CLASS,
        "parquet.encryption.data.key.length.bits": "256",
        "parquet.encryption.kek.length.bits": "256",
        "parquet.encryption.double.wrapping": "true",
        "parquet.encryption.plaintext.footer": "false",
        "parquet.encryption.key.material.store.internally": "true",
    }
    if kms_uri:
        hadoop["parquet.encryption.kms.instance.id"] = kms_uri
    conf.update({f"spark.hadoop.{name}": value for name, value in hadoop.items()})
    return conf
