"""The Kubernetes manifests (kustomize tree in ppml/deploy/kustomize): every overlay renders, by
kubectl and by ppml's own renderer, to the golden objects kubectl produced; every object is valid
for the oldest and newest Kubernetes versions kubernetes-validate bundles (cert-manager's CRDs
against their own schema); checkov leaves no failed check the skip file does not explain; and
values a cluster cannot use are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from ppml.cli.deployment import stop_process
from ppml.cli.main import main
from ppml.deploy.manifests import (
    OVERLAYS,
    VALUE_KEYS,
    check_rendered,
    check_values,
    dump_yaml,
    kustomize_build,
    load_yaml,
    read_values,
    render,
    strategic_merge,
    tree,
)
from ppml.errors import UsageError
from server_fixtures import new_database
from servers import free_port

ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).parent / "vectors" / "kustomize"
KUBECTL = shutil.which("kubectl")
VERSIONS = sorted(set(kubernetes_validate.utils.all_versions()),
                  key=lambda v: tuple(int(p) for p in v.split(".")))
OLDEST, NEWEST = VERSIONS[0], kubernetes_validate.utils.latest_version()
CERT_MANAGER = json.loads((VECTORS / "cert-manager-v1.schema.json").read_text())
RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
LOOPBACKS = ("https://127.0.0.1:9000", "https://localhost:9000", "https://[::1]:9000", "https://127.8.0.1",
             "https://LOCALHOST.:9000", "https://[::ffff:127.0.0.1]:9000", "https://0.0.0.0:9000")


def key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    metadata = obj["metadata"]
    return obj["apiVersion"], obj["kind"], metadata.get("namespace", ""), metadata["name"]


def by_key(objects: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], dict[str, Any]]:
    keyed = {key(obj): obj for obj in objects}
    assert len(keyed) == len(objects), "two objects share apiVersion, kind, namespace and name"
    return keyed


def golden(overlay: str) -> list[dict[str, Any]]:
    return load_yaml((VECTORS / f"{overlay}.yaml").read_text(), where=f"{overlay}.yaml")


def find(objects: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name
             and namespace in (None, o["metadata"].get("namespace"))]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def values_file(tmp_path: Path, **changes: str) -> Path:
    values = read_values(tree() / "base" / "values.env")
    values.update(changes)
    path = tmp_path / "values.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


# -- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_both_renderers_give_the_golden_objects(overlay: str) -> None:
    """ppml's renderer always; kubectl too wherever it is installed (it made the goldens)."""
    expected = by_key(golden(overlay))
    python_objects, engine = render(overlay, engine="python")
    assert engine == "python"
    assert by_key(python_objects) == expected
    assert by_key(kustomize_build(tree() / "overlays" / overlay)) == expected
    assert by_key(load_yaml(dump_yaml(python_objects), where="dump")) == expected
    if KUBECTL:
        kubectl_objects, engine = render(overlay, engine="kubectl")
        assert engine == "kubectl"
        assert by_key(kubectl_objects) == expected


