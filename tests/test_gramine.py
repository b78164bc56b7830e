"""ppml.tee.gramine (strict manifests, measurement, SIGSTRUCT) and the ``ppml enclave`` commands."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import re
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from ppml.cli.enclave import add_enclave_commands
from ppml.core.measurement import (
    SGX_FLAGS_DEBUG,
    SGX_FLAGS_MODE64BIT,
    Sigstruct,
    load_enclave_key,
    measure_manifest,
    mr_signer,
    verify_sigstruct,
)
from ppml.errors import AttestationFailed, InputNotFound, OutputExists, UnsafeWarning, UsageError
from ppml.tee.gramine import (
    SOURCE_GRAMINE,
    SOURCE_SIMULATED,
    Manifest,
    TrustedFile,
    build_manifest,
    default_python_paths,
    find_gramine_sgx_sign,
    measure,
    parse_size,
    sign,
)

WEIRD_NAME = 'we"ird\\name\tü.py'
FAKE_GRAMINE_HASH_LABEL = b"fake-gramine-mrenclave:"


def run_cli(argv: list[str]) -> int:
    """What ``ppml`` does: one parser, the enclave commands hooked in, ``args.func(args)``."""
    parser = argparse.ArgumentParser(prog="ppml")
    commands = parser.add_subparsers(dest="command", required=True)
    add_enclave_commands(commands)
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture(scope="module")
def key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's one signing key, made by `ppml enclave keygen`."""
    path = tmp_path_factory.mktemp("keys") / "enclave-key.pem"
    assert run_cli(["enclave", "keygen", str(path)]) == 0
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class App:
    """A small application tree: a fake interpreter behind a venv-style symlink, a python path,
    the application (with bytecode that must not be trusted) and a Spark jars directory."""

    def __init__(self, root: Path) -> None:
        self.interpreter = root / "base" / "bin" / "python3.11"
        self.interpreter.parent.mkdir(parents=True)
        self.interpreter.write_bytes(b"\x7fELF fake interpreter")
        self.venv_python = root / "venv" / "bin" / "python"
        self.venv_python.parent.mkdir(parents=True)
        self.venv_python.symlink_to(self.interpreter)

        self.lib = root / "lib"
        (self.lib / "pkg" / "__pycache__").mkdir(parents=True)
        (self.lib / "mod.py").write_text("X = 1\n")
        (self.lib / "pkg" / "__init__.py").write_text("")
        (self.lib / "pkg" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"bytecode")
        (self.lib / "stale.pyc").write_bytes(b"old bytecode")

        self.app = root / "app"
        (self.app / "data").mkdir(parents=True)
        self.main = self.app / "main.py"
        self.main.write_text("print('SimpleQuery')\n")
        (self.app / "data" / "config.json").write_text('{"rows": 10}\n')
        (self.app / WEIRD_NAME).write_text("# a file name TOML must quote\n")

        self.jars = root / "jars"
        self.jars.mkdir()
        (self.jars / "spark-core_2.13-4.0.0.jar").write_bytes(b"PK\x03\x04 jar")

    def expected_files(self, *, bytecode: bool = False) -> set[Path]:
        files = {
            self.interpreter, self.lib / "mod.py", self.lib / "pkg" / "__init__.py", self.main,
            self.app / "data" / "config.json", self.app / WEIRD_NAME,
            self.jars / "spark-core_2.13-4.0.0.jar",
        }
        if bytecode:
            files |= {self.lib / "pkg" / "__pycache__" / "__init__.cpython-311.pyc", self.lib / "stale.pyc"}
        return files

    def build(self, **overrides: object) -> Manifest:
        options: dict[str, object] = dict(
            entrypoint=self.main, app_files=[self.app], python=self.venv_python,
            python_paths=[self.lib], spark_jars=[self.jars], argv=["--rows", "10"],
            env={"PPML_KMS": "ppml+https://kms.example:9000"}, enclave_size="4G", max_threads=16,
            isv_prod_id=7, isv_svn=3,
        )
        options.update(overrides)
        return build_manifest(**options)  # type: ignore[arg-type]


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path)


