"""The ``ppml`` command: each subcommand, its exit codes and its messages, run for real."""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ppml.cli.main import main
from ppml.core.keys import SECRET_ACCESS
from ppml.kms.local import LocalKeyStore

PPML = [sys.executable, "-m", "ppml.cli.main"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PPML, *args], capture_output=True, text=True, env=env, check=False)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def kms(tmp_path: Path) -> str:
    return f"local:{tmp_path / 'keys'}"


@pytest.fixture()
def key_id(kms: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["key", "create", "--kms", kms]) == 0
    return capsys.readouterr().out.strip()


# -- generate-people ---------------------------------------------------------------------------


def test_generate_people_writes_the_documented_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "people.csv"
    assert main(["generate-people", str(path), "20000", "--seed", "7"]) == 0
    printed = capsys.readouterr().out.strip()
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "age", "job"]
    body = rows[1:]
    assert len(body) == 20000
    assert all(3 <= len(n) <= 7 and n.isalpha() and n.islower() for n, _, _ in body)
    ages = [int(a) for _, a, _ in body]
    assert min(ages) == 18 and max(ages) == 60
    jobs = {j for _, _, j in body}
    assert jobs == {"Developer", "Engineer", "Researcher"}
    expected = sum(1 for _, a, j in body if j == "Developer" and 20 <= int(a) <= 40)
    assert printed == f"Num of Developer age between 20,40 is {expected}"
    # roughly uniform: each job near a third, each age near 1/43
    for job in jobs:
        share = sum(1 for r in body if r[2] == job) / len(body)
        assert 0.30 < share < 0.37


