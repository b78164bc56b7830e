"""The model server's HTTP app: predictions from a PyTorch module over HTTPS, for ``ppml
serve-model`` (which attests, loads the encrypted weights, then serves this app).

Routes::

    POST /v1/predict   a batch of inputs in, the model's outputs out (token required)
    GET  /v1/model     the input the model expects (token required)
    GET  /healthz      {"status": "ok"}
    GET  /metrics      Prometheus: requests by route and status, latency, inference time, refusals

``/v1/predict`` takes a batch of ``InputSpec.shape`` examples of ``InputSpec.dtype``, the batch
dimension first, in one of two formats, and answers in the format it was asked in:

* ``Content-Type: application/json``: ``{"inputs": [[…], …]}`` (a rectangular array of numbers;
  integers are accepted for a floating-point input, floats never for an integer one), answered
  ``{"outputs": […], "shape": […], "dtype": "float32"}``. Readable with curl; parsing JSON costs
  far more than the model for large inputs.
* ``Content-Type: application/x-safetensors``: a safetensors file holding one tensor named
  ``inputs`` of exactly that dtype, answered with one holding ``outputs``. Chosen over raw bytes
  with shape and dtype headers because it is one self-describing, bounds-checked format with
  readers in every language ppml's users work in (and the one ppml's checkpoints use), parsed by
  the same library with no pickle.

A body of the wrong shape or dtype gets 400 naming what the model expects (``expected inputs of
shape [batch, 4] and dtype float32; got shape [2, 3] and dtype float32``, and ``"expected":
{"shape": [null, 4], "dtype": "float32"}``), one over the size limit 413, another content type 415.

**Authentication: a bearer token** (``Authorization: Bearer TOKEN``; the server keeps only its
SHA-256 and compares digests in constant time), read from a 0600 file. Not the KMS's signed-request
scheme with the app's credentials, because those credentials are the app's key access: every
client that may ask for a prediction would then also hold what asks the KMS for the app's data
keys. A token grants predictions and nothing else, is rotated without touching the KMS, and is
what HTTP clients, load balancers and curl speak. Over TLS it does not cross the wire in the
clear; a signed request would add replay protection, which a prediction (a read) needs less.
``/healthz`` and ``/metrics`` need no token (probes and scrapers; they tell counts, not data), and
a request without a valid token is refused before its body is read.

Inference runs under ``torch.inference_mode()`` on a bounded pool: ``workers`` threads run the
model (parsing and encoding too, off the event loop), at most ``max_queue`` more requests wait,
and any beyond that get 503 with ``Retry-After`` instead of queueing without bound. With more
than one worker, ``forward`` runs concurrently (fine for modules in eval mode, which the app puts
the model in). The user manual is ``docs/torch.md``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import safetensors.torch
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from safetensors import SafetensorError
from starlette.types import ASGIApp, Receive, Scope, Send

from ppml.asgi import BodyLimit, Observe
from ppml.core._files import create_private
from ppml.errors import InputNotFound, KeyStoreUnreadable, UsageError

__all__ = [
    "DEFAULT_MAX_BODY",
    "DTYPES",
    "JSON",
    "SAFETENSORS",
    "BearerToken",
    "InputSpec",
    "create_app",
]

JSON: Final = "application/json"
SAFETENSORS: Final = "application/x-safetensors"
DEFAULT_MAX_BODY: Final = 16 << 20
#: The input dtypes a spec may name, by the names the CLI and the wire use.
DTYPES: Final[Mapping[str, torch.dtype]] = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "int8": torch.int8, "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAMES: Final = {dtype: name for name, dtype in DTYPES.items()}
_MIN_TOKEN = 32
log = logging.getLogger("ppml.serving")
access_log = logging.getLogger("ppml.serving.access")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class InputSpec:
    """What ``/v1/predict`` takes: a batch (any size from 1) of examples of ``shape`` (one
    example's, without the batch dimension) and ``dtype``."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))  # a list or a torch.Size compares as a tuple
        if any(type(size) is not int or size < 1 for size in self.shape):
            raise UsageError(f"an input shape is positive integers (one example's, without the batch dimension), "
                             f"not {self.shape!r}")
        if self.dtype not in _NAMES:
            raise UsageError(f"input dtype {self.dtype} is not one of {', '.join(DTYPES)}")

    @classmethod
    def parse(cls, shape: str, dtype: str = "float32") -> InputSpec:
        """From the CLI's spelling: ``shape`` as ``4`` or ``3,32,32``, ``dtype`` a name of :data:`DTYPES`."""
        try:
            sizes = tuple(int(part) for part in shape.replace("x", ",").split(",") if part.strip())
        except ValueError:
            raise UsageError(f"--input-shape takes sizes like 4 or 3,32,32, not {shape!r}") from None
        if dtype not in DTYPES:
            raise UsageError(f"--input-dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        return cls(shape=sizes, dtype=DTYPES[dtype])

    @property
    def dtype_name(self) -> str:
        return _NAMES[self.dtype]

    def describe(self) -> dict[str, Any]:
        """The spec as the wire shows it: ``{"shape": [null, 4], "dtype": "float32"}`` (null: any batch)."""
        return {"shape": [None, *self.shape], "dtype": self.dtype_name}

    def __str__(self) -> str:
        return f"inputs of shape [batch, {', '.join(map(str, self.shape))}] and dtype {self.dtype_name}"

    def fits(self, tensor: torch.Tensor) -> bool:
        return tensor.dim() == len(self.shape) + 1 and tuple(tensor.shape[1:]) == self.shape and tensor.shape[0] > 0


class BearerToken:
    """The token a client sends as ``Authorization: Bearer TOKEN``. Only its SHA-256 is kept; the
    ``repr`` shows neither."""

    def __init__(self, token: str) -> None:
        if len(token) < _MIN_TOKEN or not token.isascii() or not token.isprintable() or " " in token:
            raise UsageError(f"a serving token is at least {_MIN_TOKEN} printable ASCII characters without spaces")
        self._digest = hashlib.sha256(token.encode()).digest()

    def __repr__(self) -> str:
        return "BearerToken(<redacted>)"

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> BearerToken:
        """Read the token in ``path`` (refused when others may read it, as credentials are);
        ``create``: first write a fresh one (mode 0600) if the file does not exist.

        Raises:
            InputNotFound: no such file and not ``create``.
            KeyStoreUnreadable: the file is readable by others, or not a token.
        """
        if create and not path.exists():
            create_private(path, (secrets.token_urlsafe(32) + "\n").encode())
            log.warning("ppml serve-model: a new serving token in %s (mode 0600): clients send it as "
                        "'Authorization: Bearer TOKEN'", path)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise InputNotFound(path) from None
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o037:
                raise KeyStoreUnreadable(path, f"permissions {stat.S_IMODE(mode):04o} are too open; run chmod 600")
            text = f.read(4096).decode("utf-8", "replace").strip()
        try:
            return cls(text)
        except UsageError as exc:
            raise KeyStoreUnreadable(path, str(exc)) from None

    def matches(self, authorization: str | None) -> bool:
        """True if an ``Authorization`` header carries this token."""
        scheme, _, token = (authorization or "").partition(" ")
        given = hashlib.sha256(token.strip().encode()).digest()
        return scheme.lower() == "bearer" and hmac.compare_digest(given, self._digest)


class _Refused(Exception):
    """A request answered with ``status`` and a JSON error, counted under ``reason``."""

    def __init__(self, status: int, error: str, message: str, reason: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.reason, self.extra = status, error, message, reason, extra

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": self.error, "message": self.message, **self.extra}, status_code=self.status,
                            headers=headers)


def _mismatch(spec: InputSpec, got: str) -> _Refused:
    return _Refused(400, "InvalidInput", f"expected {spec}; got {got}", "invalid_input", expected=spec.describe())


def _shape_text(tensor: torch.Tensor) -> str:
    return f"shape {list(tensor.shape)} and dtype {_NAMES.get(tensor.dtype, str(tensor.dtype).removeprefix('torch.'))}"


def _from_json(body: bytes, spec: InputSpec) -> torch.Tensor:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise _mismatch(spec, "a body that is not JSON") from None
    if not isinstance(document, dict) or set(document) != {"inputs"} or not isinstance(document["inputs"], list):
        raise _mismatch(spec, 'JSON that is not {"inputs": [[...], ...]}')
    inputs = document["inputs"]
    try:
        raw = torch.tensor(inputs)  # bool, int64 or float32, as the values are
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise _mismatch(spec, "values that are not a rectangular array of numbers") from None
    kind = "booleans" if raw.dtype == torch.bool else "floats" if raw.is_floating_point() else "integers"
    if not spec.fits(raw):
        raise _mismatch(spec, f"shape {list(raw.shape)} of {kind}")
    if spec.dtype.is_floating_point:
        if kind == "booleans":
            raise _mismatch(spec, "booleans")
        if spec.dtype != torch.float32 and kind == "floats":
            return torch.tensor(inputs, dtype=spec.dtype)  # rounded once, from the JSON's doubles
        return raw.to(spec.dtype)
    if spec.dtype == torch.bool:
        if kind != "booleans":
            raise _mismatch(spec, kind)
        return raw
    if kind != "integers":
        raise _mismatch(spec, kind)
    info = torch.iinfo(spec.dtype)
    if int(raw.min()) < info.min or int(raw.max()) > info.max:
        raise _mismatch(spec, f"integers outside {spec.dtype_name}'s range [{info.min}, {info.max}]")
    return raw.to(spec.dtype)


def _from_safetensors(body: bytes, spec: InputSpec) -> torch.Tensor:
    try:
        tensors = safetensors.torch.load(body)
    except (SafetensorError, KeyError, ValueError, TypeError, RuntimeError):
        raise _mismatch(spec, "a body that is not a safetensors file") from None
    if set(tensors) != {"inputs"}:
        raise _mismatch(spec, f"tensors named {sorted(tensors)} instead of one named 'inputs'")
    tensor = tensors["inputs"]
    if not spec.fits(tensor) or tensor.dtype != spec.dtype:
        raise _mismatch(spec, _shape_text(tensor))
    return tensor


class _Predictor:
    """Runs requests through the model on a bounded pool of threads (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, spec: InputSpec, *, workers: int, max_queue: int,
                 inference: Histogram, in_flight: Gauge) -> None:
        self.model = model
        self.spec = spec
        self.capacity = workers + max_queue
        self.pending = 0  # only touched on the event loop
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ppml-inference")
        self.inference = inference
        self.in_flight = in_flight

    async def __call__(self, body: bytes, media_type: str) -> Response:
        if self.pending >= self.capacity:
            raise _Refused(503, "Busy", f"{self.pending} requests are already running or waiting; retry later",
                           "busy")
        self.pending += 1
        self.in_flight.inc()
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._predict, body, media_type)
        finally:
            self.pending -= 1
            self.in_flight.dec()

    def _predict(self, body: bytes, media_type: str) -> Response:
        inputs = (_from_json if media_type == JSON else _from_safetensors)(body, self.spec)
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                outputs = self.model(inputs)
        except Exception:
            log.exception("ppml serve-model: the model failed on a batch of %s", _shape_text(inputs))
            raise _Refused(500, "ModelError", "the model failed on this input (the server log says why)",
                           "model") from None
        self.inference.observe(time.perf_counter() - started)
        if not isinstance(outputs, torch.Tensor):
            log.error("ppml serve-model: the model returned a %s, not a tensor", type(outputs).__name__)
            raise _Refused(500, "ModelError", "the model returned no tensor", "model")
        outputs = outputs.detach().cpu()
        if media_type == JSON:
            text = json.dumps({"outputs": outputs.tolist(), "shape": list(outputs.shape),
                               "dtype": _NAMES.get(outputs.dtype, str(outputs.dtype).removeprefix("torch."))})
            return Response(text, media_type=JSON)
        return Response(safetensors.torch.save({"outputs": outputs.contiguous()}), media_type=SAFETENSORS)


class _RequireToken:
    """Refuses ``/v1/`` requests without the token with 401, before their bodies are read."""

    def __init__(self, app: ASGIApp, token: BearerToken, refused: Counter) -> None:
        self.app = app
        self.token = token
        self.refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            authorization = next((value.decode("latin-1") for name, value in scope.get("headers", [])
                                  if name == b"authorization"), None)
            if not self.token.matches(authorization):
                self.refused.labels("unauthenticated").inc()
                refusal = _Refused(401, "Unauthenticated", "send the serving token as 'Authorization: Bearer TOKEN'",
                                   "unauthenticated")
                await refusal.response({"WWW-Authenticate": 'Bearer realm="ppml"'})(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def create_app(
    model: torch.nn.Module,
    spec: InputSpec,
    *,
    token: BearerToken,
    max_body: int = DEFAULT_MAX_BODY,
    workers: int = 1,
    max_queue: int = 64,
    registry: CollectorRegistry | None = None,
) -> ASGIApp:
    """The ASGI app serving ``model`` (put in eval mode here) for inputs of ``spec``, to clients
    holding ``token``; request bodies over ``max_body`` bytes are refused.

    Raises:
        UsageError: ``workers`` or ``max_queue`` out of range.
    """
    if not 1 <= workers <= 64 or not 0 <= max_queue <= 100_000 or max_body < 1:
        raise UsageError("workers must be 1..64, max_queue 0..100000 and max_body positive")
    model.eval()
    registry = registry or CollectorRegistry()
    requests_total = Counter("ppml_serving_requests_total", "HTTP requests", ["route", "status"], registry=registry)
    latency = Histogram("ppml_serving_request_seconds", "HTTP request latency", ["route"], registry=registry,
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0))
    inference = Histogram("ppml_serving_inference_seconds", "time in the model's forward", registry=registry,
                          buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0))
    refused = Counter("ppml_serving_refused_total", "requests refused or failed, by reason", ["reason"],
                      registry=registry)
    in_flight = Gauge("ppml_serving_in_flight", "predictions running or waiting", registry=registry)
    predictor = _Predictor(model, spec, workers=workers, max_queue=max_queue, inference=inference,
                           in_flight=in_flight)

    app = FastAPI(title="ppml model server", version="1", docs_url=None, redoc_url=None,
                  description="Predictions from a model whose weights were released to this attested server.")

    @app.post("/v1/predict", tags=["predictions"])
    async def predict(request: Request) -> Response:
        """A batch of inputs (JSON or safetensors, see the module docstring) in, outputs out."""
        media_type = _media_type(request)
        try:
            if media_type not in (JSON, SAFETENSORS):
                raise _Refused(415, "UnsupportedMediaType", f"send Content-Type {JSON} or {SAFETENSORS}",
                               "unsupported_media_type")
            return await predictor(await request.body(), media_type)
        except _Refused as refusal:
            refused.labels(refusal.reason).inc()
            return refusal.response({"Retry-After": "1"} if refusal.status == 503 else None)

    @app.get("/v1/model", tags=["predictions"])
    async def describe() -> JSONResponse:
        """What ``/v1/predict`` expects, and the formats it speaks."""
        return JSONResponse({"input": spec.describe(), "formats": [JSON, SAFETENSORS]})

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Observe(_RequireToken(BodyLimit(app, max_body), token, refused), requests_total, latency,
                   access_log=access_log, route_of=_route)


_ROUTES: Final = frozenset({"/v1/predict", "/v1/model", "/healthz", "/metrics"})


def _route(scope: Scope) -> str:
    """The route for metrics and the log: also for a request refused before routing (401, 413),
    but only a known one, so clients cannot mint metric series."""
    return scope["path"] if scope["path"] in _ROUTES else "unmatched"
