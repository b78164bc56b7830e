"""Attested model serving (ppml serve-model, issue 13 point 4): the app in process (formats, the
400s naming the expected input, 401, 413, 415, 503, metrics), then for real: ``ppml serve`` (KMS
and attestation service), a policy, a key that releases only to it, a checkpoint under that key,
and ``ppml serve-model --tee simulated`` as a process: attestation first, predictions over verified
TLS equal to the model's own, and no port ever opened when attestation fails or the checkpoint is
corrupt."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import safetensors.torch
import torch

from ppml.cli.deployment import LocalDeployment, Steps, local_deployment, ppml_command
from ppml.errors import KeyStoreUnreadable, PermissionDenied, UsageError
from ppml.kms.remote import RemoteKms
from ppml.torch.checkpoint import load, save
from ppml.torch.serving import SAFETENSORS, BearerToken, InputSpec, create_app
from ppml.transport import client_context
from servers import ModelServer

TOKEN = "t" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}

MODEL_MODULE = textwrap.dedent("""
    import torch
    from ppml.torch.serving import InputSpec


    def mlp():
        return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


    def build_model():
        torch.manual_seed(12345)  # weights the checkpoint replaces
        return mlp(), InputSpec(shape=(4,), dtype=torch.float32)
""")


def mlp() -> torch.nn.Module:
    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()


def batch(rows: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(rows, 4, generator=torch.Generator().manual_seed(rows)).to(dtype)


def binary(tensor: torch.Tensor, name: str = "inputs") -> bytes:
    return safetensors.torch.save({name: tensor})


# -- the app, in process -----------------------------------------------------------------------


class AppClient:
    """Requests to an ASGI app in this process: httpx's ASGI transport, on an event loop of its own."""

    def __init__(self, app: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        return self.run(self.client.request(method, path, **options))

    def post(self, path: str, **options: Any) -> httpx.Response:
        return self.request("POST", path, **options)

    def get(self, path: str, **options: Any) -> httpx.Response:
        return self.request("GET", path, **options)

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.client.aclose())
        self.loop.close()


@pytest.fixture
def model() -> torch.nn.Module:
    return mlp()


@pytest.fixture
def client(model: torch.nn.Module) -> Iterator[AppClient]:
    with AppClient(create_app(model, InputSpec(shape=(4,)), token=BearerToken(TOKEN), max_body=64 << 10)) as app:
        yield app


def test_json_and_safetensors_predictions_are_the_models(client: AppClient, model: torch.nn.Module) -> None:
    inputs = batch()
    expected = model(inputs).detach()
    answer = client.post("/v1/predict", json={"inputs": inputs.tolist()}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["shape"] == [5, 3] and body["dtype"] == "float32"
    torch.testing.assert_close(torch.tensor(body["outputs"]), expected, rtol=0, atol=0)
    answer = client.post("/v1/predict", content=binary(inputs), headers={**AUTH, "Content-Type": SAFETENSORS})
    assert answer.status_code == 200 and answer.headers["content-type"] == SAFETENSORS
    torch.testing.assert_close(safetensors.torch.load(answer.content)["outputs"], expected, rtol=0, atol=0)
    assert client.get("/v1/model", headers=AUTH).json() == {
        "input": {"shape": [None, 4], "dtype": "float32"}, "formats": ["application/json", SAFETENSORS]}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer " + "u" * 40}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_requests_without_the_token_are_refused(client: AppClient, headers: dict[str, str]) -> None:
    for method, path in (("POST", "/v1/predict"), ("GET", "/v1/model")):
        answer = client.request(method, path, json={"inputs": batch().tolist()}, headers=headers)
        assert answer.status_code == 401 and answer.json()["error"] == "Unauthenticated"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/healthz").json() == {"status": "ok"}  # probes and scrapers need no token
    assert client.get("/metrics").status_code == 200


EXPECTED = "expected inputs of shape [batch, 4] and dtype float32; got "


@pytest.mark.parametrize(("body", "got"), [
    ({"inputs": [[1.0, 2.0, 3.0]]}, "shape [1, 3] of floats"),
    ({"inputs": [1.0, 2.0, 3.0, 4.0]}, "shape [4] of floats"),
    ({"inputs": [[1.0, 2.0, 3.0, 4.0], [1.0, 2.0]]}, "values that are not a rectangular array of numbers"),
    ({"inputs": [["a", "b", "c", "d"]]}, "values that are not a rectangular array of numbers"),
    ({"inputs": [[True, False, True, False]]}, "booleans"),
    ({"inputs": []}, "shape [0] of floats"),
    ({"input": [[1, 2, 3, 4]]}, 'JSON that is not {"inputs": [[...], ...]}'),
])
def test_json_of_the_wrong_shape_or_dtype_gets_400_naming_the_expected_input(client: AppClient, body: Any,
                                                                             got: str) -> None:
    answer = client.post("/v1/predict", json=body, headers=AUTH)
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": "InvalidInput", "message": EXPECTED + got,
                             "expected": {"shape": [None, 4], "dtype": "float32"}}


