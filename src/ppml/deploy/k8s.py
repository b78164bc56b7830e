"""Driver and executor pod templates for ``ppml submit --master k8s://… --deploy-mode cluster``.

spark-submit builds its pods from templates (``spark.kubernetes.{driver,executor}.podTemplateFile``)
and then overwrites the image, pull policy, restart policy, memory and CPU, and adds its own env,
volumes, ports and container ``args`` ("Running on Kubernetes", *Pod template properties*); the
container ``command`` and everything else in the template is kept. :func:`render_pod_templates`
writes both templates from the package's ``templates/pod.json`` and returns the Spark settings
that belong with them. The files are JSON, which is YAML: Spark reads either, and ppml needs no
YAML library at run time.

Every pod
    runs as non-root (``runAsUser``/``runAsGroup``/``fsGroup`` 185, the ``spark`` user of
    Spark's images), with seccomp ``RuntimeDefault``, no privilege escalation, every capability
    dropped (SGX needs none: the device plugin hands the container ``/dev/sgx_enclave``) and a
    read-only root file system with ``emptyDir`` scratch at ``/tmp`` and Spark's work dir.
    Executors mount no service-account token: only the driver talks to the API server.

Secrets are files, never environment variables
    Each secret is one key of a Kubernetes Secret, projected alone into its own directory under
    ``/var/run/ppml`` with ``defaultMode: 0400``. Only Secret *names* and keys are ever handled
    here; no secret value is read, written or returned. The pods are non-root, so they read the
    files through ``fsGroup``, and the kubelet's fsGroup ownership change adds group read: the
    file ends up ``0440`` owned by ``root:<fsGroup>`` (kubernetes/kubernetes#57923). That is the
    narrowest mode a non-root container can read a Secret volume with. Secrets and ConfigMaps
    reach the pod through the node, which a TEE does not trust: in ``sgx-gramine`` and ``tdx``
    the CA bundle belongs in the image (:class:`ImageFile`, measured with it), not in a ConfigMap
    the node could swap to impersonate the attestation service or the KMS.

    The Spark RPC secret is read by Spark itself from ``spark.authenticate.secret.driver.file`` and
    ``spark.authenticate.secret.executor.file`` (Spark's security guide: "Spark will not mount
    these files into the containers for you"). With both set, Spark on Kubernetes neither
    generates a per-application secret nor hands it to executors in the ``_SPARK_AUTH_SECRET``
    variable, which anyone allowed to list pods could read. ``spark.authenticate.secret`` itself
    must never be set for a Kubernetes submission: Spark writes every setting into the driver's
    ``spark.properties`` ConfigMap (see :func:`check_spark_conf`).

TEE modes (``--tee``)
    ``sgx-gramine``
        Requests the Intel SGX device plugin's ``sgx.intel.com/epc`` (the enclave's EPC size) and
        ``sgx.intel.com/enclave: 1`` as requests and limits, selects nodes labelled
        ``intel.feature.node.kubernetes.io/sgx: "true"`` by Node Feature Discovery, and runs the
        container as ``gramine-sgx APP`` (``APP.manifest.sgx`` and ``APP.sig`` in the image).
        Gramine gets DCAP quotes from the AESM service over ``/var/run/aesmd/aesm.socket``, so
        the pod mounts the host's ``/var/run/aesmd`` (hostPath, as Intel's SGX admission
        webhook does for ``sgx.intel.com/quote-provider: aesmd``, which is also set). The pod
        needs no ``sgx.intel.com/provision``: the provisioning device is used by the quoting
        enclave inside aesmd, not by the application. ppml's manifests fix ``argv`` (no
        ``loader.insecure__use_cmdline_argv``), so Spark's container ``args`` (``driver …``,
        ``executor``) cannot be ``gramine-sgx``'s: the container command is ``python -m
        ppml.cli.main tee gramine-run --app APP spark-pod``, which (outside the enclave) puts
        Spark's args into ``PPML_GRAMINE_ARGV`` and runs ``gramine-sgx APP``; the manifest
        written by ``ppml image context`` passes that and Spark's variables through by name
        (``loader.env.NAME = { passthrough = true }``, :data:`ppml.deploy.images.PASSTHROUGH_ENV`)
        and runs ``ppml tee gramine-entry``, which attests and then runs Spark's entrypoint.
        Driver and executor use the image's one enclave (:data:`ppml.deploy.images.ENCLAVE_APP`)
        unless ``sgx_driver_app``/``sgx_executor_app`` say otherwise.
        The hostPath volume keeps these pods out of namespaces enforcing the ``baseline`` or
        ``restricted`` Pod Security Standard; every other mode meets ``restricted``.
    ``tdx``
        Sets ``runtimeClassName`` to a confidential-containers runtime class (``kata-qemu-tdx``
        by default), so each pod runs in its own TDX trust domain.
    ``simulated``
        No special resources. Labelled ``ppml.io/tee: simulated`` and annotated
        ``ppml.io/tee-warning``: a SIMULATED TEE gives no protection at all. Rendering warns.
    ``none``
        Nothing TEE-related.

Files the processes need are referenced by path through the PPML environment (from
``ppml.spark.submit.tee_environment``): paths on the submitting machine are replaced by the
in-pod paths below, and a path with no source in the pod is an error, not a silent omission.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final

from ppml.deploy import images
from ppml.errors import UnsafeWarning, UsageError

__all__ = [
    "CA_BUNDLE_PATH",
    "DRIVER_CONTAINER",
    "ENCLAVE_MANIFEST_PATH",
    "ENCLAVE_SIG_PATH",
    "EXECUTOR_CONTAINER",
    "KMS_CREDENTIALS_PATH",
    "RPC_SECRET_PATH",
    "SIMULATED_PLATFORM_KEY_PATH",
    "SIMULATED_WARNING",
    "ConfigMapFile",
    "ImageFile",
    "PodTemplateInputs",
    "PodTemplates",
    "SecretFile",
    "check_spark_conf",
    "pod_environment",
    "pod_manifest",
    "render_pod_templates",
]

TEES: Final = ("none", "simulated", "sgx-gramine", "tdx")
ROLES: Final = ("driver", "executor")

#: Container names Spark is told to build on (``spark.kubernetes.*.podTemplateContainerName``);
#: they are the names Spark itself uses when a template names none.
DRIVER_CONTAINER: Final = "spark-kubernetes-driver"
EXECUTOR_CONTAINER: Final = "spark-kubernetes-executor"

_RUN_DIR: Final = images.POD_RUN_DIR
KMS_CREDENTIALS_PATH: Final = images.KMS_CREDENTIALS_PATH
CA_BUNDLE_PATH: Final = f"{_RUN_DIR}/ca/ca.pem"
RPC_SECRET_PATH: Final = images.RPC_SECRET_PATH
SIMULATED_PLATFORM_KEY_PATH: Final = f"{_RUN_DIR}/simulated-platform-key/platform-key.pem"
ENCLAVE_MANIFEST_PATH: Final = f"{_RUN_DIR}/enclave-manifest/enclave.manifest"
ENCLAVE_SIG_PATH: Final = f"{_RUN_DIR}/enclave-sig/enclave.sig"

SIMULATED_WARNING: Final = ("SIMULATED TEE: no hardware protection. Data in use is readable by the node, "
                            "its administrators and anyone who can read this pod's memory.")

_SECRET_MODE: Final = 0o400
_CONFIG_MODE: Final = 0o444

# Intel SGX device plugin resources and NFD label (intel/intel-device-plugins-for-kubernetes:
# cmd/sgx_plugin, pkg/webhooks/sgx); AESM socket directory as Gramine and Intel's webhook use it.
_SGX_EPC: Final = "sgx.intel.com/epc"
_SGX_ENCLAVE: Final = "sgx.intel.com/enclave"
_SGX_NODE_LABEL: Final = "intel.feature.node.kubernetes.io/sgx"
_SGX_QUOTE_PROVIDER: Final = "sgx.intel.com/quote-provider"
_AESMD_DIR: Final = "/var/run/aesmd"
_AESMD_VOLUME: Final = "aesmd-socket"  # the name Intel's webhook looks for before adding its own

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?\Z")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")


def _check_subdomain(what: str, name: str) -> None:
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise UsageError(f"{what} {name!r} is not a valid Kubernetes name (lower-case DNS subdomain)")


def _check_key(what: str, key: str) -> None:
    if len(key) > 253 or not _DATA_KEY.match(key) or key in (".", ".."):
        raise UsageError(f"{what} key {key!r} is not a valid Secret/ConfigMap key")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SecretFile:
    """One key of a Kubernetes Secret, mounted read-only as a file. Names the Secret; never holds
    its data (create it with ``kubectl create secret generic NAME --from-file=KEY=FILE``)."""

    secret: str
    key: str

    def __post_init__(self) -> None:
        _check_subdomain("Secret", self.secret)
        _check_key(f"Secret {self.secret}", self.key)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConfigMapFile:
    """One key of a ConfigMap (``data`` or ``binaryData``), mounted read-only: public material only."""

    config_map: str
    key: str

    def __post_init__(self) -> None:
        _check_subdomain("ConfigMap", self.config_map)
        _check_key(f"ConfigMap {self.config_map}", self.key)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ImageFile:
    """A file already in the container image at ``path``. For ``sgx-gramine`` this is the place for
    the CA bundle: a Gramine trusted file is measured into ``mr_enclave``, while a Secret or
    ConfigMap is whatever the node hands the pod."""

    path: str

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or any(c.isspace() for c in self.path):
            raise UsageError(f"image file {self.path!r} must be an absolute path without spaces")


FileSource = SecretFile | ConfigMapFile | ImageFile

# PPML variables that hold a path, and the in-pod path each gets from its source.
_PATH_VARIABLES: Final = {
    "PPML_AS_CA": ("ca_bundle", CA_BUNDLE_PATH),
    "PPML_KMS_CA": ("ca_bundle", CA_BUNDLE_PATH),
    "PPML_KMS_CREDENTIALS": ("kms_credentials", KMS_CREDENTIALS_PATH),
    "PPML_ENCLAVE_MANIFEST": ("enclave_manifest", ENCLAVE_MANIFEST_PATH),
    "PPML_ENCLAVE_SIG": ("enclave_sig", ENCLAVE_SIG_PATH),
    "PPML_SIM_PLATFORM_KEY": ("simulated_platform_key", SIMULATED_PLATFORM_KEY_PATH),
}
_FLAG_FOR: Final = {
    "ca_bundle": "the CA bundle (ca_bundle=)",
    "kms_credentials": "the KMS app credentials (kms_credentials=)",
    "enclave_manifest": "the enclave manifest (enclave_manifest=)",
    "enclave_sig": "the enclave SIGSTRUCT (enclave_sig=)",
    "simulated_platform_key": "the simulated platform key (simulated_platform_key=)",
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PodTemplateInputs:
    """Everything the pod templates depend on besides image and namespace; no secret values.

    ``tee_environment`` is ``ppml.spark.submit.tee_environment(options)`` (backend, attestation
    URL, policy ids, and paths on the submitting machine, which are replaced by in-pod paths).
    ``rpc_secret`` is required: without it Spark generates the RPC secret and passes it to
    executors in an environment variable. ``sgx_epc`` should match the manifest's
    ``sgx.enclave_size``; ``sgx_driver_app``/``sgx_executor_app`` are what ``gramine-sgx`` is
    given (the manifest path without ``.manifest.sgx``). ``sgx_device_group`` is added to
    ``supplementalGroups`` for nodes whose ``/dev/sgx_enclave`` is not world-accessible.
    ``node_selector`` replaces the TEE's default node selection when given.
    """

    tee: str
    rpc_secret: SecretFile
    tee_environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    kms_credentials: SecretFile | None = None
    ca_bundle: FileSource | None = None
    enclave_manifest: ConfigMapFile | ImageFile | None = None
    enclave_sig: ConfigMapFile | ImageFile | None = None
    simulated_platform_key: SecretFile | None = None
    sgx_epc: str = "4Gi"
    sgx_driver_app: str = images.ENCLAVE_APP
    sgx_executor_app: str = images.ENCLAVE_APP
    sgx_device_group: int | None = None
    tdx_runtime_class: str = "kata-qemu-tdx"
    node_selector: Mapping[str, str] | None = None
    run_as_user: int = 185
    run_as_group: int = 185
    python: str = "python3"
    spark_entrypoint: str = "/opt/entrypoint.sh"
    service_account: str | None = None

    def __post_init__(self) -> None:
        if self.tee not in TEES:
            raise UsageError(f"tee must be one of {', '.join(TEES)}, not {self.tee!r}")
        object.__setattr__(self, "tee_environment", dict(self.tee_environment))
        if self.node_selector is not None:
            object.__setattr__(self, "node_selector", dict(self.node_selector))
        for name in self.tee_environment:
            if not _ENV_NAME.match(name):
                raise UsageError(f"{name!r} is not an environment variable name")
        if not _QUANTITY.match(self.sgx_epc):
            raise UsageError(f"sgx_epc {self.sgx_epc!r} is not a Kubernetes quantity such as 4Gi")
        for what, app in (("sgx_driver_app", self.sgx_driver_app), ("sgx_executor_app", self.sgx_executor_app)):
            if not app or any(c.isspace() for c in app):
                raise UsageError(f"{what} {app!r} must be a gramine-sgx application path without spaces")
        _check_subdomain("runtime class", self.tdx_runtime_class)
        if self.service_account is not None:
            _check_subdomain("service account", self.service_account)
        for label, value in (self.node_selector or {}).items():
            if not label or len(value) > 63 or not _LABEL_VALUE.match(value):
                raise UsageError(f"node selector {label}={value!r} is not a valid label")
        if not (self.run_as_user > 0 and self.run_as_group > 0):
            raise UsageError("pods run as non-root: run_as_user and run_as_group must be positive")
        if self.sgx_device_group is not None and self.sgx_device_group < 0:
            raise UsageError("sgx_device_group must be a group id")
        if self.python == "" or any(c.isspace() for c in self.python):
            raise UsageError(f"python {self.python!r} must be an executable name or path without spaces")
        if not self.spark_entrypoint.startswith("/") or any(c.isspace() for c in self.spark_entrypoint):
            raise UsageError(f"spark_entrypoint {self.spark_entrypoint!r} must be an absolute path without spaces")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PodTemplates:
    """The rendered templates, the Spark settings to submit with them and the PPML environment the
    templates set (none of it secret)."""

    driver: Path
    executor: Path
    spark_conf: dict[str, str]
    environment: dict[str, str]


def pod_environment(inputs: PodTemplateInputs) -> dict[str, str]:
    """The PPML environment of both containers: the TEE environment with in-pod paths.

    Raises:
        UsageError: the TEE environment does not match ``inputs.tee``, names a file on the
            submitting machine that has no source in the pod, or a file source is given that the
            mode does not use.
    """
    tee, given = inputs.tee, inputs.tee_environment
    backend = given.get("PPML_TEE_BACKEND")
    if tee == "none":
        if given:
            raise UsageError(f"--tee none takes no TEE environment, got {', '.join(sorted(given))}")
    else:
        if backend != tee:
            raise UsageError(f"the TEE environment is for {backend or 'no TEE'}, not --tee {tee}")
        for required in ("PPML_AS_URL", "PPML_TEE_POLICY"):
            if not given.get(required):
                raise UsageError(f"--tee {tee} needs {required} in the TEE environment")
    if tee != "simulated":
        for field in ("enclave_manifest", "enclave_sig", "simulated_platform_key"):
            if getattr(inputs, field) is not None:
                raise UsageError(f"{_FLAG_FOR[field]} is only used with --tee simulated")
    else:
        for field in ("enclave_manifest", "enclave_sig", "simulated_platform_key"):
            if getattr(inputs, field) is None:
                # A platform key made inside a pod is one the attestation service does not trust.
                raise UsageError(f"--tee simulated on Kubernetes needs {_FLAG_FOR[field]}")

    env = {name: value for name, value in given.items() if name not in _PATH_VARIABLES}
    for name in sorted(given.keys() & _PATH_VARIABLES.keys()):
        field, _ = _PATH_VARIABLES[name]
        if getattr(inputs, field) is None:
            raise UsageError(f"{name} names a file on this machine ({given[name]}); pods need "
                             f"{_FLAG_FOR[field]} from a Secret, ConfigMap or the image")
    for name, (field, pod_path) in _PATH_VARIABLES.items():
        source = getattr(inputs, field)
        if source is not None:
            env[name] = source.path if isinstance(source, ImageFile) else pod_path
    return dict(sorted(env.items()))


def _file_volume(name: str, source: SecretFile | ConfigMapFile,
                 pod_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A volume projecting only ``source.key`` as ``pod_path``'s file name, and its read-only mount."""
    mount_dir, filename = pod_path.rsplit("/", 1)
    items = [{"key": source.key, "path": filename}]
    if isinstance(source, SecretFile):
        volume = {"name": name, "secret": {"secretName": source.secret, "items": items,
                                           "defaultMode": _SECRET_MODE, "optional": False}}
    else:
        volume = {"name": name, "configMap": {"name": source.config_map, "items": items,
                                              "defaultMode": _CONFIG_MODE, "optional": False}}
    return volume, {"name": name, "mountPath": mount_dir, "readOnly": True}