def test_without_kubectl_the_python_renderer_renders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What a machine without kubectl (CI) gets from `ppml deploy render`."""
    monkeypatch.setenv("PATH", str(tmp_path))
    objects, engine = render("prod")
    assert engine == "python" and by_key(objects) == by_key(golden("prod"))
    with pytest.raises(UsageError, match="no kubectl"):
        render("dev", engine="kubectl")
    with pytest.raises(UsageError, match="overlay"):
        render("staging")


def test_values_flow_into_every_overlay_alike(tmp_path: Path) -> None:
    values = values_file(tmp_path, image="registry.example/ppml@sha256:" + "ab" * 32,
                         kms_dns_name="kms.example.org", kms_url="https://kms.example.org:9000",
                         attestation_url="https://kms.example.org:9000", pccs_url="https://pccs.example.org/",
                         postgres_url="postgresql://kms@db.example.org/keys", cert_issuer="corp-ca",
                         aesmd_image="registry.example/aesmd:2.26")
    for overlay in OVERLAYS:
        objects, _ = render(overlay, values=values, engine="python")
        if KUBECTL:
            assert by_key(render(overlay, values=values, engine="kubectl")[0]) == by_key(objects)
        text = dump_yaml(objects)
        for marker in ("FROM_VALUES", "ppml-kms.ppml.svc:9000", "ghcr.io"):
            assert marker not in text
        kms = find(objects, "Deployment", "ppml-kms")["spec"]["template"]["spec"]
        assert {c["image"] for c in kms["containers"] + kms.get("initContainers", [])} == {
            "registry.example/ppml@sha256:" + "ab" * 32}
        certificate = find(objects, "Certificate", "ppml-kms-tls")["spec"]
        assert certificate["dnsNames"][0] == certificate["commonName"] == "kms.example.org"
        assert find(objects, "ConfigMap", "ppml-client")["data"] == {
            "PPML_KMS_URL": "https://kms.example.org:9000", "PPML_AS_URL": "https://kms.example.org:9000"}
        qcnl = json.loads(find(objects, "ConfigMap", "ppml-pccs")["data"]["sgx_default_qcnl.conf"])
        assert qcnl["pccs_url"] == "https://pccs.example.org/"
        assert not [o for o in objects if o["metadata"]["name"] == "ppml-values"]
        # tokens name the URL parties reach the service at as their issuer, not the 0.0.0.0 it binds
        serve_args = kms["containers"][0]["args"]
        assert serve_args[serve_args.index("--public-url") + 1] == "https://kms.example.org:9000"
        if overlay == "prod":
            aesmd = find(objects, "DaemonSet", "ppml-aesmd")["spec"]["template"]["spec"]["containers"][0]
            assert aesmd["image"] == "registry.example/aesmd:2.26"
            args = kms["containers"][0]["args"]
            assert args[args.index("--db") + 1] == "postgresql://kms@db.example.org/keys"
            assert certificate["issuerRef"] == {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "corp-ca"}


def test_the_tree_ships_as_package_data() -> None:
    """Every file of the tree matches a package-data glob, so `pip install ppml` users have it."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ppml"]
    base = ROOT / "src" / "ppml"
    files = [p.relative_to(base).as_posix() for p in (base / "deploy" / "kustomize").rglob("*") if p.is_file()]
    assert files and all(any(fnmatch(f, g) and f.count("/") == g.count("/") for g in globs) for f in files), files
    assert set(read_values(tree() / "base" / "values.env")) == set(VALUE_KEYS)


# -- validity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_for_the_oldest_and_newest_kubernetes(overlay: str) -> None:
    objects = golden(overlay)
    crds = 0
    for obj in objects:
        if obj["apiVersion"].startswith("cert-manager.io/"):
            # kubernetes-validate bundles no CRDs: cert-manager's objects meet their own schema.
            jsonschema.validate(obj, {**CERT_MANAGER, "$ref": f"#/$defs/{obj['kind']}"})
            crds += 1
            continue
        for version in (OLDEST, NEWEST):
            kubernetes_validate.validate(obj, version, strict=True)
    assert crds == (2 if overlay == "dev" else 1)
    assert (OLDEST, NEWEST) == ("1.25.0", "1.37.0") or OLDEST < NEWEST


