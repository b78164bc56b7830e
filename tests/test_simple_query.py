"""SimpleQuery through `ppml submit` (and `ppml example`), for real: local-tee mode, client mode on
a standalone cluster (every executor attests under ppml's launcher and serves its processes through its own
key agent), and the ways it must fail."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import ppml
from ppml.datagen import generate_people
from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials, write_credentials
from ppml.spark.cluster import StandaloneCluster
from ppml.spark.session import write_secret_file
from ppml.tee.backends import load_or_create_platform_key
from servers import KmsServer

PPML = [sys.executable, "-m", "ppml.cli.main"]
EXAMPLE = Path(ppml.__file__).parent / "spark" / "examples" / "simple_query.py"


def failure_report(result: subprocess.CompletedProcess[str]) -> str:
    """What a failed submit printed, for the assertion message: the first exception lines (the cause
    sits at the top of a JVM trace, which the tail cuts off) and the tail of both streams."""
    output = result.stdout + result.stderr
    causes = [line for line in output.splitlines()
              if re.search(r"(Exception|Error)(:|$)|^Caused by|ERROR ", line) and not line.lstrip().startswith("at ")]
    return "\n".join(causes[:15]) + "\n...\n" + result.stdout[-2000:] + result.stderr[-2000:]


def ppml_run(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PPML, *args], capture_output=True, text=True, env=env, check=False, timeout=timeout)


class Deployment:
    """ppml serve + an enrolled app + a signed enclave for SimpleQuery + encrypted people data."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.platform_key = base / "platform" / "platform-key.pem"
        load_or_create_platform_key(self.platform_key)
        self.server = KmsServer(base / "kms", extra=["--trust-simulated-platform",
                                                     str(self.platform_key.with_name("platform-public.pem")),
                                                     "--no-access-log"])
        admin = RemoteKms(KmsEndpoint.parse(self.server.uri()), load_credentials(self.server.admin_credentials))
        self.credentials = {}
        for name in ("owner", "stranger"):
            app = admin.enroll()
            path = base / f"{name}.json"
            write_credentials(path, app.appid, app.apikey.decode())
            self.credentials[name] = path
        admin.close()
        self.env = {**os.environ, "PPML_AS_URL": self.server.base_url, "PPML_AS_CA": str(self.server.ca),
                    "PPML_KMS_CREDENTIALS": str(self.credentials["owner"]), "SPARK_LOCAL_IP": "127.0.0.1"}
        self.kms = self.server.uri(credentials=self.credentials["owner"])
        key, self.manifest, self.sig = base / "enclave.pem", base / "sq.manifest.toml", base / "sq.sig"
        package = Path(ppml.__file__).parent
        for args in (("enclave", "keygen", str(key)),
                     ("enclave", "build", "--app", str(package), "--entrypoint", str(EXAMPLE), "--python-path",
                      str(package.parent), "--out", str(self.manifest)),
                     ("enclave", "sign", str(self.manifest), "--key", str(key), "--out", str(self.sig))):
            result = ppml_run(*args)
            assert result.returncode == 0, result.stderr
        words = ppml_run("enclave", "measure", str(self.manifest), "--key", str(key)).stdout.split()
        self.mr_enclave, self.mr_signer = words[2], words[5]
        self.policy = self.register("--allow-simulated")
        owner = RemoteKms.from_uri(self.kms)
        self.input_key = owner.request("POST", "/v1/keys", {"release_policy": {"policy_ids": [self.policy],
                                                                      "allow_simulated": True}})["key_id"]
        self.output_key = owner.request("POST", "/v1/keys", {})["key_id"]
        owner.close()
        self.plain = base / "people.csv"
        self.expected = generate_people(self.plain, 30_000, seed=11).developers_20_40
        self.encrypted = base / "people.csv.ppml"
        result = ppml_run("encrypt", str(self.plain), str(self.encrypted), "--key", self.input_key, "--kms", self.kms,
                          "--segment-size", "65536", env=self.env)
        assert result.returncode == 0, result.stderr

    def register(self, *extra: str) -> str:
        result = ppml_run("attest", "register", "--mr-enclave", self.mr_enclave, "--mr-signer", self.mr_signer,
                          *extra, env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def submit(self, output: Path, *, policy: str | None = None, master: str = "local[2]",
               extra: tuple[str, ...] = (), kms: str | None = None) -> subprocess.CompletedProcess[str]:
        return ppml_run(
            "submit", "--master", master, "--tee", "simulated", "--policy", policy or self.policy,
            "--enclave-manifest", str(self.manifest), "--enclave-sig", str(self.sig),
            "--platform-key", str(self.platform_key), "--conf", "spark.ui.enabled=false", *extra,
            str(EXAMPLE), "--inputPath", str(self.encrypted), "--outputPath", str(output),
            "--outputPartitionNum", "2", "--kms", kms or self.kms, "--primaryKey", self.output_key, env=self.env)

    def submit_java(self, output: Path, *, master: str = "local[2]", extra: tuple[str, ...] = (),
                    input_path: Path | None = None) -> subprocess.CompletedProcess[str]:
        """The Java SimpleQuery (in ppml's JVM library) through ``ppml submit --class``."""
        from ppml.spark.jvm import library_jar

        return ppml_run(
            "submit", "--master", master, "--tee", "simulated", "--policy", self.policy,
            "--enclave-manifest", str(self.manifest), "--enclave-sig", str(self.sig),
            "--platform-key", str(self.platform_key), "--conf", "spark.ui.enabled=false", *extra,
            "--class", "org.ppml.examples.SimpleQuery", str(library_jar()),
            "--inputPath", str(input_path or self.encrypted), "--outputPath", str(output),
            "--outputPartitionNum", "2", "--kms", self.kms, "--primaryKey", self.output_key, env=self.env)

    def audit_operations(self) -> list[str]:
        import sqlite3

        with sqlite3.connect(self.server.data_dir / "kms.db") as db:
            return [row[0] for row in db.execute("SELECT operation FROM audit ORDER BY seq")]

    def audit_claims(self) -> list[tuple[str, str]]:
        import sqlite3

        with sqlite3.connect(self.server.data_dir / "kms.db") as db:
            return [(row[0], row[1] or "{}") for row in db.execute("SELECT operation, claims FROM audit ORDER BY seq")]

    def count_output(self, output: Path) -> int:
        decrypted = output.parent / (output.name + ".plain")
        result = ppml_run("decrypt", str(output), str(decrypted), "--kms", self.kms, "--force", env=self.env)
        assert result.returncode == 0, result.stderr
        rows = 0
        for part in decrypted.glob("part-*"):
            lines = part.read_text().splitlines()
            assert lines[0] == "name,age,job"
            rows += len(lines) - 1
        return rows


def _causes(text: str) -> str:
    """The lines of a failed JVM job's output that say why (its errors and their causes), not the
    stack frames that fill its tail."""
    wanted = re.compile(r"ppml|Exception|Caused by|ERROR|WARN|Error")
    lines = [line for line in text.splitlines() if wanted.search(line) and not line.lstrip().startswith("at ")]
    return "\n".join(lines[:80])


def run_on_a_standalone_cluster(deployment: Deployment, tmp_path: Path,
                                submit: Callable[..., subprocess.CompletedProcess[str]]) -> list[str]:
    """Run SimpleQuery (``submit``: Python or Java) in client mode on a fresh standalone cluster;
    check its answer and output and that every executor attested under ppml's launcher. Returns
    the executors' stdout logs."""
    secret = tmp_path / "rpc-secret"
    write_secret_file(secret)
    with StandaloneCluster(tmp_path / "cluster", secret_file=secret, worker_memory="1g") as cluster:
        output = tmp_path / "out"
        result = submit(output, master=cluster.master_url,
                        extra=("--secret-file", str(secret), "--executor-memory", "768m"))
    assert result.returncode == 0, failure_report(result)
    assert f"Num of Developer age between 20,40 is {deployment.expected}" in result.stdout
    assert deployment.count_output(output) == deployment.expected
    executor_logs = [p.read_text(errors="replace") for p in (tmp_path / "cluster").glob("worker-*/app-*/*/stdout")]
    assert executor_logs and all("Attestation Success!" in log for log in executor_logs), executor_logs
    return executor_logs


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    d = Deployment(tmp_path_factory.mktemp("simple-query"))
    try:
        yield d
    finally:
        d.server.stop()


@pytest.mark.slow
@pytest.mark.spark
def test_simple_query_in_local_tee_mode(deployment: Deployment, tmp_path: Path) -> None:
    output = tmp_path / "out"
    before = len(deployment.audit_operations())
    result = deployment.submit(output)
    assert result.returncode == 0, failure_report(result)
    assert result.stdout.splitlines()[0] == "Attestation Success!"
    assert "Num of rows in people is 30000" in result.stdout
    assert f"Num of Developer age between 20,40 is {deployment.expected}" in result.stdout
    assert deployment.count_output(output) == deployment.expected
    operations = deployment.audit_operations()
    assert "DecryptForTee" in operations and "GenerateDataKeyForTee" in operations
    # Every key reached the job's processes through the runtime's key agent, i.e. through the one
    # session that attested at the gate: one token behind every release (workers did not attest).
    tokens = {json.loads(claims)["token_id"] for operation, claims in deployment.audit_claims()[before:]
              if operation.endswith("ForTee")}
    assert len(tokens) == 1, tokens


@pytest.mark.slow
@pytest.mark.spark
def test_failed_attestation_stops_the_job_before_any_key_is_requested(deployment: Deployment,
                                                                      tmp_path: Path) -> None:
    strict = deployment.register()  # no allow_simulated
    before = deployment.audit_operations()
    output = tmp_path / "out"
    result = deployment.submit(output, policy=strict)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == "Attestation Fail! Application killed!"
    assert not re.search(r"Num of rows in people is \d", result.stdout)
    assert not output.exists()
    after = deployment.audit_operations()[len(before):]
    assert not any(op.startswith(("Decrypt", "GenerateDataKey")) for op in after), after


@pytest.mark.slow
@pytest.mark.spark
def test_another_apps_credentials_fail_before_any_row(deployment: Deployment, tmp_path: Path) -> None:
    output = tmp_path / "out"
    stranger = deployment.server.uri(credentials=deployment.credentials["stranger"])
    result = deployment.submit(output, kms=stranger)
    assert result.returncode != 0
    assert not re.search(r"Num of rows in people is \d", result.stdout)
    assert "cannot decrypt" in result.stdout + result.stderr
    assert not output.exists() or not list(output.glob("part-*"))


@pytest.mark.slow
@pytest.mark.spark
def test_tampered_input_fails_naming_the_file_and_commits_nothing(deployment: Deployment, tmp_path: Path) -> None:
    data = bytearray(deployment.encrypted.read_bytes())
    data[len(data) // 2] ^= 0x04
    tampered = tmp_path / "input" / "part-00000.csv.ppml"
    tampered.parent.mkdir()
    tampered.write_bytes(bytes(data))
    output = tmp_path / "out"
    result = ppml_run(
        "submit", "--master", "local[2]", "--tee", "simulated", "--policy", deployment.policy,
        "--enclave-manifest", str(deployment.manifest), "--enclave-sig", str(deployment.sig),
        "--platform-key", str(deployment.platform_key), "--conf", "spark.ui.enabled=false", str(EXAMPLE),
        "--inputPath", str(tampered.parent), "--outputPath", str(output), "--kms", deployment.kms,
        "--primaryKey", deployment.output_key, env=deployment.env)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "part-00000.csv.ppml" in text and "cannot decrypt" in text
    assert not output.exists() or not list(output.glob("part-*"))


@pytest.mark.slow
@pytest.mark.spark
def test_simple_query_in_client_mode_on_a_standalone_cluster(deployment: Deployment, tmp_path: Path) -> None:
    """The driver passes the gate here; each executor starts under ppml's launcher, which attests
    its TEE and serves the JVM and its Python workers through a key agent of its own."""
    before = len(deployment.audit_operations())
    executor_logs = run_on_a_standalone_cluster(deployment, tmp_path, deployment.submit)
    released = [(op, json.loads(claims)) for op, claims in deployment.audit_claims()[before:] if op.endswith("ForTee")]
    assert released, "the executors received no data key through attestation"
    # One session per TEE: the driver's gate and one per executor (Python workers did not attest).
    tokens = {claims["token_id"] for _, claims in released}
    assert len(tokens) <= 1 + len(executor_logs), tokens



@pytest.mark.slow
@pytest.mark.spark
def test_example_runs_from_a_shell_without_the_virtual_environment(tmp_path: Path) -> None:
    """`ppml example simple-query` starts Spark in its own process; Spark's Python workers (which
    run the ppml source) must get this interpreter even when neither $PATH nor $PYSPARK_PYTHON
    points at it, as in a shell where the venv is not activated."""
    kms = f"local:{tmp_path / 'keys'}"
    key_id = ppml_run("key", "create", "--kms", kms).stdout.strip()
    expected = generate_people(tmp_path / "people.csv", 500, seed=5).developers_20_40
    assert ppml_run("encrypt", str(tmp_path / "people.csv"), str(tmp_path / "people.csv.ppml"), "--key", key_id,
                    "--kms", kms).returncode == 0
    venv_bin = str(Path(sys.executable).parent)
    env = {name: value for name, value in os.environ.items() if name not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON",
                                                                           "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep) if d and d != venv_bin)
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    result = ppml_run("example", "simple-query", "--inputPath", str(tmp_path / "people.csv.ppml"), "--outputPath",
                      str(tmp_path / "out"), "--kms", kms, "--primaryKey", key_id, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Num of Developer age between 20,40 is {expected}" in result.stdout


@pytest.mark.slow
@pytest.mark.spark
def test_java_simple_query_in_local_tee_mode(deployment: Deployment, tmp_path: Path) -> None:
    """A JVM application: Spark's own csv reader and writer over envelopes (ppml's codec), its keys
    from the gate's key agent; the output decrypts with ppml decrypt to the generator's count."""
    output = tmp_path / "out"
    before = len(deployment.audit_operations())
    result = deployment.submit_java(output)
    assert result.returncode == 0, failure_report(result)
    assert result.stdout.splitlines()[0] == "Attestation Success!"
    assert "Num of rows in people is 30000" in result.stdout
    assert f"Num of Developer age between 20,40 is {deployment.expected}" in result.stdout
    assert sorted(p.suffix for p in output.glob("part-*")) == [".ppml", ".ppml"]
    assert deployment.count_output(output) == deployment.expected
    tokens = {json.loads(claims)["token_id"] for operation, claims in deployment.audit_claims()[before:]
              if operation.endswith("ForTee")}
    assert len(tokens) == 1, tokens


@pytest.mark.slow
@pytest.mark.spark
def test_java_simple_query_on_a_standalone_cluster(deployment: Deployment, tmp_path: Path) -> None:
    run_on_a_standalone_cluster(deployment, tmp_path, deployment.submit_java)


@pytest.mark.slow
@pytest.mark.spark
def test_java_simple_query_fails_before_any_row_when_the_key_is_not_released_to_this_tee(
        deployment: Deployment, tmp_path: Path) -> None:
    """The input's key releases only to another enclave's policy: the gate passes, the key agent asks,
    the KMS refuses the release, and the JVM job fails naming the refusal, with no count and no output."""
    result = ppml_run("attest", "register", "--mr-enclave", "ab" * 32, "--mr-signer", deployment.mr_signer,
                      "--allow-simulated", env=deployment.env)
    assert result.returncode == 0, result.stderr
    other_policy = result.stdout.strip()
    owner = RemoteKms.from_uri(deployment.kms)
    foreign_key = owner.request("POST", "/v1/keys", {"release_policy": {"policy_ids": [other_policy],
                                                                        "allow_simulated": True}})["key_id"]
    owner.close()
    encrypted = tmp_path / "people.csv.ppml"
    result = ppml_run("encrypt", str(deployment.plain), str(encrypted), "--key", foreign_key, "--kms", deployment.kms,
                      env=deployment.env)
    assert result.returncode == 0, result.stderr
    output = tmp_path / "out"
    result = deployment.submit_java(output, input_path=encrypted)
    assert result.returncode != 0
    assert result.stdout.splitlines()[0] == "Attestation Success!"
    assert not re.search(r"Num of rows in people is \d", result.stdout)
    text = result.stdout + result.stderr
    assert "ppml: TokenRejected" in text and "release policy refuses this workload" in text, _causes(text)
    assert str(encrypted) in text
    assert not output.exists() or not list(output.glob("part-*"))