# -- building -----------------------------------------------------------------------------------


def test_every_loaded_file_is_trusted_with_its_hash(app: App) -> None:
    manifest = app.build()
    listed = {Path(t.path): t.sha256 for t in manifest.trusted_files}
    assert set(listed) == app.expected_files()
    for path, digest in listed.items():
        assert digest == sha256(path)
    assert app.venv_python not in listed  # the symlink is resolved to the real interpreter
    assert manifest.libos_entrypoint == str(app.interpreter)
    assert manifest.argv == (str(app.interpreter), str(app.main), "--rows", "10")


def test_bytecode_is_trusted_only_when_asked(app: App) -> None:
    manifest = app.build(include_bytecode=True)
    assert {Path(t.path) for t in manifest.trusted_files} == app.expected_files(bytecode=True)


def test_toml_is_strict_and_says_what_the_brief_requires(app: App) -> None:
    data = tomllib.loads(app.build().to_toml())
    assert data["libos"]["entrypoint"] == str(app.interpreter)
    assert data["loader"]["entrypoint"]["uri"].startswith("file:/")
    assert data["loader"]["argv"] == [str(app.interpreter), str(app.main), "--rows", "10"]
    assert data["loader"]["env"] == {
        "PYTHONPATH": str(app.lib), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
        "PPML_KMS": "ppml+https://kms.example:9000",
    }
    for insecure in ("insecure__use_cmdline_argv", "argv_src_file", "insecure__use_host_env",
                     "env_src_file"):
        assert insecure not in data["loader"]
    sgx = data["sgx"]
    assert sgx["file_check_policy"] == "strict"
    assert sgx["allowed_files"] == []
    assert sgx["debug"] is False
    assert (sgx["enclave_size"], sgx["max_threads"], sgx["isvprodid"], sgx["isvsvn"]) == ("4G", 16, 7, 3)
    assert sgx["remote_attestation"] == "dcap"
    entries = sgx["trusted_files"]
    assert [e["uri"] for e in entries] == sorted(e["uri"] for e in entries)
    assert {e["uri"]: e["sha256"] for e in entries} == {
        f"file:{p}": sha256(p) for p in app.expected_files()
    }
    mounts = {m["path"]: m["uri"] for m in data["fs"]["mounts"]}
    assert mounts == {str(d): f"file:{d}" for d in (app.interpreter.parent, app.lib, app.app, app.jars)}


def test_toml_is_deterministic_and_reads_back(app: App) -> None:
    first, second = app.build(), app.build()
    assert first.to_toml() == second.to_toml()
    parsed = Manifest.from_toml(first.to_toml())
    assert parsed == first
    assert parsed.to_toml() == first.to_toml()
    assert any(t.path.endswith(WEIRD_NAME) for t in parsed.trusted_files)


def test_write_load_and_refuse_overwrite(app: App, tmp_path: Path) -> None:
    manifest = app.build()
    out = tmp_path / "app.manifest"
    manifest.write(out)
    assert Manifest.load(out) == manifest
    with pytest.raises(OutputExists):
        manifest.write(out)
    manifest.write(out, overwrite=True)
    assert out.read_text(encoding="utf-8") == manifest.to_toml()


def test_loader_check_names_the_first_changed_file(app: App) -> None:
    manifest = app.build()
    manifest.verify_trusted_files()
    (app.app / "data" / "config.json").write_text('{"rows": 11}\n')
    app.main.write_text("print('tampered')\n")
    changed = sorted([str(app.app / "data" / "config.json"), str(app.main)])[0]
    with pytest.raises(AttestationFailed, match=re.escape(f"trusted file {changed} changed")):
        manifest.verify_trusted_files()


def test_loader_check_notices_a_missing_file(app: App) -> None:
    manifest = app.build()
    (app.lib / "mod.py").unlink()
    with pytest.raises(AttestationFailed, match=re.escape(f"trusted file {app.lib / 'mod.py'} cannot be read")):
        manifest.verify_trusted_files()