def test_the_cert_manager_schema_is_strict() -> None:
    certificate = find(golden("prod"), "Certificate", "ppml-kms-tls")
    schema = {**CERT_MANAGER, "$ref": "#/$defs/Certificate"}
    jsonschema.validate(certificate, schema)
    for broken in ({"dnsName": ["x"]}, {"privateKey": {"algorithm": "DSA"}}, {"usages": ["server-auth"]},
                   {"issuerRef": {"kind": "ClusterIssuer"}}):
        bad = json.loads(json.dumps(certificate))
        bad["spec"].update(broken)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_non_root_read_only_and_get_secrets_as_files(overlay: str) -> None:
    objects = golden(overlay)
    for name, spec in pod_specs(objects):
        if name == "ppml-aesmd":
            continue  # root, for the host's socket directory: test_aesmd_runs_on_sgx_nodes_only
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"] + spec.get("initContainers", []):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security["runAsUser"] >= 10000
            assert set(container["resources"]) == {"requests", "limits"}
            assert set(container["resources"]["limits"]) == {"cpu", "memory"}
            for env in container.get("env", []):
                assert "valueFrom" not in env, f"{name}: {env['name']} takes a value from an object"
            assert "envFrom" not in container
        for volume in spec["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == 0o400
            # The "restricted" Pod Security Standard's volume types (the namespace ppml enforces it).
            assert set(volume) - {"name"} <= RESTRICTED_VOLUME_TYPES, volume
    text = (VECTORS / f"{overlay}.yaml").read_text()
    assert "kind: Secret\n" not in text, "Secrets are the operator's, never in the tree"


def test_dev_is_one_replica_on_sqlite_with_a_self_signed_certificate() -> None:
    objects = golden("dev")
    kms = find(objects, "Deployment", "ppml-kms")
    assert kms["spec"]["replicas"] == 1 and kms["spec"]["strategy"] == {"type": "Recreate"}
    args = kms["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--db" not in args and not any(a.startswith("--db") for a in args)
    data = next(v for v in kms["spec"]["template"]["spec"]["volumes"] if v["name"] == "data")
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "ppml-kms-data"}}
    assert find(objects, "Issuer", "ppml-selfsigned")["spec"] == {"selfSigned": {}}
    assert find(objects, "Certificate", "ppml-kms-tls")["spec"]["issuerRef"]["name"] == "ppml-selfsigned"