def _base_pod() -> dict[str, Any]:
    text = resources.files("ppml.deploy").joinpath("templates", "pod.json").read_text(encoding="utf-8")
    pod: dict[str, Any] = json.loads(text)
    return pod


def pod_manifest(role: str, inputs: PodTemplateInputs, *, image: str) -> dict[str, Any]:
    """The pod template for ``role`` (``driver`` or ``executor``) as a dict; pure, no I/O.

    Raises:
        UsageError: as :func:`pod_environment`, or for an unknown role or an empty image.
    """
    if role not in ROLES:
        raise UsageError(f"role must be driver or executor, not {role!r}")
    if not image or any(c.isspace() for c in image):
        raise UsageError(f"image {image!r} must be an image reference without spaces")
    env = pod_environment(inputs)
    pod = copy.deepcopy(_base_pod())
    metadata, spec = pod["metadata"], pod["spec"]
    container = spec["containers"][0]
    container["name"] = DRIVER_CONTAINER if role == "driver" else EXECUTOR_CONTAINER
    container["image"] = image
    container["env"] = [{"name": name, "value": value} for name, value in env.items()]
    security = spec["securityContext"]
    security["runAsUser"], security["runAsGroup"], security["fsGroup"] = (
        inputs.run_as_user, inputs.run_as_group, inputs.run_as_group)
    if role == "executor":
        spec["automountServiceAccountToken"] = False
    if inputs.tee != "sgx-gramine":
        # The pod's TEE runtime wraps Spark's entrypoint (which Spark runs with "driver …" or
        # "executor"): it attests, serves the JVM and Python processes through one key agent and
        # puts ppml's JVM library on the class path. (Under Gramine the enclave's manifest runs it.)
        container["command"] = [inputs.python, "-m", "ppml.cli.main", "tee", "launch", "--", inputs.spark_entrypoint]

    files: list[tuple[str, FileSource | None, str]] = [
        ("ppml-spark-rpc-secret", inputs.rpc_secret, RPC_SECRET_PATH),
        ("ppml-kms-credentials", inputs.kms_credentials, KMS_CREDENTIALS_PATH),
        ("ppml-ca", inputs.ca_bundle, CA_BUNDLE_PATH),
        ("ppml-enclave-manifest", inputs.enclave_manifest, ENCLAVE_MANIFEST_PATH),
        ("ppml-enclave-sig", inputs.enclave_sig, ENCLAVE_SIG_PATH),
        ("ppml-simulated-platform-key", inputs.simulated_platform_key, SIMULATED_PLATFORM_KEY_PATH),
    ]
    for volume_name, source, pod_path in files:
        if source is None or isinstance(source, ImageFile):
            continue
        volume, mount = _file_volume(volume_name, source, pod_path)
        spec["volumes"].append(volume)
        container["volumeMounts"].append(mount)

    if inputs.tee != "none":
        metadata["labels"]["ppml.io/tee"] = inputs.tee
    if inputs.tee == "simulated":
        metadata["annotations"]["ppml.io/tee-warning"] = SIMULATED_WARNING
    elif inputs.tee == "tdx":
        spec["runtimeClassName"] = inputs.tdx_runtime_class
    elif inputs.tee == "sgx-gramine":
        sgx = {_SGX_EPC: inputs.sgx_epc, _SGX_ENCLAVE: "1"}
        container["resources"] = {"requests": dict(sgx), "limits": dict(sgx)}
        app = inputs.sgx_driver_app if role == "driver" else inputs.sgx_executor_app
        # Spark appends its args (driver …, executor); gramine-run carries them into the enclave.
        container["command"] = [inputs.python, "-m", "ppml.cli.main", "tee", "gramine-run", "--app", app, "spark-pod"]
        container["volumeMounts"].append({"name": _AESMD_VOLUME, "mountPath": _AESMD_DIR, "readOnly": True})
        spec["volumes"].append({"name": _AESMD_VOLUME, "hostPath": {"path": _AESMD_DIR, "type": "Directory"}})
        metadata["annotations"][_SGX_QUOTE_PROVIDER] = "aesmd"
        if inputs.sgx_device_group is not None:
            security["supplementalGroups"] = [inputs.sgx_device_group]
    default_selector = {_SGX_NODE_LABEL: "true"} if inputs.tee == "sgx-gramine" else {}
    selector = inputs.node_selector if inputs.node_selector is not None else default_selector
    if selector:
        spec["nodeSelector"] = dict(selector)
    if not metadata["annotations"]:
        del metadata["annotations"]
    return pod