def test_generate_people_is_reproducible_with_a_seed(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    assert main(["generate-people", str(a), "1000", "--seed", "1"]) == 0
    assert main(["generate-people", str(b), "1000", "--seed", "1"]) == 0
    assert main(["generate-people", str(c), "1000", "--seed", "2"]) == 0
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_generate_people_zero_rows_is_just_the_header(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    assert main(["generate-people", str(path), "0"]) == 0
    assert path.read_text() == "name,age,job\n"


def test_generate_people_rejects_negative_rows(tmp_path: Path) -> None:
    result = run("generate-people", str(tmp_path / "p.csv"), "-5")
    assert result.returncode == 2
    assert "non-negative" in result.stderr


# -- keys --------------------------------------------------------------------------------------


def test_key_create_and_list(kms: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["key", "create", "--kms", kms, "--description", "for tests"]) == 0
    key_id = capsys.readouterr().out.strip()
    assert len(key_id) == 36
    assert main(["key", "list", "--kms", kms]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "for tests" in listing and "enabled" in listing


def test_default_kms_comes_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "PPML_KMS": f"local:{tmp_path / 'store'}"}
    created = run("key", "create", env=env)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "store" / f"{created.stdout.strip()}.key").exists()


def test_unknown_kms_scheme_is_a_usage_error(tmp_path: Path) -> None:
    result = run("key", "create", "--kms", "vault+https://example.invalid")
    assert result.returncode == 2
    assert "unknown scheme" in result.stderr and "local" in result.stderr


# -- encrypt / decrypt a file ------------------------------------------------------------------


def test_encrypt_decrypt_file_round_trip(tmp_path: Path, kms: str, key_id: str) -> None:
    src = tmp_path / "people.csv"
    main(["generate-people", str(src), "5000", "--seed", "3"])
    enc, dec = tmp_path / "people.ppml", tmp_path / "people.out.csv"
    assert main(["encrypt", str(src), str(enc), "--key", key_id, "--kms", kms]) == 0
    assert enc.read_bytes()[:4] == b"PPML"
    assert src.read_bytes() not in enc.read_bytes()
    assert main(["decrypt", str(enc), str(dec), "--kms", kms]) == 0
    assert dec.read_bytes() == src.read_bytes()


def test_output_is_not_overwritten_without_force(tmp_path: Path, kms: str, key_id: str) -> None:
    src = tmp_path / "a.txt"
    src.write_text("hello")
    dst = tmp_path / "a.ppml"
    dst.write_text("precious")
    result = run("encrypt", str(src), str(dst), "--key", key_id, "--kms", kms)
    assert result.returncode == 3 and "already exists" in result.stderr
    assert dst.read_text() == "precious"
    assert run("encrypt", str(src), str(dst), "--key", key_id, "--kms", kms, "--force").returncode == 0
    assert dst.read_bytes()[:4] == b"PPML"


def test_encrypt_needs_a_key(tmp_path: Path, kms: str) -> None:
    src = tmp_path / "a.txt"
    src.write_text("x")
    result = run("encrypt", str(src), str(tmp_path / "b"), "--kms", kms)
    assert result.returncode == 2 and "--key" in result.stderr


def test_encrypt_with_unknown_key(tmp_path: Path, kms: str, key_id: str) -> None:
    src = tmp_path / "a.txt"
    src.write_text("x")
    result = run("encrypt", str(src), str(tmp_path / "b"), "--kms", kms, "--key", "no-such-key")
    assert result.returncode == 6 and "no key 'no-such-key'" in result.stderr
    assert not (tmp_path / "b").exists()


# -- bad input: every case exits non-zero, says why, and loses nothing -------------------------


@pytest.fixture()
def encrypted(tmp_path: Path, kms: str, key_id: str) -> Path:
    src = tmp_path / "plain.bin"
    src.write_bytes(os.urandom(3 * 4096 * 5 + 123))
    enc = tmp_path / "plain.ppml"
    assert main(["encrypt", str(src), str(enc), "--key", key_id, "--kms", kms, "--segment-size", "4096"]) == 0
    return enc


def _assert_clean_failure(result: subprocess.CompletedProcess[str], code: int, text: str, src: Path,
                          before: str, out: Path) -> None:
    assert result.returncode == code, result.stderr
    assert text in result.stderr
    assert "Traceback" not in result.stderr
    assert digest(src) == before, "the source was modified"
    assert not out.exists(), "a failed run left output behind"
    assert not list(out.parent.glob(f".{out.name}*")), "a failed run left a temporary file behind"


@pytest.mark.parametrize(
    "damage",
    ["flip-header", "flip-body", "truncate-boundary", "truncate-inside", "extend", "swap", "empty"],
)
def test_damaged_file_fails_cleanly(tmp_path: Path, kms: str, encrypted: Path, damage: str) -> None:
    data = bytearray(encrypted.read_bytes())
    header_len = int.from_bytes(data[5:9], "big")
    body = header_len
    if damage == "flip-header":
        data[header_len - 3] ^= 0x01
    elif damage == "flip-body":
        data[len(data) // 2] ^= 0x80
    elif damage == "truncate-boundary":
        data = data[: body + 4096 * 2]
    elif damage == "truncate-inside":
        data = data[: body + 4096 * 2 + 1000]
    elif damage == "extend":
        data += b"\0" * 100
    elif damage == "swap":
        s1, s2 = body + 4096, body + 2 * 4096
        data[s1:s2], data[s2 : s2 + 4096] = data[s2 : s2 + 4096], data[s1:s2]
    elif damage == "empty":
        data = bytearray()
    encrypted.write_bytes(bytes(data))
    before = digest(encrypted)
    out = tmp_path / "out.bin"
    result = run("decrypt", str(encrypted), str(out), "--kms", kms)
    expected = "not a ppml encrypted file" if damage == "empty" else "cannot decrypt"
    _assert_clean_failure(result, 4, expected, encrypted, before, out)


def test_not_a_ppml_file(tmp_path: Path, kms: str, key_id: str) -> None:
    src = tmp_path / "people.csv"
    src.write_text("name,age,job\nann,30,Developer\n")
    before = digest(src)
    out = tmp_path / "out.csv"
    result = run("decrypt", str(src), str(out), "--kms", kms)
    _assert_clean_failure(result, 4, "not a ppml encrypted file", src, before, out)
    assert "AES/CBC/PKCS5Padding" in result.stderr  # the hint names the legacy mode


def test_wrong_key_store(tmp_path: Path, encrypted: Path) -> None:
    other = f"local:{tmp_path / 'other-keys'}"
    assert run("key", "create", "--kms", other).returncode == 0
    before = digest(encrypted)
    out = tmp_path / "out.bin"
    result = run("decrypt", str(encrypted), str(out), "--kms", other)
    _assert_clean_failure(result, 4, "cannot decrypt", encrypted, before, out)
    assert "pass the right --kms" in result.stderr


def test_wrong_key_material_with_the_same_id(tmp_path: Path, kms: str, key_id: str, encrypted: Path) -> None:
    key_file = tmp_path / "keys" / f"{key_id}.key"
    text = key_file.read_text()
    import base64
    import json

    record = json.loads(text)
    record["material"] = base64.b64encode(os.urandom(32)).decode()
    key_file.write_text(json.dumps(record))
    before = digest(encrypted)
    out = tmp_path / "out.bin"
    result = run("decrypt", str(encrypted), str(out), "--kms", kms)
    _assert_clean_failure(result, 4, "cannot decrypt", encrypted, before, out)


def test_missing_key_store(tmp_path: Path, encrypted: Path) -> None:
    before = digest(encrypted)
    out = tmp_path / "out.bin"
    result = run("decrypt", str(encrypted), str(out), "--kms", f"local:{tmp_path / 'nowhere'}")
    _assert_clean_failure(result, 6, "no such key store", encrypted, before, out)


def test_key_file_with_open_permissions_is_refused(tmp_path: Path, kms: str, key_id: str,
                                                  encrypted: Path) -> None:
    (tmp_path / "keys" / f"{key_id}.key").chmod(0o644)
    before = digest(encrypted)
    out = tmp_path / "out.bin"
    result = run("decrypt", str(encrypted), str(out), "--kms", kms)
    _assert_clean_failure(result, 6, "too open", encrypted, before, out)


def test_malformed_key_file(tmp_path: Path, kms: str, key_id: str, encrypted: Path) -> None:
    key_file = tmp_path / "keys" / f"{key_id}.key"
    key_file.write_text("{not json")
    before = digest(encrypted)
    out = tmp_path / "out.bin"
    result = run("decrypt", str(encrypted), str(out), "--kms", kms)
    _assert_clean_failure(result, 6, "malformed key file", encrypted, before, out)


def test_missing_input(tmp_path: Path, kms: str) -> None:
    result = run("decrypt", str(tmp_path / "nope"), str(tmp_path / "out"), "--kms", kms)
    assert result.returncode == 3 and "no such file or directory" in result.stderr


def test_directory_where_a_file_is_expected(tmp_path: Path, kms: str, encrypted: Path) -> None:
    out_dir = tmp_path / "existing-dir"
    out_dir.mkdir()
    result = run("decrypt", str(encrypted), str(out_dir), "--kms", kms, "--force")
    assert result.returncode == 3 and "is a directory" in result.stderr
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("command", ["encrypt", "encrypt-dir", "decrypt", "generate-people", "enclave-keygen",
                                     "enclave-build", "enclave-sign", "kms-enroll"])
def test_a_missing_output_directory_is_named_with_the_fix(tmp_path: Path, kms: str, key_id: str, encrypted: Path,
                                                          command: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no" / "such dir"
    out = missing / "out"
    plain = tmp_path / "plain.bin"
    script = tmp_path / "job.py"
    script.write_text("print(1)\n")
    key = tmp_path / "enclave.pem"
    manifest = tmp_path / "job.manifest.toml"
    if command.startswith("enclave-") and command != "enclave-keygen":
        assert main(["enclave", "keygen", str(key)]) == 0
        assert main(["enclave", "build", "--app", str(script), "--entrypoint", str(script), "--out", str(manifest),
                     "--python-path", str(tmp_path)]) == 0
    args = {
        "encrypt": ["encrypt", str(plain), str(out), "--key", key_id, "--kms", kms],
        "encrypt-dir": ["encrypt", str(tmp_path / "keys"), str(out), "--key", key_id, "--kms", kms],
        "decrypt": ["decrypt", str(encrypted), str(out), "--kms", kms],
        "generate-people": ["generate-people", str(out), "10"],
        "enclave-keygen": ["enclave", "keygen", str(out)],
        "enclave-build": ["enclave", "build", "--app", str(script), "--entrypoint", str(script), "--out", str(out),
                          "--python-path", str(tmp_path)],
        "enclave-sign": ["enclave", "sign", str(manifest), "--key", str(key), "--out", str(out)],
        "kms-enroll": ["kms", "enroll", "--kms", "ppml+https://127.0.0.1:9", "--out", str(out)],
    }[command]
    capsys.readouterr()
    assert main(args) == 3
    error = capsys.readouterr().err
    assert f"output directory {missing} does not exist" in error
    assert f"mkdir -p '{missing}'" in error
    assert not missing.parent.exists()


def test_help_for_every_command() -> None:
    for args in (["--help"], ["generate-people", "--help"], ["key", "create", "--help"],
                 ["key", "list", "--help"], ["encrypt", "--help"], ["decrypt", "--help"],
                 ["demo", "--help"], ["submit", "--help"], ["history-server", "--help"]):
        result = run(*args)
        assert result.returncode == 0, args
        assert "usage: ppml" in result.stdout


# -- directories -------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_directory_round_trip_adds_and_strips_the_suffix(tmp_path: Path, kms: str, key_id: str) -> None:
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    (src / "top.csv").write_text("x,y\n1,2\n")
    (src / "a" / "mid.bin").write_bytes(os.urandom(70_000))
    (src / "a" / "b" / "deep.txt").write_text("deep")
    (src / "a" / "b" / "empty").write_bytes(b"")
    (src / "_SUCCESS").write_bytes(b"")
    (src / ".part.crc").write_bytes(b"crc")
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    assert main(["encrypt", str(src), str(enc), "--key", key_id, "--kms", kms]) == 0
    assert sorted(_tree(enc)) == ["a/b/deep.txt.ppml", "a/b/empty.ppml", "a/mid.bin.ppml", "top.csv.ppml"]
    assert all(v[:4] == b"PPML" for v in _tree(enc).values())
    assert main(["decrypt", str(enc), str(dec), "--kms", kms]) == 0
    expected = {k: v for k, v in _tree(src).items() if not k.startswith(("_", "."))}
    assert _tree(dec) == expected


def test_directory_decrypt_strips_only_a_trailing_suffix(tmp_path: Path, kms: str, key_id: str) -> None:
    """Spark's ppml writer names its files part-N-JOB.csv.ppml; their plaintext is part-N-JOB.csv."""
    plain = tmp_path / "plain"
    plain.mkdir()
    names = {"part-00000-job.csv.ppml": "part-00000-job.csv", "data.ppml.csv": "data.ppml.csv",
             "x.ppml.ppml": "x.ppml", "no-suffix": "no-suffix"}
    enc = tmp_path / "enc"
    enc.mkdir()
    for index, name in enumerate(names):
        (plain / name).write_text(f"row {index}\n")
        assert main(["encrypt", str(plain / name), str(enc / name), "--key", key_id, "--kms", kms]) == 0
    dec = tmp_path / "dec"
    assert main(["decrypt", str(enc), str(dec), "--kms", kms]) == 0
    assert _tree(dec) == {plaintext_name: (plain / name).read_bytes() for name, plaintext_name in names.items()}


def test_directory_decrypt_refuses_two_inputs_for_one_output(tmp_path: Path, kms: str, key_id: str) -> None:
    plain, enc = tmp_path / "plain.txt", tmp_path / "enc"
    plain.write_text("x")
    enc.mkdir()
    for name in ("a.csv", "a.csv.ppml"):
        assert main(["encrypt", str(plain), str(enc / name), "--key", key_id, "--kms", kms]) == 0
    result = run("decrypt", str(enc), str(tmp_path / "dec"), "--kms", kms)
    assert result.returncode == 2 and "would both be written to" in result.stderr
    assert not (tmp_path / "dec").exists()


def test_failed_directory_decrypt_leaves_nothing(tmp_path: Path, kms: str, key_id: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        (src / f"part-{i}").write_bytes(os.urandom(10_000))
    enc = tmp_path / "enc"
    assert main(["encrypt", str(src), str(enc), "--key", key_id, "--kms", kms]) == 0
    victim = enc / "part-2.ppml"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 1
    victim.write_bytes(bytes(data))
    dec = tmp_path / "dec"
    result = run("decrypt", str(enc), str(dec), "--kms", kms)
    assert result.returncode == 4 and "part-2" in result.stderr
    assert not dec.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc", "in", "keys"]


def test_directory_output_replaced_only_with_force(tmp_path: Path, kms: str, key_id: str) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "f").write_text("new")
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "old").write_text("old")
    assert run("encrypt", str(src), str(dst), "--key", key_id, "--kms", kms).returncode == 3
    assert (dst / "old").exists()
    assert main(["encrypt", str(src), str(dst), "--key", key_id, "--kms", kms, "--force"]) == 0
    assert sorted(_tree(dst)) == ["f.ppml"]


# -- a failed write leaves nothing behind --------------------------------------------------------
# RLIMIT_FSIZE makes the kernel refuse writes past 1 MiB (EFBIG, "File too large"; Python ignores
# SIGXFSZ), as a full disk refuses them with ENOSPC: the write fails, and so does the flush when the
# temporary file is closed. Each run is a subprocess so that only it is limited. The limit falls
# just short of the end of the first 1 MiB write, so the kernel takes most of it and the tail stays
# in Python's buffer: the case where closing fails again (measured: every case below then left its
# ``.partial`` file before the fix; a limit at a write boundary fails without buffered data).

_WRITE_LIMIT = (1 << 20) - 100


def _run_with_write_limit(*args: str) -> subprocess.CompletedProcess[str]:
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (_WRITE_LIMIT, _WRITE_LIMIT))

    return subprocess.run([*PPML, *args], capture_output=True, text=True, check=False, preexec_fn=limit)


def _everything_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("case", ["encrypt", "decrypt", "legacy-encrypt", "legacy-decrypt", "directory"])
def test_a_write_that_fails_leaves_no_temporary_file(tmp_path: Path, kms: str, key_id: str, case: str) -> None:
    inputs, out_dir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    src = inputs / "big.bin"
    src.write_bytes(os.urandom(3 * _WRITE_LIMIT))
    bigdl_key = tmp_path / "bigdl.key"
    bigdl_key.write_text(base64.b64encode(os.urandom(32)).decode())
    legacy = ["--mode", "AES/CBC/PKCS5Padding", "--bigdl-primary-key", str(bigdl_key)]
    if case == "encrypt":
        args = ["encrypt", str(src), str(out_dir / "big.ppml"), "--key", key_id, "--kms", kms]
    elif case == "decrypt":
        assert main(["encrypt", str(src), str(inputs / "big.ppml"), "--key", key_id, "--kms", kms]) == 0
        args = ["decrypt", str(inputs / "big.ppml"), str(out_dir / "big.bin"), "--kms", kms]
    elif case == "legacy-encrypt":
        args = ["encrypt", str(src), str(out_dir / "big.enc"), *legacy]
    elif case == "legacy-decrypt":
        assert run("encrypt", str(src), str(inputs / "big.enc"), *legacy).returncode == 0
        args = ["decrypt", str(inputs / "big.enc"), str(out_dir / "big.bin"), *legacy]
    else:
        (inputs / "small.txt").write_text("fits")
        args = ["encrypt", str(inputs), str(out_dir / "enc"), "--key", key_id, "--kms", kms]
    before = _everything_under(tmp_path)
    result = _run_with_write_limit(*args)
    assert result.returncode == 1, result.stderr
    assert "File too large" in result.stderr and "Traceback" not in result.stderr
    assert _everything_under(tmp_path) == before


def test_a_failed_final_move_keeps_the_previous_directory(tmp_path: Path) -> None:
    from ppml.core._files import atomic_directory

    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "previous").write_text("kept")

    def replace(src: Path, target: Path) -> None:
        if target == dst:  # the staging directory's move into place, not the restore
            if src.name.endswith(".partial"):
                raise OSError(28, "No space left on device")
        os.replace(src, target)

    with pytest.raises(OSError, match="No space left"):
        with atomic_directory(dst, overwrite=True, replace=replace) as staging:
            (staging / "new").write_text("lost")
    assert _everything_under(tmp_path) == ["out", "out/previous"]
    assert (dst / "previous").read_text() == "kept"