def test_prod_is_replicated_on_postgresql_with_policies_and_a_budget() -> None:
    objects = golden("prod")
    kms = find(objects, "Deployment", "ppml-kms")
    spec = kms["spec"]["template"]["spec"]
    assert kms["spec"]["replicas"] >= 2
    args = spec["containers"][0]["args"]
    assert args[args.index("--db") + 1].startswith("postgresql://")
    assert "--root-key-passphrase-file=/var/run/ppml/root-key/passphrase" in args
    assert {v["name"]: v.get("secret", {}).get("secretName") for v in spec["volumes"] if "secret" in v} == {
        "root-key": "ppml-root-key", "postgres": "ppml-postgres", "tls": "ppml-kms-tls"}
    pdb = find(objects, "PodDisruptionBudget", "ppml-kms")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= kms["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["minAvailable"] < kms["spec"]["replicas"]
    for namespace in ("ppml", "ppml-jobs"):
        deny = find(objects, "NetworkPolicy", "default-deny", namespace)["spec"]
        assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert find(objects, "Certificate", "ppml-kms-tls")["spec"]["issuerRef"]["kind"] == "ClusterIssuer"
    quota = find(objects, "ResourceQuota", "ppml-jobs-sgx", "ppml-jobs")["spec"]["hard"]
    assert set(quota) == {"requests.sgx.intel.com/epc", "requests.sgx.intel.com/enclave"}


def test_aesmd_runs_on_sgx_nodes_only_with_the_device_plugin_resources() -> None:
    objects = golden("prod")
    daemon_set = find(objects, "DaemonSet", "ppml-aesmd", "ppml-jobs")
    spec = daemon_set["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"intel.feature.node.kubernetes.io/sgx": "true"}
    (container,) = spec["containers"]
    sgx = {k: v for k, v in container["resources"]["limits"].items() if k.startswith("sgx.intel.com/")}
    assert set(sgx) == {"sgx.intel.com/epc", "sgx.intel.com/enclave", "sgx.intel.com/provision"}
    assert {k: container["resources"]["requests"][k] for k in sgx} == sgx, "extended resources: requests = limits"
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]} and security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True and security["privileged"] is False
    host_paths = [v["hostPath"] for v in spec["volumes"] if "hostPath" in v]
    assert host_paths == [{"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}]
    assert {"name": "aesmd-socket", "mountPath": "/var/run/aesmd"} in container["volumeMounts"]
    qcnl = next(v for v in spec["volumes"] if v["name"] == "qcnl")
    assert qcnl["configMap"]["name"] == "ppml-pccs"
    assert "ppml-aesmd" not in {o["metadata"]["name"] for o in golden("dev")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_spark_driver_may_manage_its_executors_and_nothing_more(overlay: str) -> None:
    objects = golden(overlay)
    role = find(objects, "Role", "ppml-spark-driver", "ppml-jobs")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    for resource in ("pods", "services", "configmaps", "persistentvolumeclaims"):
        assert {(resource, v) for v in ("create", "get", "list", "watch", "delete")} <= granted
    assert not {r for r, _ in granted} & {"secrets", "*"} and not {v for _, v in granted} & {"*", "escalate", "bind"}
    binding = find(objects, "RoleBinding", "ppml-spark-driver", "ppml-jobs")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ppml-spark-driver", "namespace": "ppml-jobs"}]
    namespaces = {o["metadata"]["name"]: o["metadata"]["labels"] for o in objects if o["kind"] == "Namespace"}
    assert namespaces["ppml"]["pod-security.kubernetes.io/enforce"] == "restricted"


# -- checkov -----------------------------------------------------------------------------------


def checkov_executable() -> Path:
    venv = Path(os.environ.get("PPML_CHECKOV_VENV") or Path(sys.prefix).parent / ".venv-checkov")
    executable = venv / "bin" / "checkov"
    if not executable.exists():
        pytest.fail(f"no checkov at {executable}: `make checkov-venv` creates it (checkov's pins conflict with "
                    "ppml's venv), or set PPML_CHECKOV_VENV")
    return executable


def test_checkov_leaves_no_failed_check_unexplained(tmp_path: Path) -> None:
    skips = yaml.safe_load((tree() / "checkov-skips.yaml").read_text())["skips"]
    for skip in skips:
        assert set(skip) - {"resources"} == {"id", "overlays", "reason"} and len(skip["reason"].split()) >= 8, skip
        assert set(skip["overlays"]) <= set(OVERLAYS)
    executable = checkov_executable()
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    runs = {}
    for overlay in OVERLAYS:
        target = tmp_path / overlay
        target.mkdir()
        shutil.copyfile(VECTORS / f"{overlay}.yaml", target / f"{overlay}.yaml")
        runs[overlay] = subprocess.Popen(
            [str(executable), "-d", str(target), "--framework", "kubernetes", "-o", "json", "--skip-download",
             "--quiet", "--compact"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for overlay, run in runs.items():
        stdout, stderr = run.communicate(timeout=180)
        report = json.loads(stdout)
        report = report[0] if isinstance(report, list) else report
        assert report["summary"]["parsing_errors"] == 0, stderr[-2000:]
        assert report["summary"]["passed"] > 50
        failed = {(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]}
        mine = [s for s in skips if overlay in s["overlays"]]

        def explains(skip: dict[str, Any], check: str, resource: str) -> bool:
            return bool(skip["id"] == check and resource in skip.get("resources", [resource]))

        unexplained = sorted(f for f in failed if not any(explains(s, *f) for s in mine))
        assert not unexplained, f"{overlay}: checkov failures without a reason in checkov-skips.yaml: {unexplained}"
        stale = [(s["id"], resource) for s in mine for resource in s.get("resources", [None])
                 if not any(s["id"] == check and resource in (None, r) for check, r in failed)]
        assert not stale, f"{overlay}: checkov-skips.yaml explains checks that now pass: {stale}"


# -- values a cluster cannot use ---------------------------------------------------------------


@pytest.mark.parametrize("url", LOOPBACKS)
@pytest.mark.parametrize("value", ["kms_url", "attestation_url"])
def test_a_loopback_service_url_is_refused(tmp_path: Path, value: str, url: str) -> None:
    values = values_file(tmp_path, **{value: url})
    for overlay in OVERLAYS:
        with pytest.raises(UsageError, match="loopback"):
            render(overlay, values=values, engine="python")


def test_the_cli_refuses_a_loopback_kms_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = values_file(tmp_path, kms_url="https://127.0.0.1:9000")
    out = tmp_path / "prod.yaml"
    assert main(["deploy", "render", "--overlay", "prod", "--values", str(values), "--out", str(out)]) != 0
    error = capsys.readouterr().err
    assert "kms_url" in error and "loopback" in error and "the pod itself" in error
    assert not out.exists()


def test_the_cli_renders_an_overlay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dev.yaml"
    assert main(["deploy", "render", "--overlay", "dev", "--engine", "python", "--out", str(out)]) == 0
    assert by_key(load_yaml(out.read_text(), where="out")) == by_key(golden("dev"))
    assert main(["deploy", "render", "--overlay", "dev", "--engine", "python", "--out", str(out)]) != 0
    assert "already exists" in capsys.readouterr().err
    assert main(["deploy", "render", "--overlay", "dev", "--engine", "python"]) == 0
    assert by_key(load_yaml(capsys.readouterr().out, where="stdout")) == by_key(golden("dev"))


def test_a_loopback_url_patched_into_the_output_is_refused() -> None:
    objects = golden("prod")
    find(objects, "ConfigMap", "ppml-client")["data"]["PPML_AS_URL"] = "https://localhost:9000"
    with pytest.raises(UsageError, match="PPML_AS_URL"):
        check_rendered(objects)
    objects = golden("prod")
    args = find(objects, "Deployment", "ppml-kms")["spec"]["template"]["spec"]["containers"][0]["args"]
    args[args.index("--db") + 1] = "postgresql://ppml@127.0.0.1/ppml"
    with pytest.raises(UsageError, match="--db"):
        check_rendered(objects)
    objects = golden("dev")
    find(objects, "Certificate", "ppml-kms-tls")["spec"]["dnsNames"].append("localhost")
    with pytest.raises(UsageError, match="Certificate"):
        check_rendered(objects)
    check_rendered(golden("dev"))


@pytest.mark.parametrize(("changes", "message"), [
    ({"kms_url": "http://ppml-kms.ppml.svc:9000"}, "https"),
    ({"pccs_url": "https://127.0.0.1:8081/"}, "loopback"),
    ({"kms_dns_name": "localhost", "kms_url": "https://localhost:9000"}, "loopback"),
    ({"kms_url": "https://other.example:9000"}, "kms_dns_name"),
    ({"postgres_url": "postgresql://ppml:hunter2@db/ppml"}, "password"),
    ({"postgres_url": "mysql://db/ppml"}, "postgresql"),
    ({"postgres_url": "postgresql://ppml@[::1]/ppml"}, "loopback"),
    ({"image": "ppml latest"}, "image"),
    ({"extra": "1"}, "unknown values extra"),
])
def test_bad_values_are_refused(changes: dict[str, str], message: str) -> None:
    values = read_values(tree() / "base" / "values.env")
    values.update(changes)
    with pytest.raises(UsageError, match=message):
        check_values(values)


def test_a_values_file_must_be_complete_and_well_formed(tmp_path: Path) -> None:
    values = read_values(tree() / "base" / "values.env")
    del values["cert_issuer"]
    with pytest.raises(UsageError, match="lack cert_issuer"):
        check_values(values)
    bad = tmp_path / "bad.env"
    bad.write_text("image=a\nimage=b\n")
    with pytest.raises(UsageError, match="set twice"):
        read_values(bad)
    bad.write_text("just words\n")
    with pytest.raises(UsageError, match="KEY=VALUE"):
        read_values(bad)
    with pytest.raises(UsageError, match="no such values file"):
        read_values(tmp_path / "missing.env")


# -- the renderer's kustomize semantics --------------------------------------------------------


def test_strategic_merge_follows_kubernetes_merge_keys() -> None:
    original = {"spec": {"containers": [{"name": "a", "image": "x", "args": ["1", "2"],
                                         "env": [{"name": "E", "value": "1"}]}],
                         "volumes": [{"name": "v", "emptyDir": {}}], "replicas": 1}}
    patch = {"spec": {"containers": [{"name": "a", "args": ["3"], "env": [{"name": "F", "value": "2"}]},
                                     {"name": "b", "image": "y"}],
                      "volumes": [{"name": "v", "emptyDir": None, "persistentVolumeClaim": {"claimName": "c"}}],
                      "replicas": None}}
    merged = strategic_merge(original, patch)
    assert merged == {"spec": {
        "containers": [{"name": "b", "image": "y"},
                       {"name": "a", "image": "x", "args": ["3"],
                        "env": [{"name": "F", "value": "2"}, {"name": "E", "value": "1"}]}],
        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}]}}
    assert original["spec"]["replicas"] == 1, "the original is not changed"
    with pytest.raises(UsageError, match="merge key"):
        strategic_merge({"ports": [{"port": 1}]}, {"ports": [{"port": 2}]})
    with pytest.raises(UsageError, match=r"\$patch"):
        strategic_merge({"a": {}}, {"a": {"$patch": "delete"}})
    assert strategic_merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert strategic_merge({}, {"rules": [{"verbs": ["get"]}]}) == {"rules": [{"verbs": ["get"]}]}


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: n}\ndata: {q.conf: 'a,b,c', x: old}\n"


def test_replacements_with_delimiters_selectors_and_local_config(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {
        "kustomization.yaml": (
            "resources: [c.yaml]\n"
            "configMapGenerator:\n- name: v\n  literals: [k=new]\n"
            "  options: {disableNameSuffixHash: true, annotations: {config.kubernetes.io/local-config: 'true'}}\n"
            "replacements:\n- source: {kind: ConfigMap, name: v, fieldPath: data.k}\n  targets:\n"
            "  - select: {kind: ConfigMap, name: c}\n    fieldPaths: [data.x]\n"
            "  - select: {kind: ConfigMap, name: c}\n    fieldPaths: ['data.[q.conf]']\n"
            "    options: {delimiter: ',', index: 1}\n"),
        "c.yaml": CM})
    objects = kustomize_build(root)
    assert objects == [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"},
                        "data": {"q.conf": "a,new,c", "x": "new"}}]
    if KUBECTL:
        result = subprocess.run([KUBECTL, "kustomize", str(root)], capture_output=True, text=True, check=True)
        assert load_yaml(result.stdout, where="kubectl") == objects


@pytest.mark.parametrize(("kustomization", "message"), [
    ("resources: [c.yaml]\nnamespace: other\n", "namespace: not implemented"),
    ("resources: [c.yaml]\ncommonLabels: {a: b}\n", "commonLabels"),
    ("resources: [c.yaml]\nconfigMapGenerator:\n- name: v\n  literals: [k=v]\n", "disableNameSuffixHash"),
    ("resources: [c.yaml]\npatches:\n- path: p.yaml\n  target: {kind: ConfigMap}\n", "patch fields"),
    ("resources: [c.yaml, c.yaml]\n", "defined twice"),
    ("resources: [missing.yaml]\n", "does not exist"),
])
def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path, kustomization: str, message: str) -> None:
    root = write_tree(tmp_path, {"kustomization.yaml": kustomization, "c.yaml": CM, "p.yaml": CM})
    with pytest.raises(UsageError, match=message):
        kustomize_build(root)


