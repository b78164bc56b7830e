"""The layout of ppml's base image (``deploy/images/base/Dockerfile``): one description, used by
``ppml image context`` to build a manifest against the image's own files, by the Kubernetes pod
templates for the paths they run, and by the tests that parse the Dockerfile to check it really
creates these paths.

Every path here is a path *inside the image*. The Gramine manifest's trusted files are image paths
too: the enclave opens them there, so that is what ``mr_enclave`` must commit to.
"""

from __future__ import annotations

import dataclasses
from typing import Final

__all__ = [
    "APP_DIR",
    "BASE_IMAGE",
    "ENCLAVE_APP",
    "ENCLAVE_DIR",
    "ENCLAVE_NAME",
    "GRAMINE_LIBOS",
    "GRAMINE_RUNTIME",
    "IMAGE_GID",
    "IMAGE_UID",
    "JAVA_HOME",
    "KMS_CREDENTIALS_PATH",
    "PASSTHROUGH_ENV",
    "POD_RUN_DIR",
    "POD_SECRET_FILES",
    "PYTHON",
    "RPC_SECRET_PATH",
    "RUNTIME_TREES",
    "SITE_PACKAGES",
    "SPARK_ENTRYPOINT",
    "SPARK_HOME",
    "SPARK_JARS",
    "VENV",
    "VENV_PYTHON",
    "RuntimeTree",
]

#: The base image's own base (Debian 12 "bookworm", slim, with CPython 3.11 in /usr/local).
BASE_IMAGE: Final = "python:3.11-slim-bookworm"
PYTHON: Final = "/usr/local/bin/python3.11"
VENV: Final = "/opt/ppml/venv"
VENV_PYTHON: Final = f"{VENV}/bin/python"
SITE_PACKAGES: Final = f"{VENV}/lib/python3.11/site-packages"
#: pyspark's wheel is a Spark distribution: bin/spark-submit, jars/.
SPARK_HOME: Final = f"{SITE_PACKAGES}/pyspark"
SPARK_JARS: Final = f"{SPARK_HOME}/jars"
#: Debian's openjdk-17-jre-headless.
JAVA_HOME: Final = "/usr/lib/jvm/java-17-openjdk-amd64"
#: Where Gramine's Debian packages put the LibOS and Gramine's own glibc.
GRAMINE_DIR: Final = "/usr/lib/x86_64-linux-gnu/gramine"
GRAMINE_LIBOS: Final = f"{GRAMINE_DIR}/libsysdb.so"
GRAMINE_RUNTIME: Final = f"{GRAMINE_DIR}/runtime/glibc"
#: A Spark-on-Kubernetes entrypoint (``driver …`` / ``executor``), as Spark's images have one.
SPARK_ENTRYPOINT: Final = "/opt/entrypoint.sh"
#: The application (``--app DIR``), copied by the custom image's Dockerfile.
APP_DIR: Final = "/ppml/app"
#: The enclave: ``ppml.manifest``, ``ppml.sig`` (and ``ppml.manifest.sgx`` from gramine-sgx-sign).
ENCLAVE_DIR: Final = "/ppml/enclave"
ENCLAVE_NAME: Final = "ppml"
#: What ``gramine-sgx`` is given (the manifest path without ``.manifest.sgx``).
ENCLAVE_APP: Final = f"{ENCLAVE_DIR}/{ENCLAVE_NAME}"
#: Where the pod templates (ppml.deploy.k8s) mount each Kubernetes Secret, one file per directory.
POD_RUN_DIR: Final = "/var/run/ppml"
KMS_CREDENTIALS_PATH: Final = f"{POD_RUN_DIR}/kms-credentials/credentials.json"
RPC_SECRET_PATH: Final = f"{POD_RUN_DIR}/spark-rpc-secret/secret"
#: Files the enclave reads but cannot trust by hash, since they are made per deployment: the
#: Kubernetes Secrets the pods mount (the app's KMS credentials, Spark's RPC secret). They are
#: ``sgx.allowed_files``: the node hands them to the pod and can read or swap them in any mode;
#: what a swapped credential can obtain is still bounded by attestation (keys are released to the
#: registered measurement only).
POD_SECRET_FILES: Final = (KMS_CREDENTIALS_PATH, RPC_SECRET_PATH)
#: The ``spark`` user of Spark's images; the pod templates run as it.
IMAGE_UID: Final = 185
IMAGE_GID: Final = 185


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeTree:
    """A file or directory of the base image the enclave loads, and what puts it there.

    ``source`` is ``from`` (the ``FROM`` image), ``apt`` (the Debian package ``provided_by``),
    ``venv`` (``python -m venv`` at ``$PPML_VENV``, then pip) or ``copy`` (a ``COPY`` to this path).
    """

    path: str
    source: str
    provided_by: str


