"""The attestation workflow end to end, with real processes and HTTPS: enclave keygen, build,
measure and sign; register the policy; `ppml tee run` with the simulated TEE; key release to the
attested workload only; and each way it must fail (`Attestation Fail! Application killed!`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials, write_credentials
from ppml.tee.backends import load_or_create_platform_key
from servers import KmsServer

PPML = [sys.executable, "-m", "ppml.cli.main"]

APP = textwrap.dedent("""
    import base64, json, os, sys
    from pathlib import Path
    from ppml.kms.remote import RemoteKms
    from ppml.tee.session import current_session
    from ppml.core.keys import SECRET_ACCESS

    Path(os.environ["MARKER"]).write_text("ran")
    session = current_session()
    kms = RemoteKms.from_uri(os.environ["KMS_URI"], attestation=session)
    job = json.loads(Path(os.environ["JOB"]).read_text())
    key = kms.unwrap_data_key(job["key_id"], base64.b64decode(job["wrapped"]))
    print("UNWRAPPED", key.export(SECRET_ACCESS).hex() == job["expected"])
""")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PPML, *args], capture_output=True, text=True, env=env, check=False, timeout=120)


class World:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.platform_key = base / "platform" / "platform-key.pem"
        load_or_create_platform_key(self.platform_key)
        self.server = KmsServer(base / "kms", extra=["--trust-simulated-platform",
                                                     str(self.platform_key.with_name("platform-public.pem"))])
        admin = RemoteKms(KmsEndpoint.parse(self.server.uri()), load_credentials(self.server.admin_credentials))
        credentials = admin.enroll()
        admin.close()
        self.credentials = base / "app.json"
        write_credentials(self.credentials, credentials.appid, credentials.apikey.decode())
        self.kms_uri = self.server.uri(credentials=self.credentials)
        self.env = {**os.environ, "PPML_AS_URL": self.server.base_url, "PPML_AS_CA": str(self.server.ca),
                    "PPML_KMS_CREDENTIALS": str(self.credentials)}
        # the trusted application
        self.app_dir = base / "app"
        self.app_dir.mkdir()
        self.app = self.app_dir / "job.py"
        self.app.write_text(APP)
        self.key = base / "enclave-key.pem"
        self.manifest = base / "job.manifest.toml"
        self.sig = base / "job.sig"
        assert run("enclave", "keygen", str(self.key)).returncode == 0
        built = run("enclave", "build", "--app", str(self.app_dir), "--entrypoint", str(self.app),
                    "--out", str(self.manifest), "--python-path", str(self.app_dir))
        assert built.returncode == 0, built.stderr
        measured = run("enclave", "measure", str(self.manifest), "--key", str(self.key))
        assert measured.returncode == 0, measured.stderr
        lines = measured.stdout.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("mr_enclave : ") and lines[1].startswith("mr_signer : ")
        self.mr_enclave = lines[0].split(" : ")[1]
        self.mr_signer = lines[1].split(" : ")[1]
        assert len(self.mr_enclave) == 64 and len(self.mr_signer) == 64
        signed = run("enclave", "sign", str(self.manifest), "--key", str(self.key), "--out", str(self.sig))
        assert signed.returncode == 0, signed.stderr

    def register(self, *extra: str) -> str:
        result = run("attest", "register", "--mr-enclave", self.mr_enclave, "--mr-signer", self.mr_signer,
                     *extra, env=self.env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def gated_job(self, policy_id: str) -> Path:
        """A primary key that releases only to ``policy_id``, and a data key wrapped under it."""
        owner = RemoteKms.from_uri(self.kms_uri)
        release_policy = {"policy_ids": [policy_id], "allow_simulated": True}
        key = owner.request("POST", "/v1/keys", {"release_policy": release_policy})
        generated = owner.generate_data_key(key["key_id"])
        owner.close()
        import base64

        from ppml.core.keys import SECRET_ACCESS

        job = self.base / f"job-{policy_id[:8]}.json"
        job.write_text(json.dumps({"key_id": key["key_id"], "wrapped": base64.b64encode(generated.wrapped).decode(),
                                   "expected": generated.data_key.export(SECRET_ACCESS).hex()}))
        return job

    def tee_run(self, policy_id: str, job: Path, marker: Path, *, sig: Path | None = None,
                manifest: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "KMS_URI": self.kms_uri, "JOB": str(job), "MARKER": str(marker)}
        return run("tee", "run", "--backend", "simulated", "--policy", policy_id,
                   "--enclave-manifest", str(manifest or self.manifest), "--enclave-sig", str(sig or self.sig),
                   "--platform-key", str(self.platform_key), "--", sys.executable, str(self.app), env=env)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("tee"))
    try:
        yield w
    finally:
        w.server.stop()


def test_attested_workload_receives_its_key(world: World, tmp_path: Path) -> None:
    policy_id = world.register("--allow-simulated")
    job, marker = world.gated_job(policy_id), tmp_path / "ran"
    result = world.tee_run(policy_id, job, marker)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == "Attestation Success!"
    assert "UNWRAPPED True" in result.stdout
    assert "SIMULATED" in result.stderr  # says so, every time
    assert marker.exists()


AGENT_APP = textwrap.dedent("""
    import base64, json, os
    from pathlib import Path
    from ppml.core.keys import SECRET_ACCESS
    from ppml.tee.agent import AgentKms
    assert "PPML_KMS_CREDENTIALS" not in os.environ
    job = json.loads(Path(os.environ["JOB"]).read_text())
    kms = AgentKms(os.environ["KMS_URI_NO_CREDENTIALS"])
    key = kms.unwrap_data_key(job["key_id"], base64.b64decode(job["wrapped"]))
    print("AGENT UNWRAPPED", key.export(SECRET_ACCESS).hex() == job["expected"])