# -- secrets -----------------------------------------------------------------------------------


def test_no_key_material_in_output(tmp_path: Path, kms: str, key_id: str, encrypted: Path) -> None:
    store = LocalKeyStore(tmp_path / "keys")
    import json

    primary_b64 = json.loads((tmp_path / "keys" / f"{key_id}.key").read_text())["material"]
    generated = store.generate_data_key(key_id)
    data_key = generated.data_key.export(SECRET_ACCESS)
    outputs = []
    for args in (["key", "list", "--kms", kms], ["decrypt", str(encrypted), str(tmp_path / "o"), "--kms", kms],
                 ["decrypt", str(encrypted), str(tmp_path / "o"), "--kms", kms]):
        result = run(*args)
        outputs.append(result.stdout + result.stderr)
    text = "\n".join(outputs)
    assert primary_b64 not in text
    assert data_key.hex() not in text
    assert "already exists" in text  # the second decrypt failed, and said why


@pytest.mark.slow
@pytest.mark.spark
def test_demo_runs_twice_without_cleanup(tmp_path: Path) -> None:
    """`make demo` end to end (small): serve, enroll, enclave, policy, keys, encrypt, SimpleQuery in
    local-tee mode with the simulated TEE, decrypt, compare; then again in the same directory."""
    for _ in range(2):
        result = run("demo", "--workdir", str(tmp_path / "demo"), "--rows", "3000", "--seed", "5")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "Attestation Success!" in result.stdout
        assert "OK: Num of Developer age between 20,40 is" in result.stdout
        assert "SIMULATED" in result.stdout
    assert list((tmp_path / "demo" / "spark-events").iterdir())