def render_pod_templates(inputs: PodTemplateInputs, *, image: str, namespace: str,
                         out_dir: Path) -> PodTemplates:
    """Write ``driver-pod-template.json`` and ``executor-pod-template.json`` into ``out_dir``.

    Returns their paths, the Spark settings that go with them (image, namespace, template files
    and container names, the RPC secret files, the Python to run, the driver's service account)
    and the PPML environment the templates set. The environment lives in the templates only:
    Spark appends ``spark.executorEnv.*``/``spark.kubernetes.driverEnv.*`` after the template's
    variables and the last of duplicate names wins, so a client-mode value (a path on this
    machine) would replace the pod's; :func:`check_spark_conf` refuses that.

    Raises:
        UsageError: invalid namespace or image, or as :func:`pod_environment`.
    """
    if len(namespace) > 63 or not _DNS_LABEL.match(namespace):
        raise UsageError(f"namespace {namespace!r} is not a valid Kubernetes namespace")
    if inputs.tee == "simulated":
        warnings.warn("SIMULATED TEE pods: no hardware protection; data in use is readable by the node",
                      UnsafeWarning, stacklevel=2)
    pods = {role: pod_manifest(role, inputs, image=image) for role in ROLES}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {role: out_dir / f"{role}-pod-template.json" for role in ROLES}
    for role, pod in pods.items():
        paths[role].write_text(json.dumps(pod, indent=2) + "\n", encoding="utf-8")

    conf = {
        "spark.kubernetes.namespace": namespace,
        "spark.kubernetes.container.image": image,
        "spark.kubernetes.driver.podTemplateFile": str(paths["driver"].absolute()),
        "spark.kubernetes.executor.podTemplateFile": str(paths["executor"].absolute()),
        "spark.kubernetes.driver.podTemplateContainerName": DRIVER_CONTAINER,
        "spark.kubernetes.executor.podTemplateContainerName": EXECUTOR_CONTAINER,
        "spark.authenticate": "true",
        "spark.authenticate.secret.driver.file": RPC_SECRET_PATH,
        "spark.authenticate.secret.executor.file": RPC_SECRET_PATH,
        "spark.pyspark.python": inputs.python,
        "spark.pyspark.driver.python": inputs.python,
        "spark.executorEnv.PYSPARK_PYTHON": inputs.python,
    }
    if inputs.service_account is not None:
        conf["spark.kubernetes.authenticate.driver.serviceAccountName"] = inputs.service_account
    return PodTemplates(driver=paths["driver"], executor=paths["executor"], spark_conf=conf,
                        environment=pod_environment(inputs))


