"""Images (issue 16, points 1 and 2): the base Dockerfile, `ppml image context`, jobs under Gramine.

No Docker engine, Gramine or SGX here: the Dockerfiles are parsed (dockerfile-parse, a real
Dockerfile parser), the measurement is ppml's simulated one, and ``gramine-sgx`` is a recording
stand-in (tests/stand_ins/gramine-sgx) that records how it was started and runs nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath

import pytest
from dockerfile_parse import DockerfileParser

from ppml.cli.main import main
from ppml.core.measurement import Sigstruct, generate_enclave_key, write_enclave_key
from ppml.deploy import images
from ppml.deploy.context import ENTRY_ARGV, build_image_context
from ppml.deploy.k8s import KMS_CREDENTIALS_PATH, RPC_SECRET_PATH, PodTemplateInputs, SecretFile, pod_manifest
from ppml.errors import InputNotFound, OutputExists, UsageError
from ppml.tee.gramine import Manifest, Mount, TrustedFile, check_manifest_keys, measure
from ppml.tee.gramine.launch import ARGV_VARIABLE, args_from_environment, encode_args

ROOT = Path(__file__).resolve().parents[1]
BASE_DOCKERFILE = ROOT / "deploy" / "images" / "base" / "Dockerfile"
STAND_INS = Path(__file__).resolve().parent / "stand_ins"
SECRET_APIKEY = "apikey-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "enclave-key.pem"
    write_enclave_key(generate_enclave_key(), path)
    return path


def _put(root: Path, image_path: str, content: bytes) -> None:
    path = root / image_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A few files at the base image's paths (src/ppml/deploy/images.py), as the image has them."""
    root = tmp_path / "rootfs"
    files = {
        images.PYTHON: b"\x7fELF python3.11",
        "/usr/local/lib/python3.11/os.py": b"# stdlib\n",
        "/usr/local/lib/libpython3.11.so.1.0": b"\x7fELF libpython",
        f"{images.SITE_PACKAGES}/ppml/__init__.py": b"# ppml\n",
        f"{images.SITE_PACKAGES}/ppml/__pycache__/__init__.cpython-311.pyc": b"bytecode",
        f"{images.SPARK_JARS}/spark-core_2.13-4.0.0.jar": b"PK\x03\x04",
        f"{images.SPARK_HOME}/bin/spark-submit": b"#!/usr/bin/env bash\n",
        f"{images.VENV}/pyvenv.cfg": b"home = /usr/local/bin\n",
        f"{images.JAVA_HOME}/bin/java": b"\x7fELF java",
        f"{images.JAVA_HOME}/lib/server/libjvm.so": b"\x7fELF libjvm",
        "/etc/java-17-openjdk/security/java.security": b"# java.security\n",
        f"{images.GRAMINE_RUNTIME}/libc.so.6": b"\x7fELF gramine glibc",
        images.GRAMINE_LIBOS: b"\x7fELF libsysdb",
        "/usr/lib/x86_64-linux-gnu/libz.so.1": b"\x7fELF zlib",
        "/usr/bin/bash": b"\x7fELF bash",
        images.SPARK_ENTRYPOINT: b"#!/bin/bash\n",
        "/etc/passwd": b"spark:x:185:185::/tmp:/usr/sbin/nologin\n",
        "/etc/group": b"spark:x:185:\n",
        "/etc/nsswitch.conf": b"passwd: files\n",
    }
    for path, content in files.items():
        _put(root, path, content)
    return root


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "data").mkdir(parents=True)
    (app / "simple_query.py").write_text("print('SimpleQuery')\n")
    (app / "data" / "config.json").write_text('{"rows": 10}\n')
    return app


def _context(tmp_path: Path, fake_root: Path, app_dir: Path, key_path: Path, capsys: pytest.CaptureFixture[str],
             ) -> tuple[Path, dict[str, str]]:
    """`ppml image context` through the CLI; returns CTX and what it printed on stdout."""
    out = tmp_path / "ctx"
    code = main(["image", "context", "--app", str(app_dir), "--enclave-key", str(key_path), "--out", str(out),
                 "--root", str(fake_root), "--base-image", "registry.example/ppml-base@sha256:" + "ab" * 32])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = dict(line.split(": ", 1) for line in captured.out.splitlines())
    assert set(printed) == {"mr_enclave", "mr_signer"}
    assert "simulated" in captured.err  # gramine-sgx-sign is not installed here
    return out, printed