# -- BigDL legacy files through the CLI --------------------------------------------------------


def test_legacy_bigdl_file_through_the_cli(tmp_path: Path) -> None:
    import base64

    from bigdl_vectors import write_bigdl_file

    primary = os.urandom(32)
    key_file = tmp_path / "primary.key"
    key_file.write_text(base64.b64encode(primary).decode())
    plaintext = b"name,age,job\nann,30,Developer\n" * 1000
    strong_text = base64.b64encode(os.urandom(32))  # 44 characters: no zero padding
    src = tmp_path / "people.cbc"
    src.write_bytes(write_bigdl_file(plaintext, primary_key=primary, data_key_text=strong_text,
                                     iv=os.urandom(16)).data)
    out = tmp_path / "people.csv"
    result = run("decrypt", str(src), str(out), "--mode", "AES/CBC/PKCS5Padding",
                 "--bigdl-primary-key", str(key_file))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == plaintext

    # BigDL's own key generation (24-character text) is weak: refused unless explicitly allowed.
    weak_text = base64.b64encode(os.urandom(16))
    src.write_bytes(write_bigdl_file(plaintext, primary_key=primary, data_key_text=weak_text,
                                     iv=os.urandom(16)).data)
    out.unlink()
    before = digest(src)
    result = run("decrypt", str(src), str(out), "--mode", "AES/CBC/PKCS5Padding",
                 "--bigdl-primary-key", str(key_file))
    _assert_clean_failure(result, 5, "weak BigDL legacy key", src, before, out)
    assert "--unsafe-allow-weak-legacy-keys" in result.stderr
    result = run("decrypt", str(src), str(out), "--mode", "AES/CBC/PKCS5Padding",
                 "--bigdl-primary-key", str(key_file), "--unsafe-allow-weak-legacy-keys")
    assert result.returncode == 0, result.stderr
    assert "ppml: warning:" in result.stderr
    assert out.read_bytes() == plaintext


