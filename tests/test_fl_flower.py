"""Horizontal FL on Flower with SecAgg+ (ppml.fl.flower): SecAgg+ parameter checks, the SuperLink's
attestation as a SuperNode checks it, and a real deployment on loopback (a SuperLink behind the
simulated TEE gate and 3 SuperNodes, each started by ``ppml fl flower-supernode`` once it verified
the SuperLink's attestation; Flower's processes in the Flower venv, TLS everywhere, SuperNode
authentication on, ``flwr run``) in which
the aggregate equals the plain weighted mean within SecAgg+'s quantisation bound, the server
receives no plaintext update, a wrong-shaped update is refused and a client killed mid-round is
survived. The Flower venv comes from ``ppml fl flower-env`` (``make test`` creates it first)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

import ppml
from ppml.attestation.tokens import TokenSigner
from ppml.cli.deployment import LocalDeployment, Steps, local_deployment
from ppml.cli.fl_examples import Gate
from ppml.core.evidence import Claims
from ppml.errors import CoordinatorNotAttested, ServiceUnavailable, UsageError
from ppml.fl.flower import SecAggPlusParams
from ppml.fl.flower import deployment as fd
from ppml.fl.flower import env as flower_env
from ppml.fl.flower import model as models
from ppml.fl.flower.attest import superlink_certificate, verify_superlink
from ppml.fl.service import (
    Coordinator,
    CoordinatorAttestation,
    CoordinatorVerifier,
    PartyIdentity,
    RoundSpec,
    issue_federation,
)
from ppml.tabular.tables import write_csv_table
from ppml.tee.keys import kms_for

TESTS = Path(__file__).parent
ROWS = (120, 160, 200)
FEATURES = 4

# -- SecAgg+ parameters -----------------------------------------------------------------------------


def test_an_even_num_shares_is_refused_before_anything_starts() -> None:
    with pytest.raises(UsageError, match="num_shares must be odd"):
        SecAggPlusParams(clients=4, num_shares=4, threshold=2)
    with pytest.raises(UsageError, match="threshold"):
        SecAggPlusParams(clients=3, num_shares=3, threshold=3)
    with pytest.raises(UsageError, match="overflow"):
        SecAggPlusParams(clients=5, num_shares=5, threshold=3, quantization_range=1 << 30)
    params = SecAggPlusParams(clients=5, num_shares=5, threshold=3)
    assert params.tolerated_dropouts == 2


def test_an_app_with_an_even_num_shares_or_unknown_keys_is_refused_before_flower_runs(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="num_shares must be odd"):
        fd.write_app(tmp_path, config={"clients": 4, "num-shares": 4, "threshold": 2})
    assert not (tmp_path / "pyproject.toml").exists()
    with pytest.raises(UsageError, match="unknown Flower run config"):
        fd.write_app(tmp_path, config={"no-such-key": 1})


# -- the SuperLink's attestation --------------------------------------------------------------------


class _Session:
    """An attested session as the gate hands it on: a token naming a TEE key, and that key."""

    def __init__(self, signer: TokenSigner, policy: str) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECKey.import_key(self._key.public_key()).as_dict(private=False)
        claims = Claims(tee="tdx", report_data="11" * 64, debug=False, tcb_status="UpToDate", mr_td="22" * 48)
        self.token = signer.issue(claims=claims, nonce="n", policy_ids=[policy], runtime_data={"tee_public_key": jwk},
                                  now=time.time())

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


class _TlsServer:
    """Stands in for the SuperLink's TLS port (only its certificate matters to the check)."""

    def __init__(self, certificate: Path, key: Path) -> None:
        import socket
        import ssl
        import threading

        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)

        def serve() -> None:
            while True:
                try:
                    connection, _ = self._socket.accept()
                except OSError:
                    return
                try:
                    with context.wrap_socket(connection, server_side=True):
                        pass
                except (OSError, ssl.SSLError):
                    pass

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self._socket.close()