def _instructions(path: Path) -> list[dict[str, str]]:
    parser = DockerfileParser(path=str(path))
    return [i for i in parser.structure if i["instruction"] not in ("COMMENT",)]


def _stages(path: Path) -> list[list[dict[str, str]]]:
    stages: list[list[dict[str, str]]] = []
    for instruction in _instructions(path):
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _env(stage: list[dict[str, str]], args: dict[str, str]) -> dict[str, str]:
    """ENV of a stage, with ${NAME} of earlier ENV/ARG values substituted."""
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction["instruction"] == "ENV":
            for word in shlex.split(instruction["value"]):
                name, _, value = word.partition("=")
                env[name] = re.sub(r"\$\{(\w+)\}", lambda m: {**args, **env}.get(m.group(1), m.group(0)), value)
    return env


def _global_args() -> dict[str, str]:
    """The base Dockerfile's ARGs before its first FROM, with their defaults."""
    found = {}
    for instruction in _instructions(BASE_DOCKERFILE):
        if instruction["instruction"] == "FROM":
            break
        if instruction["instruction"] == "ARG":
            name, _, default = instruction["value"].partition("=")
            found[name] = default
    return found


def _under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# -- the base image's Dockerfile ------------------------------------------------------------------


def test_base_dockerfile_creates_every_path_of_the_layout() -> None:
    parser = DockerfileParser(path=str(BASE_DOCKERFILE))
    text = BASE_DOCKERFILE.read_text()
    assert "NOT BUILT HERE" in text
    global_args = _global_args()
    builder, final = _stages(BASE_DOCKERFILE)
    assert global_args["PYTHON_IMAGE"] == images.BASE_IMAGE
    assert final[0]["value"] == "${PYTHON_IMAGE}" and builder[0]["value"] == "${PYTHON_IMAGE} AS builder"
    assert parser.baseimage == images.BASE_IMAGE  # the parser resolves the ARG

    env = _env(final, global_args)
    assert env["PPML_VENV"] == images.VENV
    assert env["JAVA_HOME"] == images.JAVA_HOME
    assert env["SPARK_HOME"] == images.SPARK_HOME
    assert env["PPML_APP_DIR"] == images.APP_DIR and env["PPML_ENCLAVE_DIR"] == images.ENCLAVE_DIR
    assert env["PPML_SPARK_ENTRYPOINT"] == images.SPARK_ENTRYPOINT
    assert env["GRAMINE_LIBOS"] == images.GRAMINE_LIBOS
    assert env["PATH"].startswith(f"{images.VENV}/bin:{images.JAVA_HOME}/bin:")

    runs = [i["value"] for i in final if i["instruction"] == "RUN"]
    copies = [i["value"].split() for i in final if i["instruction"] == "COPY"]
    installs = " ".join(r for r in runs if "apt-get install" in r)
    packages = {word.strip('"').split("=")[0] for word in installs.split()}
    builder_runs = " ".join(i["value"] for i in builder if i["instruction"] == "RUN")
    for tree in images.RUNTIME_TREES:
        if tree.source == "from":
            assert tree.provided_by == global_args["PYTHON_IMAGE"], tree
        elif tree.source == "apt":
            assert tree.provided_by in packages, tree
        elif tree.source == "venv":
            assert _env(builder, global_args)[tree.provided_by] == tree.path
            assert f'-m venv "${tree.provided_by}"' in builder_runs
            assert ["--from=builder", tree.path, tree.path] in copies
        else:
            assert tree.source == "copy"
            assert any(c[-1] == tree.path and c[-2].endswith(tree.provided_by) for c in copies), tree
            assert (ROOT / next(c for c in copies if c[-1] == tree.path)[-2]).is_file()
    # The image's own directories, the user the pods run as, and the checks that the paths exist.
    tail = runs[-1]
    assert f"mkdir -p {images.APP_DIR} {images.ENCLAVE_DIR}" in tail
    assert f"--uid {images.IMAGE_UID}" in tail and f"--gid {images.IMAGE_GID}" in tail
    for check in ('test -x "${PPML_VENV}/bin/python"', 'test -d "${SPARK_HOME}/jars"',
                  'test -x "${JAVA_HOME}/bin/java"', 'test -f "${GRAMINE_LIBOS}"'):
        assert check in tail
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users == [f"{images.IMAGE_UID}:{images.IMAGE_GID}"]
    assert "ppml.cli.main jvm build" in builder_runs and '"/src[spark,ml,dl,fl]"' in builder_runs