#: Everything of the base image the enclave trusts (hashed into the manifest): the interpreter
#: and its standard library, the venv (ppml, its extras, pyspark and Spark's jars), the JVM,
#: system libraries and the shell tools spark-submit's scripts run, Gramine's glibc.
RUNTIME_TREES: Final = (
    RuntimeTree(path=PYTHON, source="from", provided_by=BASE_IMAGE),
    RuntimeTree(path="/usr/local/lib/python3.11", source="from", provided_by=BASE_IMAGE),
    RuntimeTree(path="/usr/local/lib/libpython3.11.so.1.0", source="from", provided_by=BASE_IMAGE),
    RuntimeTree(path=VENV, source="venv", provided_by="PPML_VENV"),
    RuntimeTree(path=JAVA_HOME, source="apt", provided_by="openjdk-17-jre-headless"),
    RuntimeTree(path="/etc/java-17-openjdk", source="apt", provided_by="openjdk-17-jre-headless"),
    RuntimeTree(path=GRAMINE_RUNTIME, source="apt", provided_by="gramine"),
    RuntimeTree(path="/usr/lib/x86_64-linux-gnu", source="from", provided_by=BASE_IMAGE),
    RuntimeTree(path="/usr/bin", source="from", provided_by=BASE_IMAGE),
    RuntimeTree(path=SPARK_ENTRYPOINT, source="copy", provided_by="entrypoint.sh"),
    RuntimeTree(path="/etc/passwd", source="from", provided_by=BASE_IMAGE),
    RuntimeTree(path="/etc/group", source="from", provided_by=BASE_IMAGE),
    RuntimeTree(path="/etc/nsswitch.conf", source="from", provided_by=BASE_IMAGE),
)

#: The host variables the enclave takes, by name (``loader.env.NAME = { passthrough = true }``).
#: None decides what code runs (that is in the manifest); they say where services are, which job
#: to run (``PPML_GRAMINE_ARGV``) and what Spark on Kubernetes tells its pods. No secret is passed
#: this way: the KMS credentials and Spark's RPC secret are files (Kubernetes Secrets).
PASSTHROUGH_ENV: Final = (
    "PPML_GRAMINE_ARGV",
    # Attestation and keys: where the services are and which registered policy to attest against.
    "PPML_AS_URL", "PPML_AS_CA", "PPML_TEE_POLICY", "PPML_KMS", "PPML_KMS_CA", "PPML_KMS_CREDENTIALS",
    "SPARK_LOCAL_IP", "SPARK_LOCAL_DIRS", "SPARK_CONF_DIR", "SPARK_USER", "HADOOP_CONF_DIR",
    # Spark on Kubernetes: what the driver and executor pods' entrypoint reads (Spark 4, "Running
    # on Kubernetes"; resource-managers/kubernetes/.../Constants.scala).
    "SPARK_DRIVER_BIND_ADDRESS", "SPARK_DRIVER_URL", "SPARK_EXECUTOR_ID", "SPARK_EXECUTOR_CORES",
    "SPARK_EXECUTOR_MEMORY", "SPARK_APPLICATION_ID", "SPARK_EXECUTOR_POD_IP", "SPARK_EXECUTOR_POD_NAME",
    "SPARK_RESOURCE_PROFILE_ID", "SPARK_CLASSPATH", "SPARK_EXTRA_CLASSPATH", "SPARK_JAVA_OPT_0",
    "SPARK_JAVA_OPT_1", "SPARK_JAVA_OPT_2", "SPARK_JAVA_OPT_3", "SPARK_JAVA_OPT_4", "SPARK_JAVA_OPT_5",
    "SPARK_JAVA_OPT_6", "SPARK_JAVA_OPT_7", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON",
    "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
)