@pytest.fixture()
def attested_superlink(tmp_path: Path) -> Iterator[dict[str, object]]:
    signer = TokenSigner.generate(issuer="https://as.test")
    issue_federation(tmp_path / "fed", ["org0", "org1"])
    issue_federation(tmp_path / "other", ["org0"])
    certificate = superlink_certificate()
    (tmp_path / "sl.pem").write_bytes(certificate.certificate_pem)
    (tmp_path / "sl.key").write_bytes(certificate.private_key_pem)
    superlink = _TlsServer(tmp_path / "sl.pem", tmp_path / "sl.key")
    spec = RoundSpec(round_id="flower-attest", job="flower-attest", parties=("org0", "org1"), join_timeout=600)
    endpoint = Coordinator(spec, attestation=CoordinatorAttestation(_Session(signer, "p1")), certificate=certificate)
    port = endpoint.start(host="127.0.0.1", port=0, client_ca_pem=(tmp_path / "fed" / "ca.pem").read_bytes())
    other = Coordinator(spec, attestation=CoordinatorAttestation(_Session(signer, "p1")))  # its own certificate
    other_port = other.start(host="127.0.0.1", port=0, client_ca_pem=(tmp_path / "fed" / "ca.pem").read_bytes())
    yield {"signer": signer, "base": tmp_path, "superlink": f"127.0.0.1:{superlink.port}",
           "attest": f"127.0.0.1:{port}", "relay": f"127.0.0.1:{other_port}", "pem": certificate.certificate_pem}
    endpoint.stop()
    other.stop()
    superlink.close()


def _identity(base: Path, ca: str, name: str) -> PartyIdentity:
    return PartyIdentity.from_files(certificate=base / ca / f"{name}.pem", private_key=base / ca / f"{name}.key",
                                    ca=base / "fed" / "ca.pem")


def test_a_supernode_pins_the_attested_superlink_certificate(attested_superlink: dict[str, object]) -> None:
    s = attested_superlink
    signer, base = s["signer"], s["base"]
    assert isinstance(signer, TokenSigner) and isinstance(base, Path)
    verifier = CoordinatorVerifier(jwks=signer.jwks(), issuer="https://as.test", policy_id="p1")
    pem, token = verify_superlink(str(s["superlink"]), str(s["attest"]), identity=_identity(base, "fed", "org0"),
                                  verifier=verifier)
    assert pem == s["pem"] and "p1" in token.policy_ids
    # another policy, an endpoint bound to another certificate (a relay), a forged token's signer
    with pytest.raises(CoordinatorNotAttested, match="policies"):
        verify_superlink(str(s["superlink"]), str(s["attest"]), identity=_identity(base, "fed", "org0"),
                         verifier=CoordinatorVerifier(jwks=signer.jwks(), issuer="https://as.test", policy_id="p2"))
    with pytest.raises(CoordinatorNotAttested, match="another certificate"):
        verify_superlink(str(s["superlink"]), str(s["relay"]), identity=_identity(base, "fed", "org0"),
                         verifier=verifier)
    stranger = TokenSigner.generate(issuer="https://as.test")
    with pytest.raises(CoordinatorNotAttested, match="token was refused"):
        verify_superlink(str(s["superlink"]), str(s["attest"]), identity=_identity(base, "fed", "org0"),
                         verifier=CoordinatorVerifier(jwks=stranger.jwks(), issuer="https://as.test", policy_id="p1"))


def test_a_supernode_operator_with_a_wrong_certificate_cannot_even_ask(attested_superlink: dict[str, object]) -> None:
    s = attested_superlink
    signer, base = s["signer"], s["base"]
    assert isinstance(signer, TokenSigner) and isinstance(base, Path)
    verifier = CoordinatorVerifier(jwks=signer.jwks(), issuer="https://as.test", policy_id="p1")
    with pytest.raises(ServiceUnavailable):
        verify_superlink(str(s["superlink"]), str(s["attest"]), identity=_identity(base, "other", "org0"),
                         verifier=verifier)


