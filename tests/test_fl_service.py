"""The FL service over real gRPC + TLS on loopback: the coordinator attested by the real attestation
service (simulated TEE), parties with federation certificates, and every refusal path."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("grpc")

import ppml
from ppml.attestation.client import AttestationClient
from ppml.cli.deployment import LocalDeployment, Steps, local_deployment
from ppml.errors import CoordinatorNotAttested, InvalidPeerMessage, RoundAborted
from ppml.fl.channel import Channel, Message
from ppml.fl.service import (
    Coordinator,
    CoordinatorAttestation,
    CoordinatorVerifier,
    PartyIdentity,
    RoundSpec,
    connect,
    fl_pb2,
    issue_federation,
)
from ppml.tee.registry import open_backend
from ppml.tee.runtime import attest

pytestmark = pytest.mark.slow

SERVICE_DIR = Path(ppml.__file__).parent / "fl" / "service"


class Federation:
    """ppml serve (KMS + attestation service), a coordinator policy, an attested session, and
    certificates for parties a, b and an outsider from another CA."""

    def __init__(self, deployment: LocalDeployment, base: Path) -> None:
        self.deployment = deployment
        backend = open_backend("simulated", manifest=deployment.manifest, sigstruct=deployment.sig,
                               platform_key_path=deployment.platform_key)
        client = AttestationClient(deployment.server.url, ca_path=deployment.server.ca)
        self.session = attest(backend, client, [deployment.policy_id])
        client.close()
        self.certs = base / "certs"
        issue_federation(self.certs, ["a", "b", "c"])
        issue_federation(base / "other-ca", ["a"])
        self.outsider = PartyIdentity.from_files(certificate=base / "other-ca" / "a.pem",
                                                 private_key=base / "other-ca" / "a.key", ca=self.certs / "ca.pem")

    def identity(self, name: str) -> PartyIdentity:
        return PartyIdentity.from_files(certificate=self.certs / f"{name}.pem", private_key=self.certs / f"{name}.key",
                                        ca=self.certs / "ca.pem")

    def verifier(self, policy: str | None = None) -> CoordinatorVerifier:
        return CoordinatorVerifier.from_service(self.deployment.server.url, ca=self.deployment.server.ca,
                                                policy_id=policy or self.deployment.policy_id)

    def coordinator(self, parties: tuple[str, ...] = ("a", "b"), *, attested: bool = True,
                    local: dict[str, Callable[[Channel], Any]] | None = None,
                    recorded: list[Message] | None = None, job: str = "test",
                    **spec: Any) -> tuple[Coordinator, str]:
        round_spec = RoundSpec(round_id="r1", job=job, parties=parties, local_parties=tuple(local or {}), **spec)
        coordinator = Coordinator(round_spec, attestation=CoordinatorAttestation(self.session) if attested else None,
                                  local_roles=local, recorder=recorded.append if recorded is not None else None)
        port = coordinator.start(host="127.0.0.1", port=0, client_ca_pem=(self.certs / "ca.pem").read_bytes())
        return coordinator, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    base = tmp_path_factory.mktemp("fl-service")
    with local_deployment(base / "deployment", Steps(), entrypoint=Path(ppml.__file__).parent / "cli" / "main.py") as d:
        yield Federation(d, base)


def run_round(federation: Federation, address: str, roles: dict[str, Callable[[Channel], Any]],
              **connect_args: Any) -> dict[str, Any]:
    """Each party in a thread: connect, run its role, close; returns results or exceptions."""
    results: dict[str, Any] = {}

    def party(name: str, role: Callable[[Channel], Any]) -> None:
        try:
            with connect(address, identity=federation.identity(name), verifier=federation.verifier(),
                         round_id="r1", job="test", **connect_args) as channel:
                results[name] = role(channel)
        except Exception as exc:  # collected for the test to assert on
            results[name] = exc

    threads = [threading.Thread(target=party, args=item) for item in roles.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_a_round_relays_in_order_between_parties_and_a_coordinator_role(federation: Federation) -> None:
    recorded: list[Message] = []

    def arbiter(channel: Channel) -> bytes:
        return channel.receive("a", "hello") + channel.receive("b", "hello")

    coordinator, address = federation.coordinator(local={"arbiter": arbiter}, recorded=recorded)

    def a(channel: Channel) -> bytes:
        channel.send("b", "ping", b"1")
        channel.send("b", "ping", b"2")
        channel.send("arbiter", "hello", b"A")
        return channel.receive("b", "pong")

    def b(channel: Channel) -> list[bytes]:
        got = [channel.receive("a", "ping"), channel.receive("a", "ping")]
        channel.send("a", "pong", b"".join(got))
        channel.send("arbiter", "hello", b"B")
        return got

    results = run_round(federation, address, {"a": a, "b": b})
    assert coordinator.run() == {"arbiter": b"AB"}
    assert results == {"a": b"12", "b": [b"1", b"2"]}
    assert [(m.sender, m.recipient, m.kind, m.seq) for m in recorded if m.recipient == "b"] == [
        ("a", "b", "ping", 1), ("a", "b", "ping", 2)]
    assert {m.sender for m in recorded} == {"a", "b"}


def test_an_unattested_coordinator_is_refused_before_anything_is_sent(federation: Federation) -> None:
    recorded: list[Message] = []
    coordinator, address = federation.coordinator(attested=False, recorded=recorded, join_timeout=1)
    with pytest.raises(CoordinatorNotAttested, match="no attestation token"):
        connect(address, identity=federation.identity("a"), verifier=federation.verifier(), round_id="r1", job="test")
    with pytest.raises(RoundAborted, match="did not join"):
        coordinator.run()
    assert recorded == []


def test_a_coordinator_attested_under_another_policy_is_refused(federation: Federation) -> None:
    coordinator, address = federation.coordinator(join_timeout=1)
    other = federation.deployment
    from ppml.cli.deployment import ppml_command

    policy = ppml_command("attest", "register", "--mr-enclave", "ab" * 32, "--mr-signer", other.mr_signer,
                          "--allow-simulated", env=other.env).stdout.strip()
    with pytest.raises(CoordinatorNotAttested, match="not " + repr(policy).replace("'", ".")):
        connect(address, identity=federation.identity("a"), verifier=federation.verifier(policy),
                round_id="r1", job="test")
    with pytest.raises(RoundAborted):
        coordinator.run()


def test_a_forged_token_is_refused(federation: Federation) -> None:
    class Forged:
        token = federation.session.token[:-8] + "AAAAAAAA"

        def sign(self, message: bytes) -> bytes:
            return federation.session.sign(message)

    coordinator = Coordinator(RoundSpec(round_id="r1", job="test", parties=("a", "b"), join_timeout=1),
                              attestation=CoordinatorAttestation(Forged()))
    port = coordinator.start(host="127.0.0.1", port=0, client_ca_pem=(federation.certs / "ca.pem").read_bytes())
    with pytest.raises(CoordinatorNotAttested, match="token was refused"):
        connect(f"127.0.0.1:{port}", identity=federation.identity("a"), verifier=federation.verifier(),
                round_id="r1", job="test")
    with pytest.raises(RoundAborted):
        coordinator.run()


def test_a_party_with_a_certificate_from_another_ca_is_refused(federation: Federation) -> None:
    coordinator, address = federation.coordinator(join_timeout=1)
    from ppml.errors import ServiceUnavailable

    with pytest.raises(ServiceUnavailable):
        connect(address, identity=federation.outsider, verifier=federation.verifier(), round_id="r1", job="test")
    with pytest.raises(RoundAborted, match="did not join"):
        coordinator.run()


def test_a_party_not_in_the_round_is_refused(federation: Federation) -> None:
    coordinator, address = federation.coordinator(("a", "b"), join_timeout=1)
    with pytest.raises(RoundAborted, match="not a party of this round"):
        connect(address, identity=federation.identity("c"), verifier=federation.verifier(), round_id="r1", job="test")
    with pytest.raises(RoundAborted):
        coordinator.run()


def test_a_disconnect_mid_protocol_aborts_the_round_for_everyone(federation: Federation) -> None:
    coordinator, address = federation.coordinator()

    def a(channel: Channel) -> bytes:
        channel.send("b", "step", b"1")
        return channel.receive("b", "step")  # b vanishes instead of answering

    def b(channel: Channel) -> None:
        channel.receive("a", "step")
        channel._grpc_channel.close()  # type: ignore[attr-defined]
        raise ConnectionError("b's process died")

    results = run_round(federation, address, {"a": a, "b": b})
    assert isinstance(results["a"], RoundAborted) and "b" in results["a"].reason
    with pytest.raises(RoundAborted, match="b"):
        coordinator.run()


def test_a_replayed_message_aborts_the_round(federation: Federation) -> None:
    coordinator, address = federation.coordinator()

    def a(channel: Channel) -> bytes:
        channel.send("b", "step", b"1")
        replay = fl_pb2.Frame(envelope=fl_pb2.Envelope(recipient="b", kind="step", seq=1, payload=b"1"))
        channel.send_raw(replay)  # type: ignore[attr-defined]
        return channel.receive("b", "never")

    def b(channel: Channel) -> bytes:
        channel.receive("a", "step")
        return channel.receive("a", "step")

    results = run_round(federation, address, {"a": a, "b": b})
    assert isinstance(results["a"], RoundAborted) and "replayed or out of order" in results["a"].reason
    assert isinstance(results["b"], RoundAborted)
    with pytest.raises(RoundAborted, match="replayed"):
        coordinator.run()


def test_a_message_of_the_wrong_kind_is_refused_by_its_recipient(federation: Federation) -> None:
    coordinator, address = federation.coordinator()

    def a(channel: Channel) -> bytes:
        channel.send("b", "gradient", b"x")
        return channel.receive("b", "never")

    def b(channel: Channel) -> bytes:
        return channel.receive("a", "public-key")

    results = run_round(federation, address, {"a": a, "b": b})
    assert isinstance(results["b"], InvalidPeerMessage)
    assert isinstance(results["a"], RoundAborted) and "expected 'public-key'" in results["a"].reason
    with pytest.raises(RoundAborted):
        coordinator.run()


def test_an_oversized_message_is_refused(federation: Federation) -> None:
    coordinator, address = federation.coordinator(max_message=1024)

    def a(channel: Channel) -> bytes:
        raw = fl_pb2.Frame(envelope=fl_pb2.Envelope(recipient="b", kind="step", seq=1, payload=b"x" * 2000))
        channel.send_raw(raw)  # type: ignore[attr-defined]
        return channel.receive("b", "never")

    def b(channel: Channel) -> bytes:
        return channel.receive("a", "step")

    results = run_round(federation, address, {"a": a, "b": b}, max_message=1024)
    assert isinstance(results["a"], RoundAborted) and "limit" in results["a"].reason
    assert isinstance(results["b"], RoundAborted)
    with pytest.raises(RoundAborted):
        coordinator.run()


def test_checked_in_stubs_match_the_proto(tmp_path: Path) -> None:
    """fl_pb2*.py are generated from fl.proto; regenerate and compare, so they never drift."""
    pytest.importorskip("grpc_tools")
    src = SERVICE_DIR.parents[2]
    result = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{src}", f"--python_out={tmp_path}",
                             f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", "ppml/fl/service/fl.proto"],
                            cwd=src, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    for name in ("fl_pb2.py", "fl_pb2.pyi", "fl_pb2_grpc.py"):
        assert (tmp_path / "ppml" / "fl" / "service" / name).read_text() == (SERVICE_DIR / name).read_text(), name


def test_a_party_process_whose_peer_vanishes_fails_cleanly_and_writes_nothing(federation: Federation,
                                                                                tmp_path: Path) -> None:
    """``ppml fl client align`` as its own process (party a) while party b crashes mid-protocol: a
    exits with the round's reason and its output directory never appears."""
    from ppml.cli.deployment import ppml_command

    deployment = federation.deployment
    key = deployment.create_key("fl test", gated=False)
    plain, encrypted = tmp_path / "a.csv", tmp_path / "a.csv.ppml"
    plain.write_text("id,x\n" + "".join(f"id-{i:05d},{i}\n" for i in range(300)))
    ppml_command("encrypt", str(plain), str(encrypted), "--key", key, "--kms", deployment.kms_uri, env=deployment.env)
    coordinator, address = federation.coordinator(job="align")
    output = tmp_path / "aligned"
    process = subprocess.Popen(
        [sys.executable, "-m", "ppml.cli.main", "fl", "client", "align", "--coordinator", address, "--round-id", "r1",
         "--coordinator-policy", deployment.policy_id, "--cert", str(federation.certs / "a.pem"),
         "--key", str(federation.certs / "a.key"), "--ca", str(federation.certs / "ca.pem"),
         "--kms", deployment.kms_uri, "--input", str(encrypted), "--leader", "a", "--member", "b",
         "--output", str(output), "--output-key", key, "--workers", "1"],
        env=deployment.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    channel = connect(address, identity=federation.identity("b"), verifier=federation.verifier(), round_id="r1",
                      job="align")
    channel.receive("a", "psi-hello")
    channel._grpc_channel.close()  # b's process dies mid-protocol
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 9, stdout + stderr
    assert "round aborted" in stderr and "b" in stderr
    assert not output.exists() and not list(tmp_path.glob("aligned*"))
    with pytest.raises(RoundAborted):
        coordinator.run()
