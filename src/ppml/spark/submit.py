"""``ppml submit``: spark-submit with ppml's security settings, the TEE gate and fail-fast checks.

Modes (DESIGN.md step 5), chosen by ``--tee`` and the master/deploy mode:

===========  ======================  ====================================================
mode         how to ask              what runs where
===========  ======================  ====================================================
local        ``--tee none``          no TEE; Spark's authentication and encryption still on;
                                     a key agent with the app's credentials serves the JVM
local-tee    ``--tee X``, local[N]   the driver (and its executor threads and Python workers)
                                     pass the gate; they get keys from its key agent
client       ``--tee X``, spark://…  driver passes the gate locally; each executor starts under
             deploy-mode client      ppml's launcher, which attests it and runs its key agent
                                     (``spark.executorEnv.JAVA_HOME``, :mod:`ppml.tee.launcher`)
cluster      ``--tee X``, k8s://…    driver and executors in TEE pods (pod templates)
             deploy-mode cluster
===========  ======================  ====================================================

Secrets never go on a command line: the RPC secret and every other Spark setting (ppml's, the
user's ``--properties-file`` merged below ``--conf``) are written to one 0600 ``--properties-file``.
Spark's own processes get ``spark.redaction.regex`` extended so ``apikey``/``token``/``key``
values never show in the UI or event log. Spark's Prometheus endpoints are on, under a fixed
metrics namespace (:func:`monitoring_conf`), unless the user's settings say otherwise. Spark
logs warnings and errors only unless ``verbose`` (:mod:`ppml.spark.launch`). On Kubernetes,
:func:`pod_problems` warns of loopback URLs and local paths that would go into pods.

Spark hangs with vague errors when the submission's secret, RPC cipher or TLS settings do not
match the cluster's. Against a standalone master, ``ppml submit`` watches the driver's output for
each such signature and for the "registered with the master" line, and stops the job within
``--registration-timeout`` seconds with a message that names the likely mismatch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ppml.errors import UsageError
from ppml.spark.jvm import classpath_conf, native_session_conf
from ppml.spark.launch import quiet_log_options, spark_home

if TYPE_CHECKING:
    from ppml.tee.agent import KeyAgent
from ppml.spark.session import (
    performance_conf,
    python_environment,
    read_properties_file,
    read_secret_file,
    security_conf,
    write_properties_file,
)

__all__ = ["EXECUTOR_JAVA_HOME", "METRICS_NAMESPACE", "MISMATCH_SIGNATURES", "SubmitOptions", "build_submission",
           "executor_launcher_conf", "monitoring_conf", "pod_problems", "real_java", "spark_submit_path", "submit"]

TEES: Final = ("none", "simulated", "sgx-gramine", "tdx")
#: ``spark.metrics.namespace`` set by ``ppml submit``: Spark prefixes its metrics' names with the
#: application id otherwise, so no dashboard query could name them (docs/monitoring.md).
METRICS_NAMESPACE: Final = "ppml"
#: The executors' ``JAVA_HOME`` on a standalone cluster: its ``bin/java`` is ppml's TEE launcher.
EXECUTOR_JAVA_HOME: Final = Path(__file__).with_name("executor_java_home")

#: Driver log lines that mean the submission's security settings do not match the cluster's.
MISMATCH_SIGNATURES: Final = (
    # Measured on Spark 4.3 standalone: one side speaks Spark's AES auth protocol, the other SASL.
    (re.compile(r"Unknown challenge message|Expected SaslMessage|does not have SASL enabled|"
                r"Unsupported cipher|AEADBadTagException", re.I),
     "RPC encryption mismatch: spark.network.crypto.enabled (or its cipher) differs from the cluster's"),
    # Measured: both sides speak the AES protocol, the secrets differ.
    (re.compile(r"Authentication failed|SaslException|DIGEST-MD5|Mismatched response|Failed to authenticate", re.I),
     "authentication failed: the spark.authenticate secret differs from the cluster's (check --secret-file)"),
    (re.compile(r"SSLHandshakeException|SSLException|not an SSL/TLS record|PKIX path", re.I),
     "TLS failed: spark.ssl settings differ from the cluster's (TLS on one side only, or an untrusted certificate)"),
    # Measured (1 run in 12 on a loaded machine): the master refuses the secret and closes the
    # channel; the driver sees the close first, its handshake thread is interrupted inside the AES
    # handshake, and "Authentication failed" is never printed. Last, so a named cause wins.
    (re.compile(r"at org\.apache\.spark\.network\.crypto\.AuthClientBootstrap\.doSparkAuth"),
     "authentication failed: the cluster closed the connection during Spark's authentication handshake, "
     "as it does when the spark.authenticate secret differs from the cluster's (check --secret-file)"),
    # The same race with spark.network.crypto off here and on in the cluster (measured, 1 run in 4
    # with Spark logging at WARN): this side speaks SASL, the cluster (no SASL fallback) closes the
    # channel, and "Unknown challenge message" is never printed.
    (re.compile(r"at org\.apache\.spark\.network\.crypto\.AuthClientBootstrap\.doSaslAuth"),
     "RPC encryption mismatch: the cluster closed the connection when this submission, with "
     "spark.network.crypto.enabled off, authenticated over SASL; the cluster most likely has it on"),
)
_REGISTERED = re.compile(r"Connected to Spark cluster with app ID|Granted executor ID|"
                         r"StandaloneSchedulerBackend.*app ID|SchedulerBackend is ready", re.I)
#: A line of Spark's log at INFO, in the layout of Spark's and ppml's log4j2 configurations.
_INFO_LINE = re.compile(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO ")
_GIVING_UP = re.compile(r"All masters are unresponsive|Application has been killed|"
                        r"Failed to connect to master", re.I)
#: The driver's SparkContext starts talking to the master (StandaloneAppClient, INFO): the
#: registration clock starts here, so an application that never starts Spark is never stopped.
_CONNECTING = re.compile(r"Connecting to master spark://")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SubmitOptions:
    app: str
    app_args: tuple[str, ...] = ()
    master: str = "local[2]"
    deploy_mode: str = "client"
    #: spark-submit's own options, passed through (``--class``, ``--name``, resources, files).
    main_class: str | None = None
    name: str | None = None
    driver_memory: str | None = None
    driver_cores: int | None = None
    executor_memory: str | None = None
    executor_cores: int | None = None
    num_executors: int | None = None
    total_executor_cores: int | None = None
    jars: tuple[str, ...] = ()
    py_files: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    archives: tuple[str, ...] = ()
    #: ``--conf`` settings; they win over ``properties_file``, which wins over ppml's defaults. Both
    #: go into ppml's 0600 properties file, never on spark-submit's command line.
    conf: tuple[tuple[str, str], ...] = ()
    properties_file: Path | None = None
    #: Spark's own INFO logging and spark-submit's --verbose; off, Spark logs warnings and errors only.
    verbose: bool = False
    tee: str = "none"
    policy: tuple[str, ...] = ()
    attestation_url: str | None = None
    attestation_ca: Path | None = None
    enclave_manifest: Path | None = None
    enclave_sig: Path | None = None
    platform_key: Path | None = None
    secret_file: Path | None = None
    event_log_dir: Path | None = None
    registration_timeout: float = 60.0
    network_crypto: bool = True
    io_encryption: bool = True
    #: Kubernetes (``--master k8s://…``): image, namespace, and Secret/ConfigMap NAME:KEY references.
    k8s_image: str | None = None
    k8s_namespace: str = "default"
    k8s_rpc_secret: str | None = None
    k8s_kms_credentials: str | None = None
    k8s_ca: str | None = None
    #: Write the pod templates and properties here and print the spark-submit command, without running it.
    render_only: Path | None = None

    def __post_init__(self) -> None:
        if self.tee not in TEES:
            raise UsageError(f"--tee must be one of {', '.join(TEES)}")
        if self.tee != "none":
            if not self.policy:
                raise UsageError(f"--tee {self.tee} needs --policy ID (from `ppml attest register`)")
            if not self.attestation_url:
                raise UsageError(f"--tee {self.tee} needs --attestation-url (or $PPML_AS_URL)")
            if self.tee == "simulated" and not (self.enclave_manifest and self.enclave_sig):
                raise UsageError("--tee simulated needs --enclave-manifest and --enclave-sig (from `ppml enclave`)")
        if self.deploy_mode not in ("client", "cluster"):
            raise UsageError("--deploy-mode is client or cluster")
        if self.deploy_mode == "cluster" and self.master.startswith("spark://") and self.app.endswith(".py"):
            raise UsageError("Spark's standalone master cannot run Python applications in cluster deploy mode; "
                             "use --deploy-mode client, or Kubernetes (k8s://) for cluster mode")
        if self.master.startswith("k8s://") and not (self.k8s_image and self.k8s_rpc_secret):
            raise UsageError("Kubernetes needs --k8s-image and --k8s-rpc-secret SECRET:KEY (the Spark RPC secret "
                             "as a Kubernetes Secret, mounted as a file)")
        for flag, count in (("--driver-cores", self.driver_cores), ("--executor-cores", self.executor_cores),
                            ("--num-executors", self.num_executors),
                            ("--total-executor-cores", self.total_executor_cores)):
            if count is not None and count < 1:
                raise UsageError(f"{flag} must be at least 1")
        for name, _ in self.conf:
            if not name or name != name.strip():
                raise UsageError(f"--conf needs NAME=VALUE with a non-empty name, got {name!r}")
        if self.master.startswith("spark://") and not self.secret_file:
            raise UsageError("a standalone cluster needs the shared RPC secret: --secret-file FILE (0600), the "
                             "same file the master and workers were started with")

    @property
    def mode(self) -> str:
        if self.tee == "none":
            return "local"
        if self.master.startswith("local"):
            return "local-tee"
        return "cluster" if self.deploy_mode == "cluster" else "client"


def spark_submit_path() -> Path:
    return spark_home() / "bin" / "spark-submit"


def tee_environment(options: SubmitOptions) -> dict[str, str]:
    """What a process needs to attest itself (none of it secret: paths, URLs, policy ids)."""
    if options.tee == "none":
        return {}
    env = {"PPML_TEE_BACKEND": options.tee, "PPML_AS_URL": options.attestation_url or "",
           "PPML_TEE_POLICY": ",".join(options.policy)}
    for name, value in (("PPML_AS_CA", options.attestation_ca), ("PPML_ENCLAVE_MANIFEST", options.enclave_manifest),
                        ("PPML_ENCLAVE_SIG", options.enclave_sig), ("PPML_SIM_PLATFORM_KEY", options.platform_key)):
        if value is not None:
            env[name] = str(Path(value).absolute())
    return env


def _ref(value: str, default_key: str) -> tuple[str, str]:
    name, _, key = value.partition(":")
    return name, key or default_key


def _kubernetes_conf(options: SubmitOptions, work_dir: Path) -> Any:
    """Render the pod templates; their Spark settings go with the submission."""
    from ppml.deploy.k8s import ConfigMapFile, PodTemplateInputs, SecretFile, render_pod_templates

    secret_name, secret_key = _ref(options.k8s_rpc_secret or "", "secret")
    inputs = PodTemplateInputs(
        tee=options.tee, rpc_secret=SecretFile(secret=secret_name, key=secret_key),
        tee_environment=tee_environment(options),
        kms_credentials=SecretFile(secret=_ref(options.k8s_kms_credentials, "credentials.json")[0],
                                   key=_ref(options.k8s_kms_credentials, "credentials.json")[1])
        if options.k8s_kms_credentials else None,
        ca_bundle=ConfigMapFile(config_map=_ref(options.k8s_ca, "ca.pem")[0], key=_ref(options.k8s_ca, "ca.pem")[1])
        if options.k8s_ca else None,
    )
    return render_pod_templates(inputs, image=options.k8s_image or "", namespace=options.k8s_namespace,
                                out_dir=work_dir)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#'\"]+")


def pod_problems(options: SubmitOptions, user_conf: Mapping[str, str]) -> list[str]:
    """What would break inside Kubernetes pods: a loopback URL (the KMS or attestation service
    on 127.0.0.1, localhost or ::1 is the pod itself there) in the attestation URL, the
    application's arguments or the user's Spark settings; and a file given as a path on this
    machine (not ``local://`` in the image, nor a remote URL) unless spark-submit is told where to
    upload such files (``spark.kubernetes.file.upload.path``)."""
    from ppml.deploy.manifests import is_loopback_host

    problems = []
    texts = [("--attestation-url", options.attestation_url or ""),
             *(("an application argument", argument) for argument in options.app_args),
             *((f"--conf {name}", value) for name, value in user_conf.items())]
    for where, text in texts:
        for url in _URL.findall(text):
            host = urllib.parse.urlsplit(url).hostname
            if host and is_loopback_host(host):
                problems.append(f"{where} has {url}, a loopback address: in a pod it is the pod itself, not this "
                                "machine; use an address the pods can reach")
    if "spark.kubernetes.file.upload.path" not in user_conf:
        files = [("APP", options.app), *(("--jars", p) for p in options.jars),
                 *(("--py-files", p) for p in options.py_files), *(("--files", p) for p in options.files),
                 *(("--archives", p) for p in options.archives)]
        for flag, path in files:
            if urllib.parse.urlsplit(path).scheme in ("", "file"):
                problems.append(f"{flag} {path} is a path on this machine, which the pods do not have: give "
                                "local:///PATH inside the image, a remote URL, or set "
                                "spark.kubernetes.file.upload.path for spark-submit to upload it")
    return problems


def monitoring_conf() -> dict[str, str]:
    """Spark's Prometheus endpoints on the driver's UI port (nothing to scrape when the user turns
    ``spark.ui.enabled`` off): executor metrics at ``/metrics/executors/prometheus`` and the
    metrics system (DAGScheduler, BlockManager, JVM, app status) at ``/metrics/prometheus``, under
    the fixed namespace :data:`METRICS_NAMESPACE`. Spark's metric names and labels carry source
    names, executor ids and the application's id and name, never configuration values."""
    servlet = "spark.metrics.conf.*.sink.prometheusServlet"
    return {
        "spark.ui.prometheus.enabled": "true",
        f"{servlet}.class": "org.apache.spark.metrics.sink.PrometheusServlet",
        f"{servlet}.path": "/metrics/prometheus",
        "spark.metrics.namespace": METRICS_NAMESPACE,
    }


def build_submission(options: SubmitOptions, work_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The spark-submit argv (no secrets in it) and the environment to run it with.

    Every Spark setting (ppml's, then the user's ``--properties-file``, then ``--conf``) goes into
    one 0600 properties file in ``work_dir``; spark-submit is given that file alone.
    """
    kubernetes = options.master.startswith("k8s://")
    secret = read_secret_file(options.secret_file) if options.secret_file and not kubernetes else None
    user_conf = {**(read_properties_file(options.properties_file) if options.properties_file else {}),
                 **dict(options.conf)}
    conf = {**performance_conf(), **monitoring_conf(), **security_conf(
        secret=secret, network_crypto=options.network_crypto, io_encryption=options.io_encryption)}
    if kubernetes:
        from ppml.deploy.k8s import check_spark_conf

        for problem in pod_problems(options, user_conf):
            warnings.warn(problem, UserWarning, stacklevel=2)
        templates = _kubernetes_conf(options, work_dir)
        conf.update(templates.spark_conf)
        conf.update(user_conf)
        check_spark_conf(conf, templates)
        properties = write_properties_file(conf, work_dir / "spark-ppml.properties")
        argv = [str(spark_submit_path()), "--master", options.master, "--deploy-mode", options.deploy_mode,
                "--properties-file", str(properties), *_common_flags(options), options.app, *options.app_args]
        return argv, _log_environment(options, {**os.environ})
    conf["spark.pyspark.python"] = sys.executable
    conf["spark.pyspark.driver.python"] = sys.executable
    if options.event_log_dir is not None:
        options.event_log_dir.mkdir(parents=True, exist_ok=True)
        conf["spark.eventLog.enabled"] = "true"
        conf["spark.eventLog.dir"] = options.event_log_dir.absolute().as_uri()
    tee_env = tee_environment(options)
    for name, value in tee_env.items():
        conf[f"spark.executorEnv.{name}"] = value
    conf["spark.executorEnv.PYSPARK_PYTHON"] = sys.executable
    if options.master.startswith("spark://"):
        conf.update(executor_launcher_conf())
    # Spark's own Parquet reader and writer do PME with keys from the key agent (the KMS named per
    # job: spark.hadoop.parquet.encryption.kms.instance.id, or per read/write option).
    conf.update({name: value for name, value in native_session_conf().items() if name.startswith("spark.hadoop.")})
    conf.update(user_conf)
    conf.update(classpath_conf(user_conf))
    properties = write_properties_file(conf, work_dir / "spark-ppml.properties")

    argv = [str(spark_submit_path()), "--master", options.master, "--deploy-mode", options.deploy_mode,
            "--properties-file", str(properties), *_common_flags(options), options.app, *options.app_args]
    env = {**os.environ, **tee_env, **python_environment()}
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return argv, _log_environment(options, env)


def real_java() -> Path:
    """The java that Spark's launcher would run here: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate is None or not candidate.is_file():
        found = shutil.which("java")
        if not found:
            raise UsageError("no java: install a Java 17 runtime or set JAVA_HOME")
        candidate = Path(found)
    return candidate.resolve()


def executor_launcher_conf() -> dict[str, str]:
    """Standalone executors start under ppml's TEE runtime (:mod:`ppml.tee.launcher`): their
    ``JAVA_HOME`` is a directory whose ``bin/java`` attests the executor's TEE (as its
    ``PPML_TEE_*`` environment says; with the app's credentials under ``--tee none``) and runs the
    real JVM with a key agent, one per executor. Paths only: the workers must see this machine's
    ppml installation at the same place (they do on one machine, and in ppml's images)."""
    return {"spark.executorEnv.JAVA_HOME": str(EXECUTOR_JAVA_HOME),
            "spark.executorEnv.PPML_PYTHON": sys.executable,
            "spark.executorEnv.PPML_JAVA": str(real_java())}


def _log_environment(options: SubmitOptions, env: dict[str, str]) -> dict[str, str]:
    """Quiet Spark's JVM on this machine (the driver, in client mode) unless ``verbose``. On
    Kubernetes in cluster mode that JVM only submits and watches the driver pod."""
    if not options.verbose:
        env["SPARK_SUBMIT_OPTS"] = quiet_log_options("SPARK_SUBMIT_OPTS", env)
    return env


def _common_flags(options: SubmitOptions) -> list[str]:
    """spark-submit's own options, in its spelling; file lists joined with commas as it takes them."""
    argv: list[str] = []
    for flag, value in (("--class", options.main_class), ("--name", options.name),
                        ("--driver-memory", options.driver_memory), ("--driver-cores", options.driver_cores),
                        ("--executor-memory", options.executor_memory),
                        ("--executor-cores", options.executor_cores), ("--num-executors", options.num_executors),
                        ("--total-executor-cores", options.total_executor_cores)):
        if value is not None:
            argv += [flag, str(value)]
    for flag, paths in (("--jars", options.jars), ("--py-files", options.py_files), ("--files", options.files),
                        ("--archives", options.archives)):
        if paths:
            argv += [flag, ",".join(paths)]
    if options.verbose:
        argv.append("--verbose")
    return argv


def _gate(options: SubmitOptions) -> KeyAgent | None:
    """local-tee/client: the driver side attests before anything is submitted; returns the key
    agent (not started) that serves the driver's processes through the session, or None when the
    attestation failed (already reported). Under ``--tee none`` the agent uses the app's own
    credentials, so the JVM and Python workers get keys the same way in every mode."""
    from ppml.tee.agent import KeyAgent
    from ppml.tee.launcher import attestation_for
    from ppml.tee.runtime import attest_or_report, key_agent_for

    if options.tee == "none":
        from ppml.kms.registry import open_kms

        return KeyAgent(open_kms, tee="none")
    session = attest_or_report(*attestation_for(
        options.tee, attestation_url=options.attestation_url, policy_ids=options.policy,
        attestation_ca=options.attestation_ca, enclave_manifest=options.enclave_manifest,
        enclave_sig=options.enclave_sig, platform_key=options.platform_key,
    ))
    return None if session is None else key_agent_for(session)


def submit(options: SubmitOptions, *, out: object = None) -> int:
    """Run the job; returns spark-submit's exit code (or 1 on a failed gate, 2 on a detected
    misconfiguration)."""
    if options.render_only is not None:
        options.render_only.mkdir(parents=True, exist_ok=True)
        argv, _ = build_submission(options, options.render_only)
        print(shlex.join(argv))
        return 0
    agent_env: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if not options.master.startswith("k8s://"):
            # On Kubernetes the driver pod attests itself; here the gate runs on this machine, and
            # its key agent serves the driver's processes (each standalone executor has its own:
            # executor_launcher_conf). Under --tee none the agent answers with the app's credentials.
            agent = _gate(options)
            if agent is None:
                return 1
            agent_env = stack.enter_context(agent).environment()
        return _submit(options, agent_env)


def _submit(options: SubmitOptions, agent_env: dict[str, str]) -> int:
    with tempfile.TemporaryDirectory(prefix="ppml-submit-") as work:
        argv, env = build_submission(options, Path(work))
        env.update(agent_env)
        # Spark takes seconds to start and, quiet, says nothing meanwhile.
        print(f"ppml: starting Spark ({options.mode} mode, master {options.master}); the job's output follows",
              file=sys.stderr, flush=True)
        if options.master.startswith("spark://"):
            return _run_watched(argv, env, options.registration_timeout, show_info=options.verbose)
        return subprocess.run(argv, env=env, check=False).returncode


def _diagnose(lines: Sequence[str]) -> str | None:
    for pattern, message in MISMATCH_SIGNATURES:
        if any(pattern.search(line) for line in lines):
            return message
    return None


def _run_watched(argv: Sequence[str], env: dict[str, str], timeout: float, *, show_info: bool = True) -> int:
    """Run spark-submit, echo its output, and stop it early on a security mismatch.

    The registration lines it watches for are INFO lines that ppml's quiet log configuration
    keeps for it; unless ``show_info``, INFO lines are not echoed."""
    process = subprocess.Popen(list(argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               bufsize=1)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    started: float | None = None  # when the driver began to connect: an app without Spark never does
    registered = False
    seen: list[str] = []
    giving_up_at: float | None = None
    diagnosis: str | None = None
    while True:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            if show_info or not _INFO_LINE.match(line):
                sys.stdout.write(line)
            if not registered:
                seen.append(line)
                if started is None and _CONNECTING.search(line):
                    started = time.monotonic()
                registered = bool(_REGISTERED.search(line))
                diagnosis = _diagnose([line])
                if giving_up_at is None and _GIVING_UP.search(line):
                    giving_up_at = time.monotonic()
        if not registered and diagnosis is None:
            # Spark logs the refusal and the cause on different threads: give the cause a moment
            # (2 s was measured too short on a loaded 2-core machine: the cause came later).
            if giving_up_at is not None and time.monotonic() - giving_up_at > _CAUSE_GRACE_S:
                diagnosis = _diagnose(seen) or _TIMEOUT_MESSAGE
            elif started is not None and time.monotonic() - started > timeout:
                diagnosis = _diagnose(seen) or _TIMEOUT_MESSAGE
        if diagnosis is not None:
            process.kill()
            process.wait()
            print(f"ppml: error: the job could not join the cluster: {diagnosis}", file=sys.stderr)
            return 2
    return process.wait()


_CAUSE_GRACE_S: Final = 8.0
_TIMEOUT_MESSAGE = ("no registration with the master in time: the cluster's spark.authenticate secret, "
                    "spark.network.crypto or spark.ssl settings most likely differ from this submission's "
                    "(or the master is unreachable)")