@pytest.mark.parametrize(("tensor", "name", "got"), [
    (batch(dtype=torch.float64), "inputs", "shape [5, 4] and dtype float64"),
    (batch(dtype=torch.float16), "inputs", "shape [5, 4] and dtype float16"),
    (torch.zeros(2, 5), "inputs", "shape [2, 5] and dtype float32"),
    (torch.zeros(0, 4), "inputs", "shape [0, 4] and dtype float32"),
    (batch(), "x", "tensors named ['x'] instead of one named 'inputs'"),
])
def test_safetensors_of_the_wrong_shape_or_dtype_gets_400(client: AppClient, tensor: torch.Tensor, name: str,
                                                          got: str) -> None:
    answer = client.post("/v1/predict", content=binary(tensor, name), headers={**AUTH, "Content-Type": SAFETENSORS})
    assert answer.status_code == 400 and answer.json()["message"] == EXPECTED + got
    answer = client.post("/v1/predict", content=b"\x08" + bytes(20), headers={**AUTH, "Content-Type": SAFETENSORS})
    assert answer.status_code == 400 and answer.json()["message"] == EXPECTED + "a body that is not a safetensors file"


def test_integer_and_boolean_inputs(model: torch.nn.Module) -> None:
    class Lookup(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.EmbeddingBag(300, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.embedding(ids.long())

    lookup = Lookup()
    with AppClient(create_app(lookup, InputSpec(shape=(3,), dtype=torch.uint8), token=BearerToken(TOKEN))) as client:
        answer = client.post("/v1/predict", json={"inputs": [[1, 2, 255]]}, headers=AUTH)
        assert answer.status_code == 200
        torch.testing.assert_close(torch.tensor(answer.json()["outputs"]),
                                   lookup(torch.tensor([[1, 2, 255]])).detach())
        expected = "expected inputs of shape [batch, 3] and dtype uint8; got "
        for values, got in (([[1.5, 2, 3]], "floats"), ([[1, 2, 256]], "integers outside uint8's range [0, 255]"),
                            ([[True, False, True]], "booleans")):
            answer = client.post("/v1/predict", json={"inputs": values}, headers=AUTH)
            assert answer.status_code == 400 and answer.json()["message"] == expected + got
    flags = create_app(torch.nn.Identity(), InputSpec(shape=(2,), dtype=torch.bool), token=BearerToken(TOKEN))
    with AppClient(flags) as client:
        assert client.post("/v1/predict", json={"inputs": [[True, False]]}, headers=AUTH).json()["outputs"] == \
            [[True, False]]
        assert client.post("/v1/predict", json={"inputs": [[1, 0]]}, headers=AUTH).status_code == 400


def test_oversize_bodies_get_413_and_other_content_types_415(client: AppClient) -> None:
    big = binary(torch.zeros(20_000, 4))
    answer = client.post("/v1/predict", content=big, headers={**AUTH, "Content-Type": SAFETENSORS})
    assert answer.status_code == 413 and answer.json()["error"] == "PayloadTooLarge"
    answer = client.post("/v1/predict", content=b"1,2,3,4", headers={**AUTH, "Content-Type": "text/csv"})
    assert answer.status_code == 415 and "application/x-safetensors" in answer.json()["message"]


def test_a_full_queue_gets_503_and_a_failing_model_500(model: torch.nn.Module) -> None:
    entered, release = threading.Event(), threading.Event()

    class Slow(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            entered.set()
            release.wait(30)
            if x.shape[0] == 2:
                raise RuntimeError("boom")
            return x

    app = create_app(Slow(), InputSpec(shape=(4,)), token=BearerToken(TOKEN), workers=1, max_queue=0)
    with AppClient(app) as client:

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            first = asyncio.create_task(client.client.post("/v1/predict", json={"inputs": batch(1).tolist()},
                                                           headers=AUTH))
            assert await asyncio.get_running_loop().run_in_executor(None, entered.wait, 30)
            busy = await client.client.post("/v1/predict", json={"inputs": batch(1).tolist()}, headers=AUTH)
            release.set()
            return await first, busy

        first, busy = client.run(scenario())
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert first.status_code == 200
        failed = client.post("/v1/predict", json={"inputs": batch(2).tolist()}, headers=AUTH)
        assert failed.status_code == 500 and failed.json()["error"] == "ModelError" and "boom" not in failed.text
        metrics = client.get("/metrics").text
    for line in ('ppml_serving_refused_total{reason="busy"} 1.0', 'ppml_serving_refused_total{reason="model"} 1.0',
                 'ppml_serving_requests_total{route="/v1/predict",status="200"} 1.0',
                 'ppml_serving_requests_total{route="/v1/predict",status="503"} 1.0',
                 "ppml_serving_inference_seconds_count 1.0", "ppml_serving_in_flight 0.0"):
        assert line in metrics, line


def test_the_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token = BearerToken.from_file(path, create=True)
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text().strip()) >= 32
    assert token.matches(f"Bearer {path.read_text().strip()}") and TOKEN not in repr(token)
    assert BearerToken.from_file(path).matches(f"bearer {path.read_text().strip()}")
    path.chmod(0o644)
    with pytest.raises(KeyStoreUnreadable, match="too open"):
        BearerToken.from_file(path)
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(KeyStoreUnreadable, match="at least 32"):
        BearerToken.from_file(path)
    with pytest.raises(UsageError, match="positive integers"):
        InputSpec(shape=(0, 3))
    assert InputSpec.parse("3,32,32", "uint8") == InputSpec(shape=[3, 32, 32], dtype=torch.uint8)  # type: ignore[arg-type]
    assert InputSpec(shape=torch.Size([4])).fits(torch.zeros(2, 4))


# -- ppml serve-model for real -----------------------------------------------------------------


class World:
    """ppml serve (dev TLS, the simulated platform trusted), an enrolled app, a signed enclave for the
    model's module, a policy for it, a key released only to that policy and a checkpoint under it."""

    def __init__(self, deployment: LocalDeployment, app_dir: Path) -> None:
        self.deployment = deployment
        self.app_dir = app_dir
        self.key_id = deployment.create_key("the served model's weights", gated=True)
        self.model = mlp()
        self.checkpoint = deployment.workdir / "model.ckpt"
        owner = RemoteKms.from_uri(deployment.kms_uri)
        save({"model": self.model.state_dict(), "epoch": 9}, self.checkpoint, kms=owner, key_id=self.key_id)
        owner.close()

    def args(self, *, policy: str | None = None, checkpoint: Path | None = None) -> list[str]:
        d = self.deployment
        return ["--model", str(checkpoint or self.checkpoint), "--module", "served_model:build_model",
                "--app-dir", str(self.app_dir), "--state-key", "model", "--kms", d.kms_uri, "--tee", "simulated",
                "--policy", policy or d.policy_id, "--attestation-url", d.server.url,
                "--attestation-ca", str(d.server.ca), "--enclave-manifest", str(d.manifest),
                "--enclave-sig", str(d.sig), "--platform-key", str(d.platform_key), "--max-body-bytes", "65536"]

    def serve(self, name: str, **options: Any) -> ModelServer:
        return ModelServer(self.deployment.workdir / name, self.args(**options), env=self.deployment.env)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("serving")
    app_dir = base / "app"
    app_dir.mkdir()
    (app_dir / "served_model.py").write_text(MODEL_MODULE)
    with local_deployment(base / "world", Steps(), entrypoint=app_dir / "served_model.py") as deployment:
        yield World(deployment, app_dir)


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[ModelServer]:
    served = world.serve("served")
    try:
        assert served.wait(), served.stdout() + served.stderr()
        yield served
    finally:
        served.stop()


@pytest.mark.slow  # real ppml serve and serve-model processes
def test_serve_model_attests_first_and_predicts_what_the_model_does(world: World, server: ModelServer) -> None:
    assert server.stdout().splitlines()[0] == "Attestation Success!"
    assert "SIMULATED" in server.stderr()
    inputs = batch(7)
    expected = world.model(inputs).detach()
    with server.client() as client:
        answer = client.post("/v1/predict", json={"inputs": inputs.tolist()})
        assert answer.status_code == 200, answer.text
        torch.testing.assert_close(torch.tensor(answer.json()["outputs"]), expected)
        answer = client.post("/v1/predict", content=binary(inputs), headers={"Content-Type": SAFETENSORS})
        assert answer.status_code == 200, answer.text
        torch.testing.assert_close(safetensors.torch.load(answer.content)["outputs"], expected)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.base_url}/healthz")  # a client that does not trust the CA gets nowhere


@pytest.mark.slow  # real ppml serve and serve-model processes
def test_the_key_is_released_only_to_the_attested_server(world: World) -> None:
    owner = RemoteKms.from_uri(world.deployment.kms_uri)
    with pytest.raises(PermissionDenied):
        load(world.checkpoint, kms=owner)
    owner.close()


@pytest.mark.slow  # real ppml serve and serve-model processes
def test_serve_model_refuses_what_it_must(server: ModelServer) -> None:
    inputs = batch(3)
    with server.client(token="x" * 40) as stranger:
        assert stranger.post("/v1/predict", json={"inputs": inputs.tolist()}).status_code == 401
    with httpx.Client(verify=client_context(server.ca)) as anonymous:
        assert anonymous.post(f"{server.base_url}/v1/predict", json={"inputs": inputs.tolist()}).status_code == 401
    with server.client() as client:
        answer = client.post("/v1/predict", json={"inputs": [[1.0, 2.0]]})
        assert answer.status_code == 400
        assert answer.json()["message"] == EXPECTED + "shape [1, 2] of floats"
        answer = client.post("/v1/predict", content=binary(inputs.double()), headers={"Content-Type": SAFETENSORS})
        assert answer.status_code == 400 and answer.json()["message"] == EXPECTED + "shape [3, 4] and dtype float64"
        answer = client.post("/v1/predict", content=binary(torch.zeros(10_000, 4)),
                             headers={"Content-Type": SAFETENSORS})
        assert answer.status_code == 413
        assert client.get("/healthz").json() == {"status": "ok"}
        metrics = client.get("/metrics").text
    for pattern in (r'ppml_serving_requests_total\{route="/v1/predict",status="(200|400|401|413)"\} \d',
                    r'ppml_serving_refused_total\{reason="invalid_input"\} [1-9]',
                    r'ppml_serving_refused_total\{reason="unauthenticated"\} [1-9]',
                    r"ppml_serving_request_seconds_bucket\{le=\"0.01\",route=\"/v1/predict\"\} \d"):
        assert re.search(pattern, metrics), pattern
    log = [json.loads(line) for line in server.stderr().splitlines() if line.startswith('{"time"')]
    assert {(entry["route"], entry["status"]) for entry in log} >= {("/v1/predict", 400), ("/v1/predict", 413)}
    assert server.token not in server.stderr() + server.stdout()


@pytest.mark.slow  # real ppml serve and serve-model processes
def test_a_failed_attestation_never_opens_the_port(world: World) -> None:
    """A policy for another enclave: the gate refuses, nothing is loaded, the port never listens."""
    d = world.deployment
    other = ppml_command("attest", "register", "--mr-enclave", "ab" * 32, "--mr-signer", d.mr_signer,
                         "--allow-simulated", env=d.env).stdout.strip()
    refused = world.serve("refused", policy=other)
    assert not refused.watch_until_exit(), "the port was opened"
    assert refused.process.returncode == 1
    assert refused.stdout().strip().splitlines() == ["Attestation Fail! Application killed!"]
    assert "mr_enclave" in refused.stderr()


@pytest.mark.slow  # real ppml serve and serve-model processes
def test_a_corrupt_checkpoint_refuses_to_start(world: World) -> None:
    corrupt = world.checkpoint.with_name("corrupt.ckpt")
    data = bytearray(world.checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x04
    corrupt.write_bytes(bytes(data))
    refused = world.serve("corrupt", checkpoint=corrupt)
    assert not refused.watch_until_exit(), "the port was opened"
    assert refused.process.returncode == 4, refused.stderr()
    assert refused.stdout().splitlines() == ["Attestation Success!"]
    assert "cannot decrypt: wrong key, or the data was altered or truncated" in refused.stderr()


def test_a_builder_that_is_not_one_is_a_usage_error(tmp_path: Path) -> None:
    from ppml.cli.serve_model import _build

    (tmp_path / "builders.py").write_text("def nothing():\n    return 3\n\ndef bare():\n"
                                          "    import torch\n    return torch.nn.Identity()\n")
    sys.modules.pop("builders", None)
    with pytest.raises(UsageError, match="returned a value of type int"):
        _build("builders:nothing", tmp_path, None)
    with pytest.raises(UsageError, match="declares no input"):
        _build("builders:bare", tmp_path, None)
    model, spec = _build("builders:bare", tmp_path, InputSpec(shape=(2,)))
    assert isinstance(model, torch.nn.Identity) and spec.shape == (2,)
    with pytest.raises(UsageError, match="cannot import"):
        _build("missing_module:build", tmp_path, None)
    with pytest.raises(UsageError, match=r"pkg\.module:function"):
        _build("builders", tmp_path, None)


def test_the_gate_without_a_tee_warns_and_with_missing_enclave_files_fails(capsys: pytest.CaptureFixture[str],
                                                                           tmp_path: Path) -> None:
    from ppml.cli.main import build_parser
    from ppml.cli.serve_model import _gate
    from ppml.errors import UnsafeWarning

    common = ["serve-model", "--model", "m", "--module", "a:b", "--token-file", str(tmp_path / "t")]
    with pytest.warns(UnsafeWarning, match="nothing attests this server"):
        assert _gate(build_parser().parse_args([*common, "--tee", "none"])) == (True, None)
    args = build_parser().parse_args([*common, "--tee", "simulated", "--policy", "p",
                                      "--attestation-url", "https://127.0.0.1:1"])
    assert _gate(args) == (False, None)
    out, err = capsys.readouterr()
    assert out == "Attestation Fail! Application killed!\n" and "--enclave-manifest" in err