def test_debug_and_allowed_files_warn_every_time(app: App) -> None:
    for _ in range(2):
        with pytest.warns(UnsafeWarning, match="DEBUG enclave"):
            manifest = app.build(debug=True)
        assert tomllib.loads(manifest.to_toml())["sgx"]["debug"] is True
    with pytest.warns(UnsafeWarning, match="allowed_files"):
        manifest = app.build(allowed_files=["file:/tmp/scratch/"])
    assert tomllib.loads(manifest.to_toml())["sgx"]["allowed_files"] == ["file:/tmp/scratch/"]


def test_bad_inputs_fail_at_build(app: App, tmp_path: Path) -> None:
    with pytest.raises(InputNotFound):
        app.build(app_files=[tmp_path / "missing"])
    with pytest.raises(UsageError, match="power of two"):
        app.build(enclave_size="3G")
    with pytest.raises(UsageError, match="max_threads"):
        app.build(max_threads=0)
    with pytest.raises(UsageError, match="isv_svn"):
        app.build(isv_svn=70000)


def test_parse_size() -> None:
    assert parse_size("8G") == 8 << 30
    assert parse_size("512M") == 512 << 20
    assert parse_size("64K") == 64 << 10
    assert parse_size("0x1000") == 4096
    for bad in ("", "G", "eight", "-1G", "0"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_from_toml_refuses_permissive_manifests(app: App) -> None:
    text = app.build().to_toml()
    with pytest.raises(UsageError, match="file_check_policy"):
        Manifest.from_toml(text.replace('"strict"', '"allow_all_but_log"'))
    with pytest.raises(UsageError, match="insecure__use_host_env"):
        Manifest.from_toml(text.replace('loader.log_level = "error"',
                                        'loader.log_level = "error"\nloader.insecure__use_host_env = true'))
    with pytest.raises(UsageError, match="not a manifest built by ppml"):
        Manifest.from_toml('libos.entrypoint = "/x"\nloader.argv = ["/x"]\nloader.entrypoint.uri = "file:/l"\n'
                           'sgx.trusted_files = ["file:/x"]\n')
    with pytest.raises(UsageError, match="not a TOML manifest"):
        Manifest.from_toml("sgx.debug = = true")


def test_trusted_file_requires_absolute_path_and_hex_digest() -> None:
    with pytest.raises(UsageError):
        TrustedFile(path="relative/file.py", sha256="0" * 64)
    with pytest.raises(UsageError):
        TrustedFile(path="/abs/file.py", sha256="XYZ")


def test_default_python_paths_cover_this_interpreter_and_ppml() -> None:
    paths = default_python_paths()
    assert all(p.is_absolute() and p.is_dir() for p in paths)
    import ppml

    assert Path(ppml.__file__).resolve().parents[1] in {p.resolve() for p in paths}
    assert any((p / "os.py").is_file() for p in paths)  # the standard library


# -- measuring and signing ----------------------------------------------------------------------


def test_simulated_measurement_commits_to_the_manifest_file(app: App, key_path: Path, tmp_path: Path) -> None:
    manifest_path = tmp_path / "app.manifest"
    app.build().write(manifest_path)
    result = measure(manifest_path, key_path, tool=None)
    assert result.source == SOURCE_SIMULATED
    assert result.mr_signer == mr_signer(load_enclave_key(key_path))
    assert result.mr_enclave == measure_manifest(
        manifest_path.read_bytes(), enclave_size=4 << 30, max_threads=16
    )
    # Change one trusted file, rebuild: the hash in the manifest changes, and so does mr_enclave.
    (app.lib / "mod.py").write_text("X = 2\n")
    app.build().write(manifest_path, overwrite=True)
    changed = measure(manifest_path, key_path, tool=None)
    assert changed.mr_enclave != result.mr_enclave
    assert changed.mr_signer == result.mr_signer


def test_simulated_sign_writes_a_verifiable_sigstruct(app: App, key_path: Path, tmp_path: Path) -> None:
    manifest_path, sig_path = tmp_path / "app.manifest", tmp_path / "app.sig"
    app.build().write(manifest_path)
    sig, result = sign(manifest_path, key_path, sig_path, date=datetime.date(2025, 2, 28), tool=None)
    raw = sig_path.read_bytes()
    assert len(raw) == 1808
    parsed = Sigstruct.from_bytes(raw)
    assert parsed == sig
    assert verify_sigstruct(parsed) == mr_signer(load_enclave_key(key_path)) == result.mr_signer
    assert parsed.enclave_hash == measure(manifest_path, key_path, tool=None).mr_enclave
    assert (parsed.isv_prod_id, parsed.isv_svn, parsed.date) == (7, 3, datetime.date(2025, 2, 28))
    assert parsed.attributes.flags == SGX_FLAGS_MODE64BIT  # production: no DEBUG bit
    assert result.source == SOURCE_SIMULATED
    with pytest.raises(OutputExists):
        sign(manifest_path, key_path, sig_path, tool=None)

    with pytest.warns(UnsafeWarning):
        app.build(debug=True).write(manifest_path, overwrite=True)
    debug_sig, _ = sign(manifest_path, key_path, sig_path, overwrite=True, tool=None)
    assert debug_sig.attributes.flags == SGX_FLAGS_MODE64BIT | SGX_FLAGS_DEBUG


def _fake_gramine_sgx_sign(directory: Path, *, fail: bool = False) -> Path:
    """An executable that speaks gramine-sgx-sign's command line and writes a real SIGSTRUCT
    (signed by the given key, DATE in Gramine's binary layout) for a known ENCLAVEHASH."""
    directory.mkdir(parents=True, exist_ok=True)
    tool = directory / "gramine-sgx-sign"
    body = "import sys\nprint('error: cannot open libpal.so', file=sys.stderr)\nsys.exit(1)\n" if fail else f"""
import argparse, datetime, hashlib
from pathlib import Path
from ppml.core.measurement import enclave_attributes, load_enclave_key, sign_sigstruct
parser = argparse.ArgumentParser()
for option in ("--manifest", "--key", "--output", "--sigfile"):
    parser.add_argument(option, required=True)
args = parser.parse_args()
manifest = Path(args.manifest).read_bytes()
Path(args.output).write_bytes(manifest)
sig = sign_sigstruct(
    load_enclave_key(args.key), enclave_hash=hashlib.sha256({FAKE_GRAMINE_HASH_LABEL!r} + manifest).digest(),
    isv_prod_id=0, isv_svn=0, attributes=enclave_attributes(debug=False),
    date=datetime.date(2024, 1, 15), date_format="binary",
)
Path(args.sigfile).write_bytes(sig.to_bytes())
"""
    tool.write_text(f"#!{sys.executable}\n{body}")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def test_gramine_sgx_sign_is_found_on_the_search_path(tmp_path: Path) -> None:
    assert find_gramine_sgx_sign(str(tmp_path)) is None
    tool = _fake_gramine_sgx_sign(tmp_path / "bin")
    assert find_gramine_sgx_sign(str(tmp_path / "bin")) == tool


def test_measure_and_sign_use_gramine_sgx_sign_when_present(app: App, key_path: Path, tmp_path: Path) -> None:
    tool = _fake_gramine_sgx_sign(tmp_path / "bin")
    manifest_path, sig_path = tmp_path / "app.manifest", tmp_path / "app.sig"
    app.build().write(manifest_path)
    expected = hashlib.sha256(FAKE_GRAMINE_HASH_LABEL + manifest_path.read_bytes()).digest()

    result = measure(manifest_path, key_path, tool=tool)
    assert result.source == SOURCE_GRAMINE
    assert result.mr_enclave == expected
    assert result.mr_signer == mr_signer(load_enclave_key(key_path))

    _sig, signed = sign(manifest_path, key_path, sig_path, tool=tool)
    assert signed.source == SOURCE_GRAMINE
    parsed = Sigstruct.from_bytes(sig_path.read_bytes())
    assert parsed.date_format == "binary" and parsed.enclave_hash == expected
    assert verify_sigstruct(parsed) == result.mr_signer


def test_a_failing_gramine_sgx_sign_is_reported(app: App, key_path: Path, tmp_path: Path) -> None:
    tool = _fake_gramine_sgx_sign(tmp_path / "bin", fail=True)
    manifest_path = tmp_path / "app.manifest"
    app.build().write(manifest_path)
    with pytest.raises(UsageError, match=r"exit code 1: error: cannot open libpal\.so"):
        measure(manifest_path, key_path, tool=tool)


# -- the ppml enclave commands ------------------------------------------------------------------


def test_keygen_made_a_private_sgx_key(key_path: Path, tmp_path: Path) -> None:
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = load_enclave_key(key_path)
    assert (key.key_size, key.public_key().public_numbers().e) == (3072, 3)
    with pytest.raises(OutputExists) as refused:
        run_cli(["enclave", "keygen", str(key_path)])
    assert "never replaces an enclave signing key" in refused.value.diagnostics()


def test_cli_build_measure_sign(
    app: App, key_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest_path, sig_path = tmp_path / "app.manifest", tmp_path / "app.sig"
    assert run_cli([
        "enclave", "build", "--app", str(app.app), "--entrypoint", str(app.main),
        "--out", str(manifest_path), "--spark-jars", str(app.jars), "--enclave-size", "4G",
        "--max-threads", "16", "--isv-prod-id", "7", "--isv-svn", "3",
        "--python", str(app.venv_python), "--python-path", str(app.lib),
        "--arg=--rows", "--arg", "10", "--env", "PPML_KMS=ppml+https://kms.example:9000",
    ]) == 0
    assert Manifest.load(manifest_path) == app.build()
    assert "7 trusted files" in capsys.readouterr().err

    assert run_cli(["enclave", "measure", str(manifest_path), "--key", str(key_path)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"mr_enclave : [0-9a-f]{64}", lines[0])
    assert re.fullmatch(r"mr_signer : [0-9a-f]{64}", lines[1])
    expected = measure(manifest_path, key_path)
    assert lines == [f"mr_enclave : {expected.mr_enclave.hex()}", f"mr_signer : {expected.mr_signer.hex()}"]
    if find_gramine_sgx_sign() is None:
        assert "ppml's simulated-TEE measurement (gramine-sgx-sign not installed)" in captured.err
    else:
        assert "measured by gramine-sgx-sign" in captured.err

    assert run_cli(["enclave", "sign", str(manifest_path), "--key", str(key_path), "--out", str(sig_path)]) == 0
    parsed = Sigstruct.from_bytes(sig_path.read_bytes())
    assert parsed.enclave_hash == expected.mr_enclave
    assert verify_sigstruct(parsed) == expected.mr_signer
    assert capsys.readouterr().out == ""
    with pytest.raises(OutputExists):
        run_cli(["enclave", "sign", str(manifest_path), "--key", str(key_path), "--out", str(sig_path)])


def test_cli_errors_are_ppml_errors(app: App, key_path: Path, tmp_path: Path) -> None:
    with pytest.raises(InputNotFound):
        run_cli(["enclave", "build", "--app", str(tmp_path / "nope"), "--entrypoint", str(app.main),
                 "--out", str(tmp_path / "m"), "--python-path", str(app.lib)])
    manifest_path = tmp_path / "app.manifest"
    app.build().write(manifest_path)
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_text("hello")
    with pytest.raises(UsageError, match="not a PEM private key"):
        run_cli(["enclave", "measure", str(manifest_path), "--key", str(not_a_key)])
    with pytest.raises(InputNotFound):
        run_cli(["enclave", "measure", str(tmp_path / "missing.manifest"), "--key", str(key_path)])
    assert not os.path.exists(tmp_path / "m")