_SECRET_AS_ENV: Final = ("spark.kubernetes.driver.secretKeyRef.", "spark.kubernetes.executor.secretKeyRef.")
_ENV_PREFIXES: Final = ("spark.executorEnv.", "spark.kubernetes.driverEnv.")


def check_spark_conf(conf: Mapping[str, str], templates: PodTemplates) -> None:
    """Refuse Spark settings that would leak a secret on Kubernetes or override the templates.

    ``spark.authenticate.secret`` would be copied verbatim into the driver's ``spark.properties``
    ConfigMap (mode 0644); ``spark.kubernetes.{driver,executor}.secretKeyRef.*`` turn Secrets into
    environment variables; an env setting that differs from a variable the templates set would win
    over it (Spark appends its env after the template's).

    Raises:
        UsageError: naming the offending setting (never its value).
    """
    for name, value in conf.items():
        if name == "spark.authenticate.secret":
            raise UsageError("spark.authenticate.secret must not be set for Kubernetes: Spark copies it into "
                             "the driver's ConfigMap; mount the secret file (rpc_secret=) instead")
        if name.startswith(_SECRET_AS_ENV):
            raise UsageError(f"{name} turns a Secret into an environment variable; mount it as a file instead")
        prefix = next((p for p in _ENV_PREFIXES if name.startswith(p)), None)
        variable = name[len(prefix):] if prefix else None
        if variable in templates.environment and value != templates.environment[variable]:
            raise UsageError(f"{name} differs from {variable} in the pod templates and would replace it; "
                             "leave the PPML environment to the templates on Kubernetes")