def test_base_dockerfile_pins_gramine_and_intel_packages_from_their_repositories() -> None:
    final = _stages(BASE_DOCKERFILE)[1]
    args = _global_args()
    assert args["GRAMINE_VERSION"] and re.fullmatch(r"\d+(\.\d+){1,3}-jammy1", args["SGX_VERSION"])
    assert re.fullmatch(r"\d+(\.\d+){1,3}-jammy1", args["DCAP_VERSION"])
    for name in ("GRAMINE_VERSION", "SGX_VERSION", "DCAP_VERSION"):
        assert {"instruction": "ARG", "value": name} in [{k: i[k] for k in ("instruction", "value")} for i in final]
    install = next(i["value"] for i in final if i["instruction"] == "RUN" and "apt-get install" in i["value"])
    assert "https://packages.gramineproject.io/ bookworm main" in install
    assert "https://download.01.org/intel-sgx/sgx_repo/ubuntu jammy main" in install
    assert "signed-by=/usr/share/keyrings/gramine-keyring.gpg" in install
    assert "signed-by=/usr/share/keyrings/intel-sgx-deb.asc" in install
    packages = [w.strip('"') for w in install.split() if w.strip('"').startswith(("gramine=", "libsgx-", "sgx-"))]
    names = {p.split("=")[0] for p in packages}
    assert {"gramine", "libsgx-urts", "libsgx-dcap-quote-verify", "libsgx-dcap-default-qpl", "libsgx-dcap-ql",
            "libsgx-aesm-ecdsa-plugin", "sgx-aesm-service"} <= names
    for package in packages:  # every one pinned
        assert re.fullmatch(r"[a-z0-9-]+=\$\{(GRAMINE|SGX|DCAP)_VERSION\}\*?", package), package


# -- ppml image context ---------------------------------------------------------------------------