""")


def test_the_workload_gets_its_key_through_the_key_agent(world: World, tmp_path: Path) -> None:
    """Under `ppml tee run` the workload asks the runtime's key agent: it holds no KMS credential,
    no token and no TEE key, and the gated key still reaches it (released to the attested session)."""
    policy_id = world.register("--allow-simulated")
    job = world.gated_job(policy_id)
    agent_uri = world.server.uri()  # no credentials: the agent's own environment has them
    env = {**world.env, "JOB": str(job), "KMS_URI_NO_CREDENTIALS": agent_uri}
    script = tmp_path / "agent_app.py"
    script.write_text(AGENT_APP)
    result = run("tee", "run", "--backend", "simulated", "--policy", policy_id,
                 "--enclave-manifest", str(world.manifest), "--enclave-sig", str(world.sig),
                 "--platform-key", str(world.platform_key), "--",
                 "env", "-u", "PPML_KMS_CREDENTIALS", sys.executable, str(script), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "AGENT UNWRAPPED True" in result.stdout
    # Outside the gate there is no agent, and the message says how to get one.
    outside = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False,
                             env={k: v for k, v in env.items() if k != "PPML_KMS_CREDENTIALS"})
    assert outside.returncode != 0 and "UNWRAPPED" not in outside.stdout
    assert "no key agent: $PPML_KEY_AGENT is not set" in outside.stderr


def test_the_same_workload_outside_the_gate_gets_nothing(world: World, tmp_path: Path) -> None:
    policy_id = world.register("--allow-simulated")
    job, marker = world.gated_job(policy_id), tmp_path / "ran"
    env = {**world.env, "KMS_URI": world.kms_uri, "JOB": str(job), "MARKER": str(marker)}
    result = subprocess.run([sys.executable, str(world.app)], capture_output=True, text=True, env=env, check=False)
    assert result.returncode != 0
    assert "PermissionDenied" in result.stderr and "attested TEEs" in result.stderr
    assert "UNWRAPPED" not in result.stdout


def _assert_killed(result: subprocess.CompletedProcess[str], marker: Path, reason: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "Attestation Fail! Application killed!"
    assert "Attestation Success!" not in result.stdout
    assert not marker.exists(), "the command ran although attestation failed"
    assert reason in result.stderr, result.stderr


def test_policy_without_allow_simulated_kills_the_app(world: World, tmp_path: Path) -> None:
    policy_id = world.register()
    marker = tmp_path / "ran"
    _assert_killed(world.tee_run(policy_id, world.gated_job(policy_id), marker), marker, "allow_simulated")


def test_policy_for_another_enclave_kills_the_app(world: World, tmp_path: Path) -> None:
    result = run("attest", "register", "--mr-enclave", "ab" * 32, "--mr-signer", world.mr_signer,
                 "--allow-simulated", env=world.env)
    policy_id = result.stdout.strip()
    marker = tmp_path / "ran"
    _assert_killed(world.tee_run(policy_id, world.gated_job(policy_id), marker), marker, "mr_enclave")


def test_changed_trusted_file_kills_the_app(world: World, tmp_path: Path) -> None:
    policy_id = world.register("--allow-simulated")
    job, marker = world.gated_job(policy_id), tmp_path / "ran"
    original = world.app.read_text()
    world.app.write_text(original + "\nprint('injected')\n")
    try:
        _assert_killed(world.tee_run(policy_id, job, marker), marker, str(world.app))
    finally:
        world.app.write_text(original)


def test_manifest_not_matching_the_signature_kills_the_app(world: World, tmp_path: Path) -> None:
    policy_id = world.register("--allow-simulated")
    other = tmp_path / "other.manifest.toml"
    other.write_text(world.manifest.read_text().replace("sgx.max_threads = 64", "sgx.max_threads = 32"))
    marker = tmp_path / "ran"
    _assert_killed(world.tee_run(policy_id, world.gated_job(policy_id), marker, manifest=other), marker,
                   "not the manifest")


def test_unknown_policy_kills_the_app(world: World, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    job = world.gated_job(world.register("--allow-simulated"))
    _assert_killed(world.tee_run("00000000-0000-4000-8000-000000000000", job, marker), marker, "no policy")


def test_unreachable_attestation_service_kills_the_app(world: World, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    policy_id = world.register("--allow-simulated")
    env = {**world.env, "PPML_AS_URL": "https://127.0.0.1:9", "KMS_URI": world.kms_uri,
           "JOB": str(world.gated_job(policy_id)), "MARKER": str(marker)}
    result = run("tee", "run", "--backend", "simulated", "--policy", policy_id, "--enclave-manifest",
                 str(world.manifest), "--enclave-sig", str(world.sig), "--platform-key", str(world.platform_key),
                 "--", sys.executable, str(world.app), env=env)
    _assert_killed(result, marker, "unavailable")


def test_attest_verify_cli(world: World, tmp_path: Path) -> None:
    """`ppml attest verify QUOTE_FILE --policy ID` on simulated evidence."""
    from ppml.tee.simulated import simulated_from_enclave

    tee = simulated_from_enclave(manifest=world.manifest, sigstruct=world.sig, platform_key_path=world.platform_key)
    quote = tmp_path / "quote.bin"
    with pytest.warns(Warning):
        quote.write_bytes(tee.get_evidence(bytes(64)).data)
    good = world.register("--allow-simulated")
    result = run("attest", "verify", str(quote), "--policy", good, env=world.env)
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["match"] is True and verdict["claims"]["mr_enclave"] == world.mr_enclave
    strict = world.register()
    result = run("attest", "verify", str(quote), "--policy", strict, env=world.env)
    assert result.returncode == 8 and "allow_simulated" in result.stdout
    # the refusal names the reason and, beside it, the measurements the evidence states
    assert f"does not match policy {strict}: simulated evidence" in result.stderr
    assert re.search(rf"^ +mr_enclave +{world.mr_enclave}$", result.stderr, re.MULTILINE), result.stderr
    assert "SIMULATED TEE" in result.stderr and "Traceback" not in result.stderr
    # a service that cannot verify the evidence at all: the same measurements beside its reason
    tdx = tmp_path / "tdx_quote_4.dat"
    tdx.write_bytes((Path(__file__).parent / "vectors" / "attestation" / "tdx_quote_4.dat").read_bytes())
    result = run("attest", "verify", str(tdx), env=world.env)
    assert result.returncode == 8 and "does not verify tdx evidence" in result.stderr
    assert re.search(r"^ +mr_td +705ee938", result.stderr, re.MULTILINE), result.stderr


def test_verify_service_with_the_simulated_service_tee(world: World, tmp_path: Path) -> None:
    """`ppml attest verify-service`: the service attests itself (GenerateQuote) with our challenge
    bound into its evidence; we verify it locally. Simulated, so it must be trusted explicitly."""
    platform_public = str(world.platform_key.with_name("platform-public.pem"))
    server = KmsServer(tmp_path / "self-attesting", extra=[
        "--self-tee", "simulated", "--self-enclave-manifest", str(world.manifest),
        "--self-enclave-sig", str(world.sig), "--self-platform-key", str(world.platform_key)])
    try:
        uri = server.uri("ehsm+https", credentials=server.admin_credentials)
        good = run("attest", "verify-service", uri, "--trust-simulated-platform", platform_public,
                   "--mr-enclave", world.mr_enclave)
        assert good.returncode == 0, good.stdout + good.stderr
        assert "Attestation Success!" in good.stdout and world.mr_enclave in good.stdout
        wrong = run("attest", "verify-service", uri, "--trust-simulated-platform", platform_public,
                    "--mr-enclave", "cd" * 32)
        assert wrong.returncode == 8 and "Attestation Fail!" in wrong.stdout and "not " in wrong.stderr
        untrusted = run("attest", "verify-service", uri)
        assert untrusted.returncode == 8 and "SIMULATED" in untrusted.stderr
    finally:
        server.stop()
    # a service that is not in a TEE says so
    plain = run("attest", "verify-service", world.server.uri("ehsm+https", credentials=world.server.admin_credentials))
    assert plain.returncode == 8 and "does not run in a TEE" in plain.stderr


def test_malformed_policy_is_a_400_not_a_server_error(world: World) -> None:
    result = run("attest", "register", "--mr-enclave", "not-hex", "--mr-signer", world.mr_signer, env=world.env)
    assert result.returncode != 0
    assert "mr_enclave must be 64 hex characters" in result.stderr
    assert "unavailable" not in result.stderr