def test_legacy_mode_needs_the_primary_key(tmp_path: Path) -> None:
    src = tmp_path / "x"
    src.write_bytes(b"x" * 500)
    result = run("decrypt", str(src), str(tmp_path / "y"), "--mode", "AES/CBC/PKCS5Padding")
    assert result.returncode == 2 and "--bigdl-primary-key" in result.stderr


def test_legacy_encrypt_warns_and_round_trips(tmp_path: Path) -> None:
    import base64

    key_file = tmp_path / "primary.key"
    key_file.write_text(base64.b64encode(os.urandom(16)).decode())
    src, enc, dec = tmp_path / "a.csv", tmp_path / "a.cbc", tmp_path / "b.csv"
    src.write_bytes(os.urandom(5000))
    args = ["--mode", "AES/CBC/PKCS5Padding", "--bigdl-primary-key", str(key_file)]
    result = run("encrypt", str(src), str(enc), *args)
    assert result.returncode == 0 and "legacy" in result.stderr.lower() and "warning" in result.stderr
    assert run("decrypt", str(enc), str(dec), *args).returncode == 0
    assert dec.read_bytes() == src.read_bytes()


def test_weak_key_flag_is_only_for_the_legacy_mode(tmp_path: Path, encrypted: Path, kms: str) -> None:
    result = run("decrypt", str(encrypted), str(tmp_path / "o"), "--kms", kms, "--unsafe-allow-weak-legacy-keys")
    assert result.returncode == 2