def test_context_trusts_only_what_the_dockerfiles_put_in_the_image(
        tmp_path: Path, fake_root: Path, app_dir: Path, key_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = _context(tmp_path, fake_root, app_dir, key_path, capsys)
    stage = _instructions(ctx / "Dockerfile")
    assert [i["instruction"] for i in stage] == ["ARG", "FROM", "COPY", "COPY", "USER", "WORKDIR"]
    assert stage[0]["value"] == "PPML_BASE_IMAGE=registry.example/ppml-base@sha256:" + "ab" * 32
    copies = {}
    for instruction in stage:
        if instruction["instruction"] == "COPY":
            *_, source, destination = instruction["value"].split()
            copies[destination.rstrip("/")] = ctx / source
    assert copies == {images.APP_DIR: ctx / "app", images.ENCLAVE_DIR: ctx / "enclave"}

    manifest = Manifest.load(ctx / "enclave" / "ppml.manifest")
    runtime_trees = [t.path for t in images.RUNTIME_TREES]
    from_context = 0
    for trusted in manifest.trusted_files:
        destination = next((d for d in copies if _under(trusted.path, d)), None)
        if destination is not None:
            source = copies[destination] / PurePosixPath(trusted.path).relative_to(destination)
            assert hashlib.sha256(source.read_bytes()).hexdigest() == trusted.sha256
            from_context += 1
        else:
            assert any(_under(trusted.path, tree) for tree in runtime_trees), trusted.path
            host = fake_root / trusted.path.lstrip("/")
            assert hashlib.sha256(host.read_bytes()).hexdigest() == trusted.sha256
    assert from_context == 2  # simple_query.py, data/config.json
    paths = {t.path for t in manifest.trusted_files}
    assert {images.PYTHON, f"{images.JAVA_HOME}/bin/java", f"{images.SPARK_JARS}/spark-core_2.13-4.0.0.jar",
            f"{images.APP_DIR}/simple_query.py", f"{images.GRAMINE_RUNTIME}/libc.so.6"} <= paths
    assert not any(p.endswith(".pyc") for p in paths)


def test_context_manifest_is_strict_with_passthrough_listed(
        tmp_path: Path, fake_root: Path, app_dir: Path, key_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = _context(tmp_path, fake_root, app_dir, key_path, capsys)
    text = (ctx / "enclave" / "ppml.manifest").read_text()
    data = tomllib.loads(text)
    check_manifest_keys(data)
    assert "insecure__" not in text and "argv_src_file" not in text and "env_src_file" not in text
    assert data["loader"]["argv"] == list(ENTRY_ARGV)
    assert data["libos"]["entrypoint"] == images.PYTHON
    assert data["loader"]["entrypoint"]["uri"] == "file:" + images.GRAMINE_LIBOS
    env = data["loader"]["env"]
    passthrough = sorted(k for k, v in env.items() if v == {"passthrough": True})
    assert passthrough == sorted(images.PASSTHROUGH_ENV) and ARGV_VARIABLE in passthrough
    assert env["PPML_TEE_BACKEND"] == "sgx-gramine" and env["JAVA_HOME"] == images.JAVA_HOME
    assert all(isinstance(v, str) for k, v in env.items() if k not in passthrough)
    assert data["sgx"]["remote_attestation"] == "dcap" and data["sgx"]["debug"] is False
    assert data["sys"]["enable_extra_runtime_domain_names_conf"] is True  # Service names resolve in pods
    assert data["sgx"]["file_check_policy"] == "strict"
    # Only the pods' Secret files (made per deployment, never hashable at build time) are allowed.
    assert data["sgx"]["allowed_files"] == sorted("file:" + p for p in images.POD_SECRET_FILES)
    assert images.KMS_CREDENTIALS_PATH == KMS_CREDENTIALS_PATH and images.RPC_SECRET_PATH == RPC_SECRET_PATH
    mounts = data["fs"]["mounts"]
    assert mounts[0] == {"path": "/lib", "uri": "file:" + images.GRAMINE_RUNTIME}
    assert mounts[1] == {"type": "tmpfs", "path": "/tmp"}
    assert all(m["uri"] == "file:" + m["path"] for m in mounts[2:])  # the rest are identity mounts
    assert {m["path"] for m in mounts[2:]} == {"/etc", "/opt", images.APP_DIR, "/usr/bin", images.JAVA_HOME,
                                                 "/usr/lib/x86_64-linux-gnu", "/usr/local/bin", "/usr/local/lib",
                                                 images.POD_RUN_DIR}


def test_measurement_recomputes_from_the_context(
        tmp_path: Path, fake_root: Path, app_dir: Path, key_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, printed = _context(tmp_path, fake_root, app_dir, key_path, capsys)
    recomputed = measure(ctx / "enclave" / "ppml.manifest", key_path, tool=None)
    sig = Sigstruct.from_bytes((ctx / "enclave" / "ppml.sig").read_bytes())
    assert printed["mr_enclave"] == recomputed.mr_enclave.hex() == sig.enclave_hash.hex()
    assert printed["mr_signer"] == recomputed.mr_signer.hex() == sig.mr_signer.hex()
    assert (ctx / "measurement.txt").read_text().startswith(
        f"mr_enclave: {printed['mr_enclave']}\nmr_signer: {printed['mr_signer']}\n")
    # The measurement commits to the application: one changed byte, another mr_enclave.
    (app_dir / "simple_query.py").write_text("print('SimpleQuery!')\n")
    changed = build_image_context(app_dir=app_dir, enclave_key=key_path, out=tmp_path / "ctx2", root=fake_root,
                                  tool=None)
    assert changed.measurement.mr_enclave.hex() != printed["mr_enclave"]


def test_the_key_never_enters_the_context(
        tmp_path: Path, fake_root: Path, app_dir: Path, key_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = _context(tmp_path, fake_root, app_dir, key_path, capsys)
    key_bytes = key_path.read_bytes().strip()
    for path in ctx.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert key_bytes not in content and b"PRIVATE KEY" not in content, path
    assert {p.name for p in ctx.iterdir()} == {"Dockerfile", ".dockerignore", "app", "enclave", "measurement.txt"}
    assert {p.name for p in (ctx / "enclave").iterdir()} == {"ppml.manifest", "ppml.sig"}
    dockerfile = (ctx / "Dockerfile").read_text()
    assert "ADD " not in dockerfile and "--secret" not in dockerfile and "--mount" not in dockerfile
    assert (ctx / ".dockerignore").read_text().splitlines()[1:] == ["*", "!app", "!enclave"]


def test_bad_input_is_refused_at_build_time(
        tmp_path: Path, fake_root: Path, app_dir: Path, key_path: Path) -> None:
    def build(out: Path, app: Path = app_dir, key: Path = key_path, root: Path = fake_root) -> None:
        build_image_context(app_dir=app, enclave_key=key, out=out, root=root, tool=None)

    with pytest.raises(UsageError, match="overlap"):
        build(app_dir / "ctx")
    with pytest.raises(UsageError, match="overlap"):
        build(tmp_path)  # the application would be inside the context
    inside = app_dir / "enclave-key.pem"
    inside.write_bytes(key_path.read_bytes())
    with pytest.raises(UsageError, match="inside"):
        build(tmp_path / "ctx", key=inside)
    inside.unlink()
    # Another private key, under any name, found by its content.
    write_enclave_key(generate_enclave_key(), app_dir / "data" / "notes.txt")
    with pytest.raises(UsageError, match="holds a private key"):
        build(tmp_path / "ctx")
    (app_dir / "data" / "notes.txt").unlink()
    # ... also behind a certificate in the same file.
    bundle = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (app_dir / "tls.pem").write_bytes(bundle + b"-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n")
    with pytest.raises(UsageError, match="holds a private key"):
        build(tmp_path / "ctx")
    (app_dir / "tls.pem").write_bytes(bundle)  # a certificate alone is public and fine
    # The key's bytes pasted into a file.
    (app_dir / "settings.py").write_bytes(b"KEY = '''" + key_path.read_bytes() + b"'''\n")
    with pytest.raises(UsageError, match="holds a private key"):
        build(tmp_path / "ctx")
    (app_dir / "settings.py").unlink()
    # A trusted file missing from the base image's file system.
    java = fake_root / images.JAVA_HOME.lstrip("/")
    java.rename(tmp_path / "java-moved")
    with pytest.raises(InputNotFound) as missing:
        build(tmp_path / "ctx")
    assert "openjdk-17-jre-headless" in (missing.value.hint or "")
    (tmp_path / "java-moved").rename(java)
    assert not (tmp_path / "ctx").exists()  # nothing half-written
    build(tmp_path / "ctx")
    with pytest.raises(OutputExists):
        build(tmp_path / "ctx")


# -- the manifest: documented keys, no insecure__, passthrough ------------------------------------


def _small_manifest() -> Manifest:
    return Manifest(libos_entrypoint="/usr/local/bin/python3.11", argv=("/opt/ppml/venv/bin/python", "-m", "x"),
                    env=(("A", "1"),), passthrough_env=("PPML_GRAMINE_ARGV", "SPARK_DRIVER_URL"),
                    mounts=("/usr",), extra_mounts=(Mount(path="/lib", uri="file:/usr/lib/gramine"),
                                                    Mount(path="/tmp", type="tmpfs")),
                    trusted_files=(TrustedFile(path="/usr/bin/x", sha256="0" * 64),))


def test_manifest_with_passthrough_and_mounts_reads_back() -> None:
    manifest = _small_manifest()
    text = manifest.to_toml()
    assert "loader.env.PPML_GRAMINE_ARGV = { passthrough = true }" in text
    assert Manifest.from_toml(text) == manifest
    assert Manifest.from_toml(text).to_toml() == text
    with pytest.raises(UsageError, match="both fixed"):
        Manifest(libos_entrypoint="/x", argv=("/x",), env=(("A", "1"),), passthrough_env=("A",), trusted_files=())
    with pytest.raises(UsageError, match="tmpfs mount has no URI"):
        Mount(path="/tmp", uri="file:/tmp", type="tmpfs")
    with pytest.raises(UsageError, match="passthrough"):
        Manifest.from_toml(text.replace("{ passthrough = true }", "{ passthrough = false }", 1))


@pytest.mark.parametrize("line", [
    "loader.insecure__use_cmdline_argv = true",
    "loader.insecure__disable_aslr = true",
    "sys.insecure__allow_eventfd = true",
    "sgx.insecure__rpc_thread_num = 4",
    'fs.insecure__keys.default = "00112233445566778899aabbccddeeff"',
])
def test_any_insecure_option_is_refused(line: str, tmp_path: Path, key_path: Path) -> None:
    text = _small_manifest().to_toml().replace('loader.log_level = "error"\n', f'loader.log_level = "error"\n{line}\n')
    with pytest.raises(UsageError, match="insecure__"):
        Manifest.from_toml(text)
    manifest = tmp_path / "m.manifest"
    manifest.write_text(text)
    with pytest.raises(UsageError, match="insecure__"):  # and neither measured nor signed
        measure(manifest, key_path, tool=None)


@pytest.mark.parametrize("line", ["sgx.thread_num = 8", "loader.debug_type = \"inline\"", "sgx.trusted_file = []",
                                  "libos.entrypoint_sha = \"x\""])
def test_undocumented_manifest_keys_are_refused(line: str) -> None:
    text = _small_manifest().to_toml() + line + "\n"
    with pytest.raises(UsageError, match="not a documented Gramine manifest key"):
        Manifest.from_toml(text)


def test_documented_keys_pass_the_check() -> None:
    check_manifest_keys(tomllib.loads(
        'loader.entrypoint = "file:/l"\nlibos.entrypoint = "/x"\nloader.env.X = { value = "1" }\n'
        'sys.stack.size = "1M"\nsgx.seal_key.flags_mask = "0xff"\nsgx.allowed_ioctls = [{ request_code = 1 }]\n'
        'fs.mounts = [{ type = "encrypted", path = "/e", uri = "file:/e", key_name = "_sgx_mrenclave" }]\n'))
    with pytest.raises(UsageError, match="undocumented key 'hash'"):
        check_manifest_keys(tomllib.loads('sgx.trusted_files = [{ uri = "file:/x", hash = "0" }]\n'))


# -- jobs start inside Gramine --------------------------------------------------------------------


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The recording stand-in for gramine-sgx first on PATH; returns the file it records to."""
    record = tmp_path / "gramine-sgx-record.json"
    monkeypatch.setenv("PATH", f"{STAND_INS}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("PPML_STAND_IN_RECORD", str(record))
    return record


def test_submit_outside_an_enclave_starts_the_driver_under_gramine(
        stand_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"appid": "app-1", "apikey": SECRET_APIKEY}))
    credentials.chmod(0o600)
    monkeypatch.setenv("PPML_KMS", f"ppml+https://kms.example:9000?credentials={credentials}")
    submit_args = ["--tee", "sgx-gramine", "--policy", "p-1", "--attestation-url", "https://as.example:8443",
                   "--master", "local[2]", "/ppml/app/simple_query.py", "--rows", "10"]
    assert main(["submit", *submit_args]) == 0
    record = json.loads(stand_in.read_text())
    assert record["argv"] == [str(STAND_INS / "gramine-sgx"), images.ENCLAVE_APP]
    assert record["cwd"] == os.getcwd()
    assert json.loads(record["env"][ARGV_VARIABLE]) == ["submit", *submit_args]
    recorded = json.dumps(record)
    assert SECRET_APIKEY not in recorded and "apikey" not in recorded


def test_submit_names_what_to_install_when_gramine_sgx_is_absent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    record = tmp_path / "record.json"
    monkeypatch.setenv("PPML_STAND_IN_RECORD", str(record))
    code = main(["submit", "--tee", "sgx-gramine", "--policy", "p-1", "--attestation-url", "https://as.example:8443",
                 "app.py"])
    err = capsys.readouterr().err
    assert code == 2
    assert "gramine-sgx, which is not installed here" in err and "nothing was started" in err
    assert "apt-get install gramine" in err and "libsgx-dcap-default-qpl" in err
    assert not record.exists()


def test_a_spark_pod_starts_its_enclave_with_sparks_args(stand_in: Path) -> None:
    assert main(["tee", "gramine-run", "--app", images.ENCLAVE_APP, "spark-pod", "executor"]) == 0
    record = json.loads(stand_in.read_text())
    assert record["argv"][1:] == [images.ENCLAVE_APP]
    assert json.loads(record["env"][ARGV_VARIABLE]) == ["spark-pod", "executor"]


def test_the_enclave_entry_runs_only_inside_gramine_and_only_its_commands(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tee", "gramine-entry"]) == 2
    assert "inside a Gramine enclave only" in capsys.readouterr().err
    for value, message in (("[\"bash\", \"-c\", \"id\"]", "runs only submit, spark-pod"), ("not json", "JSON"),
                           ("[]", "non-empty"), ("[\"submit\", 1]", "strings")):
        with pytest.raises(UsageError, match=message):
            args_from_environment({ARGV_VARIABLE: value})
    # Inside (as Gramine's /dev/attestation says), `submit` is ppml submit with the host's arguments.
    import ppml.cli.main as cli_main
    import ppml.tee.gramine.launch as launch

    calls: list[list[str]] = []
    monkeypatch.setattr(launch, "inside_gramine", lambda: True)
    monkeypatch.setattr(cli_main, "main", lambda argv: calls.append(argv) or 0)
    monkeypatch.setenv(ARGV_VARIABLE, encode_args(["submit", "--tee", "sgx-gramine", "app.py"]))
    assert cli_main.build_parser().parse_args(["tee", "gramine-entry"]).func(None) == 0
    assert calls == [["submit", "--tee", "sgx-gramine", "app.py"]]


def _pod(tee: str, role: str) -> dict[str, object]:
    environment = {"PPML_TEE_BACKEND": tee, "PPML_AS_URL": "https://as.example:8443", "PPML_TEE_POLICY": "p-1"}
    inputs = PodTemplateInputs(tee=tee, rpc_secret=SecretFile(secret="spark-rpc", key="secret"),
                               tee_environment=environment)
    return pod_manifest(role, inputs, image="registry.example/app:1")


def test_sgx_pods_start_the_enclave_the_context_writes(
        tmp_path: Path, fake_root: Path, app_dir: Path, key_path: Path) -> None:
    context = build_image_context(app_dir=app_dir, enclave_key=key_path, out=tmp_path / "ctx", root=fake_root,
                                  tool=None)
    in_image = f"{images.ENCLAVE_DIR}/{context.manifest.name.removesuffix('.manifest')}"
    for role in ("driver", "executor"):
        (container,) = _pod("sgx-gramine", role)["spec"]["containers"]  # type: ignore[index]
        assert container["command"] == ["python3", "-m", "ppml.cli.main", "tee", "gramine-run", "--app", in_image,
                                        "spark-pod"]
        assert "args" not in container  # Spark appends driver …/executor; gramine-run carries them in


def test_tdx_pods_run_in_a_kata_tdx_runtime_class_and_attest_with_configfs_tsm() -> None:
    for role in ("driver", "executor"):
        pod = _pod("tdx", role)
        spec = pod["spec"]
        assert spec["runtimeClassName"] == "kata-qemu-tdx"  # type: ignore[index]
        (container,) = spec["containers"]  # type: ignore[index]
        assert container["command"] == ["python3", "-m", "ppml.cli.main", "tee", "launch", "--",
                                        images.SPARK_ENTRYPOINT]
        assert {"name": "PPML_TEE_BACKEND", "value": "tdx"} in container["env"]
    from ppml.tee.registry import open_backend

    assert type(open_backend("tdx")).__name__ == "TdxConfigfsTsm"