# -- the pods' command lines, run ----------------------------------------------------------------


class Pod:
    """The KMS/AS pod of a rendered overlay, run as local processes: each volume is a directory
    (Secrets and ConfigMaps hold the given files), the init containers run first, then the
    container's own command line. Only what cannot be the same outside a cluster changes:
    ``ppml`` is this interpreter's, the address is loopback on a free port, ``--db`` names the
    test's database."""

    def __init__(self, objects: list[dict[str, Any]], base: Path, files: dict[str, dict[str, bytes]],
                 db_url: str | None = None) -> None:
        spec = find(objects, "Deployment", "ppml-kms")["spec"]["template"]["spec"]
        self.base, self.port, self.db_url = base, free_port(), db_url
        self.volumes = {}
        for volume in spec["volumes"]:
            directory = base / volume["name"]
            directory.mkdir(parents=True)
            source = volume.get("secret", {}).get("secretName") or volume.get("configMap", {}).get("name")
            for item in (volume.get("secret") or volume.get("configMap") or {}).get("items", []):
                (directory / item["path"]).write_bytes(files[source][item["key"]])
            self.volumes[volume["name"]] = directory
        for init in spec.get("initContainers", []):
            argv, env = self._local(init)
            subprocess.run(argv, env=env, check=True, timeout=30)
        self.argv, self.env = self._local(spec["containers"][0])
        self.log = base / "serve.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def _path(self, container: dict[str, Any], text: str) -> str:
        for mount in container.get("volumeMounts", []):
            if text == mount["mountPath"] or text.startswith(mount["mountPath"] + "/"):
                return str(self.volumes[mount["name"]]) + text[len(mount["mountPath"]):]
        return text

    def _local(self, container: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
        command = [self._path(container, part) for part in container["command"]]
        command = ([sys.executable, "-m", "ppml.cli.main", *command[1:]] if command[0] == "ppml"
                   else [sys.executable, *command[1:]] if command[0] == "python3" else command)
        args = []
        for arg in container.get("args", []):
            flag, sep, value = arg.partition("=")
            if sep and flag.startswith("--"):
                arg = f"{flag}={self._path(container, value)}"
            args.append(self._path(container, arg))
        args = ["--host=127.0.0.1" if a == "--host=0.0.0.0" else f"--port={self.port}" if a == "--port=9000" else a
                for a in args]
        if "--db" in args:
            args[args.index("--db") + 1] = str(self.db_url)
        env = {**os.environ, **{e["name"]: self._path(container, e["value"]) for e in container.get("env", [])}}
        return [*command, *args], env

    def wait_healthy(self, ca: Path, timeout: float = 60) -> None:
        import httpx

        from ppml.kms.tls import client_context

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the pod's ppml serve exited: {self.log.read_text(errors='replace')}")
            try:
                if httpx.get(f"https://127.0.0.1:{self.port}/healthz", verify=client_context(ca), timeout=2).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"the pod's ppml serve never became healthy: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        stop_process(self.process)


def pod_files(tmp_path: Path) -> tuple[dict[str, dict[str, bytes]], Path]:
    """What the operator and cert-manager would put in the Secrets and ConfigMaps."""
    from ppml.kms.tls import ensure_dev_tls

    tls = ensure_dev_tls(tmp_path / "issuer", "127.0.0.1")
    attestation = Path(__file__).parent / "vectors" / "attestation"
    return {
        "ppml-kms-tls": {"tls.crt": tls.server_cert.read_bytes(), "tls.key": tls.server_key.read_bytes()},
        "ppml-root-key": {"passphrase": b"correct horse battery staple\n"},
        "ppml-postgres": {"pgpass": b"*:*:*:ppml:not-used-by-trust-auth\n", "ca.crt": tls.ca_cert.read_bytes()},
        # Intel-signed collateral, as PCCS serves it: the service checks it against Intel's root at start.
        "ppml-dcap-collateral": {"tcb-info.json": (attestation / "tcbInfo.json").read_bytes(),
                                 "qe-identity.json": (attestation / "enclaveIdentity.json").read_bytes()},
    }, tls.ca_cert


@pytest.mark.slow
def test_the_dev_pod_command_line_serves_on_sqlite(tmp_path: Path) -> None:
    files, ca = pod_files(tmp_path)
    pod = Pod(golden("dev"), tmp_path / "pod", files)
    try:
        pod.wait_healthy(ca)
    finally:
        pod.stop()
    assert {"root.key", "admin.credentials"} <= {p.name for p in pod.volumes["data"].iterdir()}


@pytest.mark.slow
@pytest.mark.postgres
def test_two_prod_replicas_serve_from_one_postgresql(tmp_path: Path, pg_cluster: Any) -> None:
    """Both replicas' command lines, on one database, with one root-key passphrase."""
    files, ca = pod_files(tmp_path)
    db_url = new_database(pg_cluster)
    first = Pod(golden("prod"), tmp_path / "replica-1", files, db_url=db_url)
    try:
        first.wait_healthy(ca)
        second = Pod(golden("prod"), tmp_path / "replica-2", files, db_url=db_url)
        try:
            second.wait_healthy(ca)
        finally:
            second.stop()
    finally:
        first.stop()
    pgpass = first.volumes["pgpass"] / "pgpass"
    assert pgpass.stat().st_mode & 0o777 == 0o600 and pgpass.read_bytes() == files["ppml-postgres"]["pgpass"]
    assert (first.volumes["data"] / "admin.credentials").exists()
    assert not (second.volumes["data"] / "admin.credentials").exists(), "the second replica found the database made"
    assert "root.key" not in {p.name for p in first.volumes["data"].iterdir()}
