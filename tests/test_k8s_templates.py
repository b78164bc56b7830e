"""Kubernetes pod templates for cluster mode: valid Pods for every TEE mode, validated offline
against the Kubernetes 1.37 JSON schemas (strict: unknown fields are errors), with secrets only
ever named, never copied."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from ppml.deploy import (
    CA_BUNDLE_PATH,
    DRIVER_CONTAINER,
    EXECUTOR_CONTAINER,
    KMS_CREDENTIALS_PATH,
    RPC_SECRET_PATH,
    SIMULATED_WARNING,
    ConfigMapFile,
    ImageFile,
    PodTemplateInputs,
    PodTemplates,
    SecretFile,
    check_spark_conf,
    pod_manifest,
    render_pod_templates,
)
from ppml.errors import UnsafeWarning, UsageError
from ppml.spark.submit import SubmitOptions, tee_environment

K8S_VERSION = "1.37.0"
TEES = ("none", "simulated", "sgx-gramine", "tdx")
IMAGE = "registry.example/ppml-spark:1.0"
NAMESPACE = "ppml-jobs"

# Recognisable fakes: the names may appear in the templates, the values never.
RPC_SECRET = SecretFile(secret="fake-rpc-secret-name", key="fake-rpc-secret-key")
KMS_SECRET = SecretFile(secret="fake-kms-credentials-name", key="credentials.json")
PLATFORM_KEY_SECRET = SecretFile(secret="fake-platform-key-name", key="platform-key.pem")
CA_CONFIG_MAP = ConfigMapFile(config_map="fake-ca-configmap", key="ca.pem")
ENCLAVE_MANIFEST = ConfigMapFile(config_map="fake-enclave-configmap", key="enclave.manifest")
ENCLAVE_SIG = ConfigMapFile(config_map="fake-enclave-configmap", key="enclave.sig")
SECRET_NAMES = {RPC_SECRET.secret, KMS_SECRET.secret, PLATFORM_KEY_SECRET.secret}
CANARIES = ("CANARY-RPC-SECRET-7f3a9c", "CANARY-KMS-APIKEY-51d2e8", "CANARY-PLATFORM-KEY-0b9e44")

# Pod Security Standards, "restricted" profile: the volume types it allows.
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                           "persistentVolumeClaim", "projected", "secret"}


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """The submitting machine's files, holding the secret values the templates must never see."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "rpc.secret").write_text(CANARIES[0])
    (host / "kms.credentials").write_text(json.dumps({"appid": "app-1", "apikey": CANARIES[1]}))
    (host / "platform-key.pem").write_text(CANARIES[2])
    (host / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (host / "enclave.manifest").write_text("[loader]\n")
    (host / "enclave.sig").write_bytes(b"\0" * 1808)
    for path in host.iterdir():
        path.chmod(0o600)
    return host


def submit_options(tee: str, host: Path) -> SubmitOptions:
    extra: dict[str, Any] = {}
    if tee != "none":
        extra = {"policy": ("policy-1",), "attestation_url": "https://as.example:8443",
                 "attestation_ca": host / "ca.pem"}
    if tee == "simulated":
        extra.update(enclave_manifest=host / "enclave.manifest", enclave_sig=host / "enclave.sig",
                     platform_key=host / "platform-key.pem")
    return SubmitOptions(app="local:///opt/app/query.py", master="k8s://https://127.0.0.1:6443",
                         deploy_mode="cluster", tee=tee, secret_file=host / "rpc.secret",
                         k8s_image="ppml:test", k8s_rpc_secret="spark-rpc-secret", **extra)


def inputs_for(tee: str, host: Path, **changes: Any) -> PodTemplateInputs:
    fields: dict[str, Any] = {"tee": tee, "rpc_secret": RPC_SECRET,
                              "tee_environment": tee_environment(submit_options(tee, host)),
                              "kms_credentials": KMS_SECRET, "ca_bundle": CA_CONFIG_MAP}
    if tee == "simulated":
        fields.update(enclave_manifest=ENCLAVE_MANIFEST, enclave_sig=ENCLAVE_SIG,
                      simulated_platform_key=PLATFORM_KEY_SECRET)
    fields.update(changes)
    return PodTemplateInputs(**fields)


def render(inputs: PodTemplateInputs, out_dir: Path) -> PodTemplates:
    if inputs.tee == "simulated":
        with pytest.warns(UnsafeWarning, match="SIMULATED"):
            return render_pod_templates(inputs, image=IMAGE, namespace=NAMESPACE, out_dir=out_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return render_pod_templates(inputs, image=IMAGE, namespace=NAMESPACE, out_dir=out_dir)


def pods_of(templates: PodTemplates) -> dict[str, dict[str, Any]]:
    return {"driver": json.loads(templates.driver.read_text()),
            "executor": json.loads(templates.executor.read_text())}


@pytest.fixture(params=TEES)
def rendered(request: pytest.FixtureRequest, host_dir: Path, tmp_path: Path) -> tuple[str, PodTemplates]:
    tee = request.param
    return tee, render(inputs_for(tee, host_dir), tmp_path / "out")


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def test_every_mode_renders_valid_driver_and_executor_pods(rendered: tuple[str, PodTemplates]) -> None:
    _tee, templates = rendered
    pods = pods_of(templates)
    for role, pod in pods.items():
        assert kubernetes_validate.validate(pod, K8S_VERSION, strict=True) == "1.37"
        assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1"
        (container,) = pod["spec"]["containers"]
        assert container["name"] == (DRIVER_CONTAINER if role == "driver" else EXECUTOR_CONTAINER)
        assert container["image"] == IMAGE
    assert templates.spark_conf["spark.kubernetes.driver.podTemplateFile"] == str(templates.driver.absolute())
    assert templates.spark_conf["spark.kubernetes.executor.podTemplateFile"] == str(templates.executor.absolute())
    assert templates.spark_conf["spark.kubernetes.driver.podTemplateContainerName"] == DRIVER_CONTAINER
    assert templates.spark_conf["spark.kubernetes.executor.podTemplateContainerName"] == EXECUTOR_CONTAINER
    assert templates.spark_conf["spark.kubernetes.container.image"] == IMAGE
    assert templates.spark_conf["spark.kubernetes.namespace"] == NAMESPACE


def test_the_schema_check_is_real(host_dir: Path) -> None:
    """Negative controls: the strict schema rejects an unknown field and a wrongly typed one."""
    pod = pod_manifest("executor", inputs_for("tdx", host_dir), image=IMAGE)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    typo = json.loads(json.dumps(pod))
    typo["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)
    wrong_type = json.loads(json.dumps(pod))
    wrong_type["spec"]["securityContext"]["runAsNonRoot"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, K8S_VERSION, strict=True)


def test_sgx_resources_node_selection_and_gramine_only_for_sgx(rendered: tuple[str, PodTemplates]) -> None:
    tee, templates = rendered
    for role, pod in pods_of(templates).items():
        spec = pod["spec"]
        (container,) = spec["containers"]
        if tee == "sgx-gramine":
            sgx = {"sgx.intel.com/epc": "4Gi", "sgx.intel.com/enclave": "1"}
            assert container["resources"] == {"requests": sgx, "limits": sgx}
            assert spec["nodeSelector"] == {"intel.feature.node.kubernetes.io/sgx": "true"}
            # The image's one enclave (ppml image context); Spark's args reach it through gramine-run.
            assert container["command"] == ["python3", "-m", "ppml.cli.main", "tee", "gramine-run", "--app",
                                            "/ppml/enclave/ppml", "spark-pod"]
            assert {"name": "aesmd-socket", "hostPath": {"path": "/var/run/aesmd", "type": "Directory"}} \
                in spec["volumes"]
            assert {"name": "aesmd-socket", "mountPath": "/var/run/aesmd", "readOnly": True} \
                in container["volumeMounts"]
            assert pod["metadata"]["annotations"]["sgx.intel.com/quote-provider"] == "aesmd"
            assert "sgx.intel.com/provision" not in json.dumps(pod)
        else:
            assert "sgx.intel.com" not in json.dumps(pod)
            assert "resources" not in container
            # The pod's TEE runtime wraps Spark's entrypoint: attestation and a key agent of its own.
            assert container["command"] == ["python3", "-m", "ppml.cli.main", "tee", "launch", "--",
                                            "/opt/entrypoint.sh"]
            assert "nodeSelector" not in spec
            assert all("hostPath" not in volume for volume in spec["volumes"])


def test_runtime_class_only_for_tdx(rendered: tuple[str, PodTemplates]) -> None:
    tee, templates = rendered
    for pod in pods_of(templates).values():
        if tee == "tdx":
            assert pod["spec"]["runtimeClassName"] == "kata-qemu-tdx"
        else:
            assert "runtimeClassName" not in pod["spec"]


def test_no_secret_value_or_host_path_in_templates_or_conf(rendered: tuple[str, PodTemplates],
                                                           host_dir: Path) -> None:
    _, templates = rendered
    texts = [templates.driver.read_text(), templates.executor.read_text(), json.dumps(templates.spark_conf),
             json.dumps(templates.environment)]
    for text in texts:
        for canary in CANARIES:
            assert canary not in text
        assert str(host_dir) not in text, "a path on the submitting machine leaked into the pods"
    assert "spark.authenticate.secret" not in templates.spark_conf
    for pod in pods_of(templates).values():
        referenced = {value["secretName"] for key, value in walk(pod) if key == "secret"}
        assert referenced <= SECRET_NAMES and RPC_SECRET.secret in referenced
        assert all(key != "secretKeyRef" for key, _ in walk(pod))


def test_environment_holds_no_secrets(rendered: tuple[str, PodTemplates]) -> None:
    tee, templates = rendered
    secretish = re.compile(r"(?i)secret|password|token|api[_-]?key|credential|key")
    for pod in pods_of(templates).values():
        (container,) = pod["spec"]["containers"]
        env = {}
        for variable in container["env"]:
            assert set(variable) == {"name", "value"}, "no valueFrom: a Secret must never become an env var"
            env[variable["name"]] = variable["value"]
        assert env == templates.environment
        for name, value in env.items():
            assert name.startswith("PPML_")
            if secretish.search(name):
                assert value.startswith("/var/run/ppml/"), f"{name} must name a mounted file"
        assert env["PPML_KMS_CREDENTIALS"] == KMS_CREDENTIALS_PATH
        assert env["PPML_AS_CA"] == env["PPML_KMS_CA"] == CA_BUNDLE_PATH
        if tee != "none":
            assert env["PPML_TEE_BACKEND"] == tee
            assert env["PPML_AS_URL"] == "https://as.example:8443"
            assert env["PPML_TEE_POLICY"] == "policy-1"


def test_secret_volumes_are_read_only_single_key_and_0400(rendered: tuple[str, PodTemplates]) -> None:
    _, templates = rendered
    for pod in pods_of(templates).values():
        spec = pod["spec"]
        mounts = {mount["name"]: mount for mount in spec["containers"][0]["volumeMounts"]}
        for volume in spec["volumes"]:
            if "secret" in volume:
                source = volume["secret"]
                assert source["defaultMode"] == 0o400
                assert len(source["items"]) == 1, "only the named key is projected"
                assert mounts[volume["name"]]["readOnly"] is True
            if "configMap" in volume:
                assert volume["configMap"]["defaultMode"] & 0o222 == 0
                assert mounts[volume["name"]]["readOnly"] is True
        # Non-root pods read 0400 Secret files through fsGroup (the kubelet makes them 0440).
        assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"]


def test_rpc_secret_is_a_mounted_file_for_both_sides(rendered: tuple[str, PodTemplates]) -> None:
    _, templates = rendered
    conf = templates.spark_conf
    assert conf["spark.authenticate"] == "true"
    assert conf["spark.authenticate.secret.driver.file"] == RPC_SECRET_PATH
    assert conf["spark.authenticate.secret.executor.file"] == RPC_SECRET_PATH
    mount_dir, filename = RPC_SECRET_PATH.rsplit("/", 1)
    for pod in pods_of(templates).values():
        (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "ppml-spark-rpc-secret"]
        assert volume["secret"]["secretName"] == RPC_SECRET.secret
        assert volume["secret"]["items"] == [{"key": RPC_SECRET.key, "path": filename}]
        assert {"name": "ppml-spark-rpc-secret", "mountPath": mount_dir, "readOnly": True} \
            in pod["spec"]["containers"][0]["volumeMounts"]


def test_restricted_security_context(rendered: tuple[str, PodTemplates]) -> None:
    tee, templates = rendered
    for role, pod in pods_of(templates).items():
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        context = spec["containers"][0]["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["privileged"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "hostNetwork" not in spec and "hostPID" not in spec and "hostIPC" not in spec
        assert spec.get("automountServiceAccountToken", True) is (role == "driver")
        types = {key for volume in spec["volumes"] for key in volume if key != "name"}
        assert types - RESTRICTED_VOLUME_TYPES == ({"hostPath"} if tee == "sgx-gramine" else set())


def test_simulated_pods_carry_the_warning(host_dir: Path, tmp_path: Path) -> None:
    templates = render(inputs_for("simulated", host_dir), tmp_path)
    for pod in pods_of(templates).values():
        assert pod["metadata"]["labels"]["ppml.io/tee"] == "simulated"
        assert pod["metadata"]["annotations"]["ppml.io/tee-warning"] == SIMULATED_WARNING
        assert "no hardware protection" in SIMULATED_WARNING
        env = {v["name"]: v["value"] for v in pod["spec"]["containers"][0]["env"]}
        assert env["PPML_TEE_BACKEND"] == "simulated"
        assert env["PPML_SIM_PLATFORM_KEY"].startswith("/var/run/ppml/")
        assert env["PPML_ENCLAVE_MANIFEST"].startswith("/var/run/ppml/")


def test_none_mode_has_nothing_tee_related(host_dir: Path, tmp_path: Path) -> None:
    templates = render(inputs_for("none", host_dir), tmp_path)
    for pod in pods_of(templates).values():
        assert "ppml.io/tee" not in pod["metadata"]["labels"]
        assert "annotations" not in pod["metadata"]
        assert not any(name.startswith("PPML_TEE") for name in templates.environment)
        assert set(templates.environment) == {"PPML_AS_CA", "PPML_KMS_CA", "PPML_KMS_CREDENTIALS"}


def test_tee_labels(rendered: tuple[str, PodTemplates]) -> None:
    tee, templates = rendered
    for pod in pods_of(templates).values():
        assert pod["metadata"]["labels"].get("ppml.io/tee") == (None if tee == "none" else tee)


def test_rendering_is_deterministic(host_dir: Path, tmp_path: Path) -> None:
    first = render(inputs_for("sgx-gramine", host_dir), tmp_path / "a")
    second = render(inputs_for("sgx-gramine", host_dir), tmp_path / "b")
    assert first.driver.read_bytes() == second.driver.read_bytes()
    assert first.executor.read_bytes() == second.executor.read_bytes()


def test_files_from_the_image_need_no_volume(host_dir: Path, tmp_path: Path) -> None:
    inputs = inputs_for("sgx-gramine", host_dir, ca_bundle=ImageFile(path="/opt/ppml/ca.pem"),
                        sgx_epc="8Gi", sgx_device_group=996)
    templates = render(inputs, tmp_path)
    assert templates.environment["PPML_AS_CA"] == "/opt/ppml/ca.pem"
    for pod in pods_of(templates).values():
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        assert all(volume["name"] != "ppml-ca" for volume in pod["spec"]["volumes"])
        assert pod["spec"]["containers"][0]["resources"]["limits"]["sgx.intel.com/epc"] == "8Gi"
        assert pod["spec"]["securityContext"]["supplementalGroups"] == [996]


def test_check_spark_conf(rendered: tuple[str, PodTemplates], host_dir: Path) -> None:
    tee, templates = rendered
    check_spark_conf(templates.spark_conf, templates)
    with pytest.raises(UsageError, match=r"spark\.authenticate\.secret") as caught:
        check_spark_conf({**templates.spark_conf, "spark.authenticate.secret": CANARIES[0]}, templates)
    assert CANARIES[0] not in str(caught.value)
    with pytest.raises(UsageError, match="environment variable"):
        check_spark_conf({"spark.kubernetes.executor.secretKeyRef.API_KEY": "kms:apikey"}, templates)
    # What client mode sets for executors (paths on this machine) must not reach the pods.
    client_mode = {f"spark.executorEnv.{name}": value
                   for name, value in tee_environment(submit_options(tee, host_dir)).items()}
    if any(value.startswith(str(host_dir)) for value in client_mode.values()):
        with pytest.raises(UsageError, match="pod templates"):
            check_spark_conf(client_mode, templates)
    same = {f"spark.executorEnv.{name}": value for name, value in templates.environment.items()}
    check_spark_conf(same, templates)


def test_paths_on_this_machine_need_a_source_in_the_pod(host_dir: Path) -> None:
    with pytest.raises(UsageError, match="PPML_AS_CA"):
        inputs = inputs_for("tdx", host_dir, ca_bundle=None)
        pod_manifest("driver", inputs, image=IMAGE)
    with pytest.raises(UsageError, match="platform key"):
        pod_manifest("driver", inputs_for("simulated", host_dir, simulated_platform_key=None), image=IMAGE)
    with pytest.raises(UsageError, match="only used with --tee simulated"):
        pod_manifest("driver", inputs_for("tdx", host_dir, enclave_manifest=ENCLAVE_MANIFEST), image=IMAGE)
    with pytest.raises(UsageError, match="not --tee tdx"):
        env = tee_environment(submit_options("sgx-gramine", host_dir))
        pod_manifest("driver", inputs_for("tdx", host_dir, tee_environment=env), image=IMAGE)
    with pytest.raises(UsageError, match="takes no TEE environment"):
        env = tee_environment(submit_options("tdx", host_dir))
        pod_manifest("driver", inputs_for("none", host_dir, tee_environment=env), image=IMAGE)


@pytest.mark.parametrize("bad", [
    lambda: SecretFile(secret="Not_A_Name", key="k"),
    lambda: SecretFile(secret="ok", key="../escape"),
    lambda: ConfigMapFile(config_map="ok", key="a b"),
    lambda: ImageFile(path="relative/ca.pem"),
    lambda: PodTemplateInputs(tee="sgx", rpc_secret=RPC_SECRET),
    lambda: PodTemplateInputs(tee="none", rpc_secret=RPC_SECRET, sgx_epc="lots"),
    lambda: PodTemplateInputs(tee="none", rpc_secret=RPC_SECRET, run_as_user=0),
    lambda: PodTemplateInputs(tee="none", rpc_secret=RPC_SECRET, tee_environment={"BAD-NAME": "x"}),
])
def test_invalid_inputs_are_refused(bad: Any) -> None:
    with pytest.raises(UsageError):
        bad()


def test_invalid_namespace_and_image_are_refused(host_dir: Path, tmp_path: Path) -> None:
    inputs = inputs_for("none", host_dir)
    with pytest.raises(UsageError, match="namespace"):
        render_pod_templates(inputs, image=IMAGE, namespace="Bad_Namespace", out_dir=tmp_path)
    with pytest.raises(UsageError, match="image"):
        render_pod_templates(inputs, image="", namespace=NAMESPACE, out_dir=tmp_path)


def test_base_template_ships_as_package_data() -> None:
    base = resources.files("ppml.deploy").joinpath("templates", "pod.json")
    assert base.is_file()
    kubernetes_validate.validate(json.loads(base.read_text()), K8S_VERSION, strict=True)