# -- progress ------------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_says_nothing_for_a_short_step_then_a_line_every_interval() -> None:
    import io

    from ppml.progress import Progress

    clock, stream = _Clock(), io.StringIO()
    with Progress("hashing", total=10, unit="files", stream=stream, tty=False, clock=clock) as progress:
        progress.update(1)
        clock.now += 1.9
        progress.update(1)
        assert stream.getvalue() == ""  # under 2 s: nothing
        clock.now += 0.2
        progress.update(1)
        clock.now += 5
        progress.update(1)  # within the 10 s interval: no new line
        clock.now += 10
        progress.report(7, 10)
    assert stream.getvalue().splitlines() == [
        "hashing: 3 files of 10 files (30 %)", "hashing: 7 files of 10 files (70 %)", "hashing: 7 files in 17.1 s"]

    quick = io.StringIO()
    with Progress("encrypted", total=5 << 30, unit="B", stream=quick, tty=False, clock=clock) as progress:
        progress.update(3 << 30)
        clock.now += 3
        progress.update(1 << 30)
    assert quick.getvalue().splitlines() == ["encrypted: 4.0 GiB of 5.0 GiB (80 %)", "encrypted: 4.0 GiB in 3.0 s"]


def test_enclave_build_reports_each_hashed_file(tmp_path: Path) -> None:
    from ppml.tee.gramine import build_manifest

    app = tmp_path / "app"
    app.mkdir()
    for index in range(5):
        (app / f"m{index}.py").write_text(f"x = {index}\n")
    reports: list[tuple[int, int]] = []
    manifest = build_manifest(entrypoint=app / "m0.py", app_files=[app], python_paths=[app],
                              progress=lambda done, total: reports.append((done, total)))
    total = len(manifest.trusted_files)
    assert reports == [(done, total) for done in range(1, total + 1)]