# -- a deployment on loopback -----------------------------------------------------------------------


class Federation:
    """A SuperLink (TLS, SuperNode auth) behind the TEE gate and three SuperNodes that verified its
    attestation, each with its encrypted table."""

    def __init__(self, base: Path, env: Path, deployment: LocalDeployment) -> None:
        self.base, self.env = base, env
        self.home = base / "flwr-home"
        self.kms_uri = f"local:{base / 'keys'}"
        kms = kms_for(self.kms_uri)
        self.key = kms.create_primary_key(description="hfl test").key_id
        rng = np.random.default_rng(3)
        self.data: list[tuple[np.ndarray, np.ndarray]] = []
        for index, rows in enumerate(ROWS):
            x = rng.normal(size=(rows, FEATURES))
            y = (x[:, 0] - x[:, 1] + 0.3 * rng.normal(size=rows) > 0).astype(np.int64)
            self.data.append((x, y))
            table = pa.table({**{f"x{j}": x[:, j] for j in range(FEATURES)}, "label": y})
            write_csv_table(table, base / f"party{index}.csv.ppml", kms=kms, key_id=self.key)
        # The production path: the SuperLink behind the (simulated) TEE gate, its TLS key made
        # there; each SuperNode through `ppml fl flower-supernode`, which verifies its attestation
        # against the attestation service and pins its certificate before Flower starts.
        self.deployment = deployment
        issue_federation(base / "fed", [f"node{index}" for index in range(len(ROWS))])
        self.port, self.attest_port = fd.free_port(), fd.free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        state = base / "superlink"
        log = base / "superlink.log"
        self.processes["superlink"] = subprocess.Popen(
            Gate(deployment).argv("fl", "flower-superlink", "--env", str(env), "--port", str(self.port),
                                  "--attest-port", str(self.attest_port),
                                  *[a for i in range(len(ROWS)) for a in ("--party", f"node{i}")],
                                  "--ca", str(base / "fed" / "ca.pem"), "--state-dir", str(state)),
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=deployment.env, start_new_session=True)
        deadline = time.monotonic() + 90
        while "Flower SuperLink on" not in log.read_text(errors="replace"):
            assert self.processes["superlink"].poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert "Attestation Success!" in log.read_text()
        self.cert = state / "superlink.pem"
        fd.write_cli_config(self.home, superlink=self.address, root_certificate=self.cert)
        self._environment = fd.flwr_environment(env, self.home)
        self.marker = base / "hang.marker"
        for index in range(len(ROWS)):
            self.start_node(index)
        for index in range(len(ROWS)):
            node_log = base / f"node{index}.log"
            while "SuperLink attested" not in node_log.read_text(errors="replace"):
                assert self.processes[f"node{index}"].poll() is None and time.monotonic() < deadline, \
                    node_log.read_text()
                time.sleep(0.2)

    def start_node(self, index: int) -> subprocess.Popen[bytes]:
        private, public = fd.node_key(self.base / "nodes", f"node{index}")
        if not (self.base / "nodes" / f"node{index}.registered").exists():
            fd.register_supernode(self.env, self.home, public)
            (self.base / "nodes" / f"node{index}.registered").write_text("")
        node_config = [f"data-path={self.base / f'party{index}.csv.ppml'}", f"kms={self.kms_uri}", f"seed={index}"]
        if index == 2:
            node_config += ["behaviour=wrong-shape,hang", f"marker={self.marker}"]
        d, fed = self.deployment, self.base / "fed"
        process = subprocess.Popen(
            [sys.executable, "-m", "ppml.cli.main", "fl", "flower-supernode", "--env", str(self.env),
             "--superlink", self.address, "--attest", f"127.0.0.1:{self.attest_port}",
             "--superlink-policy", d.policy_id, "--attestation-url", d.server.url, "--attestation-ca", str(d.server.ca),
             "--cert", str(fed / f"node{index}.pem"), "--key", str(fed / f"node{index}.key"), "--ca",
             str(fed / "ca.pem"), "--auth-key", str(private), "--port", str(fd.free_port()), "--state-dir",
             str(self.base / "nodes"), *[a for item in node_config for a in ("--node-config", item)]],
            stdout=(self.base / f"node{index}.log").open("ab"), stderr=subprocess.STDOUT, env=self._environment,
            start_new_session=True)
        self.processes[f"node{index}"] = process
        return process

    def kill(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def close(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in self.processes.items():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill(name)

    def run(self, name: str, *, clientapp: str = "ppml.fl.flower.client_app:client_app",
            **config: str | int | float | bool) -> tuple[list[np.ndarray], dict[str, object]]:
        app = self.base / f"app-{name}"
        result = self.base / f"result-{name}"
        result.mkdir()
        fd.write_app(app, config={"features": FEATURES, "result-dir": str(result), "secagg-timeout": 30.0, **config},
                     clientapp=clientapp)
        shutil.copy(TESTS / "flower_test_client.py", app / "flower_test_client.py")
        summary = fd.run_app(self.env, self.home, app, log=self.base / f"run-{name}.log", timeout=240)
        with np.load(result / "aggregate.npz", allow_pickle=False) as loaded:
            return [loaded[f"arr_{i}"] for i in range(len(loaded.files))], summary


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    env = flower_env.create(flower_env.default_path())
    base = tmp_path_factory.mktemp("flower")
    with local_deployment(base / "deployment", Steps(), entrypoint=Path(ppml.__file__).parent / "cli" / "main.py") as d:
        federation = Federation(base, env, d)
        try:
            yield federation
        finally:
            federation.close()


def _local_updates(federation: Federation, parties: list[int], *,
                   model_kind: str = "mlp") -> tuple[list[list[np.ndarray]], list[int]]:
    """What each party's ClientApp computes, recomputed here: the same model, data and seed."""
    updates, counts = [], []
    for index in parties:
        model = models.build(model_kind, features=FEATURES, classes=2, hidden=16, seed=0)
        x, y = federation.data[index]
        models.train(model, x, y, epochs=1, batch_size=32, learning_rate=0.1, seed=index)
        updates.append(models.get_weights(model))
        counts.append(len(y))
    return updates, counts


def _weighted_mean(updates: list[list[np.ndarray]], counts: list[int]) -> list[np.ndarray]:
    total = sum(counts)
    return [sum(c * u[i] for u, c in zip(updates, counts)) / total for i in range(len(updates[0]))]


@pytest.mark.slow
def test_secagg_plus_aggregate_is_the_plain_mean_the_server_sees_no_update_and_a_misshapen_one_is_refused(
        federation: Federation) -> None:
    """One round (the deployment's rounds take ~45 s here, so one round checks three things): node 2
    returns weights of the wrong shape, which the ServerApp refuses; SecAgg+ removes its masks and
    the aggregate is the weighted mean of nodes 0 and 1 within the quantisation bound; the masked
    vectors the server received are none of the updates; the model is saved encrypted."""
    record = federation.base / "record"
    record.mkdir()
    model_path = federation.base / "global.ckpt.ppml"
    aggregate, summary = federation.run("wrong-shape", clientapp="flower_test_client:wrong_shape_app",
                                        **{"record-dir": str(record), "model-path": str(model_path),
                                           "model-kms": federation.kms_uri, "model-key": federation.key})
    assert len(summary["refused"]) == 1  # type: ignore[arg-type]
    assert summary["rounds"] == [{"round": 1, "results": 2, "failures": 0}]
    updates, counts = _local_updates(federation, [0, 1])
    expected = _weighted_mean(updates, counts)
    params = SecAggPlusParams(clients=3, num_shares=3, threshold=2, max_weight=float(fd.APP_CONFIG["max-weight"]))
    largest = max(float(np.abs(w).max()) for u in updates for w in u)
    bound = params.error_bound(total_weight=sum(counts), max_abs_value=largest)
    error = max(float(np.abs(a - e).max()) for a, e in zip(aggregate, expected))
    assert error <= bound, (error, bound)
    # the server received masked vectors, none of them (nor its quantised form) an update
    received = [np.load(path, allow_pickle=False) for path in sorted(record.glob("masked-*.npy"))]
    assert len(received) == 2
    for masked in received:
        assert masked.max() > 2**31  # uniform masks over [0, 2^32)
        for update, count in zip(updates, counts):
            flat = np.concatenate([w.ravel() for w in update])
            # what the client would send unmasked: its update scaled by its weight and quantised
            quantised = (np.clip(flat * count / params.max_weight, -8, 8) + 8) * ((1 << 22) / 16)
            assert np.mean(np.abs(masked - flat) < 1e-3) < 0.01
            assert np.mean(np.abs(masked - quantised) < 64) < 0.01
    # the final global model was saved encrypted in ppml's checkpoint format
    from ppml.torch.checkpoint import load

    assert b"weight" not in model_path.read_bytes()
    state = load(model_path, kms=kms_for(federation.kms_uri))
    assert all(np.allclose(value.numpy(), a, atol=1e-6) for value, a in zip(state.values(), aggregate))


@pytest.mark.slow
def test_a_client_killed_mid_round_leaves_the_aggregate_of_the_others(federation: Federation) -> None:
    import threading

    def kill_when_training() -> None:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and not federation.marker.exists():
            time.sleep(0.2)
        federation.kill("node2")

    killer = threading.Thread(target=kill_when_training, daemon=True)
    killer.start()
    # logistic regression here (the MLP in the round above): FedAvg over both models
    aggregate, summary = federation.run("dropout", clientapp="flower_test_client:dropout_app", model="logreg")
    killer.join(5)
    assert federation.marker.exists()
    updates, counts = _local_updates(federation, [0, 1], model_kind="logreg")
    expected = _weighted_mean(updates, counts)
    params = SecAggPlusParams(clients=3, num_shares=3, threshold=2, max_weight=float(fd.APP_CONFIG["max-weight"]))
    largest = max(float(np.abs(w).max()) for u in updates for w in u)
    bound = params.error_bound(total_weight=sum(counts), max_abs_value=largest)
    assert max(float(np.abs(a - e).max()) for a, e in zip(aggregate, expected)) <= bound
    assert json.loads(json.dumps(summary))["rounds"][0]["results"] == 2


@pytest.mark.slow
def test_a_supernode_with_an_unregistered_key_is_refused(federation: Federation) -> None:
    private, _ = fd.node_key(federation.base / "nodes", "stranger")
    argv = fd.supernode_argv(federation.env, superlink=federation.address, root_certificate=federation.cert,
                             auth_key=private, port=fd.free_port(),
                             node_config={"data-path": str(federation.base / "party0.csv.ppml"),
                                          "kms": federation.kms_uri},
                             runtime=fd.runtime_tls(federation.base / "nodes", "stranger"))
    argv[argv.index("--max-retries") + 1] = "0"
    log = federation.base / "stranger.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=federation._environment,
                                   start_new_session=True)
    try:
        assert process.wait(60) != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    text = log.read_text(errors="replace")
    assert "Failed to activate SuperNode" in text and "SuperNode ID" not in text


def test_the_superlink_wrapper_refuses_to_run_outside_the_tee_gate(tmp_path: Path) -> None:
    import sys

    result = subprocess.run([sys.executable, "-m", "ppml.cli.main", "fl", "flower-superlink", "--port", "1",
                             "--attest-port", "0", "--party", "a", "--ca", str(tmp_path / "ca.pem"), "--state-dir",
                             str(tmp_path)], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("PPML_TEE")})
    assert result.returncode != 0 and "behind the TEE gate" in result.stderr
