"""The KMS over HTTP: the native ``/v1`` JSON API (OpenAPI at ``/openapi.json``), the
eHSM-compatible ``/ehsm`` surface, ``/healthz`` and ``/metrics``.

Wiring only: requests are authenticated (see :mod:`ppml.core.signing`), turned into a
:class:`~ppml.kms.service.RequestContext` and handed to :class:`~ppml.kms.service.KmsService`.
Access logs are one JSON line per request with method, path, status, appid, duration and request
id — never bodies, headers or query values that could hold secrets.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ppml.errors import (
    AuthenticationFailed,
    InvalidCiphertext,
    KeyDisabled,
    KeyNotFound,
    KmsRequestRejected,
    KmsUnavailable,
    PermissionDenied,
    PpmlError,
    ReplayedRequest,
    TokenRejected,
    UsageError,
)
from ppml.core import signing
from ppml.kms.auth import Authenticator, EhsmError
from ppml.kms.batching import GroupCommit
from ppml.kms.ehsm import (
    DATA_KEY_ACTIONS,
    EHSM_ACTIONS,
    MAX_JSON_DEPTH,
    EhsmAction,
    add_ehsm_routes,
    ehsm_error_response,
    ehsm_result,
    json_too_deep,
    kms_actions,
    parse_action,
)
from ppml.kms.service import Credentials, DataKeyRequest, KeyDescription, KmsService, RequestContext

__all__ = ["AppHooks", "MAX_BODY", "create_app"]

MAX_BODY: Final = 1 << 20
access_log = logging.getLogger("ppml.kms.access")

STATUS: Final[list[tuple[type[PpmlError], int]]] = [
    (ReplayedRequest, 401),
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (KeyNotFound, 404),
    (KeyDisabled, 409),
    (InvalidCiphertext, 400),
    (KmsRequestRejected, 400),
    (KmsUnavailable, 503),
    (TokenRejected, 403),
    (UsageError, 400),  # a request whose values fail validation (e.g. a policy's mr_enclave)
]


def status_of(exc: PpmlError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


class _BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether announced by Content-Length or sent
    chunked: the body is read (up to limit + 1 bytes) before the app sees the request. Bodies
    nested deeper than ``MAX_JSON_DEPTH`` are refused with 400 before anything parses them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await _too_large(send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # a disconnect: let the app see it
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await _too_large(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_too_deep(body):
            refusal = f"request body nested deeper than {MAX_JSON_DEPTH} levels"
            response = (ehsm_result(None, f"Parameter invalid, {refusal}", 400) if scope["path"] == "/ehsm"
                        else JSONResponse({"error": "KmsRequestRejected", "message": refusal}, status_code=400))
            await response(scope, receive, send)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send) -> None:
    body = json.dumps({"error": "PayloadTooLarge", "message": f"request body over {MAX_BODY} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _Observe:
    """Request ids, metrics and one JSON access-log line per request (plain ASGI: cheap).

    eHSM requests are normalised here, once: ``/ehsm/`` becomes ``/ehsm`` (eHSM's Python SDK
    posts there), and the one ``Action`` is parsed into ``scope["state"]["ehsm_action"]`` (a
    repeated ``Action`` is refused), which dispatch, the access log and metrics all read."""

    def __init__(self, app: ASGIApp, requests_total: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests_total = requests_total
        self.latency = latency
        worker = os.environ.get("PPML_WORKER_INDEX")  # set in ppml serve --workers N
        self.worker = int(worker) if worker and worker.isdigit() else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
        state = scope.setdefault("state", {})
        state["request_id"] = request_id or os.urandom(16).hex()
        state["appid"] = None
        status = 500
        started = time.perf_counter()
        refusal: EhsmError | None = None
        if scope["path"] in ("/ehsm", "/ehsm/"):
            scope["path"], scope["raw_path"] = "/ehsm", b"/ehsm"
            try:
                state["ehsm_action"] = parse_action(scope.get("query_string", b""))
            except EhsmError as exc:
                state["ehsm_action"], refusal = "", exc

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", state["request_id"].encode())]
            await send(message)

        try:
            if refusal is not None:
                await ehsm_result(None, refusal.message, refusal.code)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            if scope["path"] == "/ehsm":
                action = state["ehsm_action"]
                # Only known actions become label values: clients must not mint metric series.
                route = f"/ehsm?Action={action if action in EHSM_ACTIONS else 'unknown'}"
            self.requests_total.labels(route, str(status)).inc()
            self.latency.labels(route).observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):
                line = {
                    "time": round(time.time(), 3), "method": scope.get("method"), "route": route,
                    "status": status, "appid": state.get("appid"), "ms": round(elapsed * 1000, 2),
                    "request_id": state["request_id"],
                }
                if self.worker is not None:
                    line["worker"] = self.worker
                access_log.info(json.dumps(line))


# -- request and response models (they also document the API in OpenAPI) ----------------------


class CreateKeyRequest(BaseModel):
    keyspec: str = Field("EH_AES_GCM_256", description="EH_AES_GCM_128, EH_AES_GCM_192 or EH_AES_GCM_256")
    description: str = ""
    release_policy: dict[str, Any] | None = Field(None, description="attestation release policy")


class KeyResponse(BaseModel):
    key_id: str
    keyspec: str
    origin: str
    description: str
    state: str
    current_version: int
    created: str
    deletion_time: str | None
    release_policy: dict[str, Any] | None


class GenerateDataKeyRequest(BaseModel):
    length: int = Field(32, ge=1, le=1024)
    aad: str = Field("", description="base64 associated data, needed again to unwrap")
    include_plaintext: bool = True


class DataKeyResponse(BaseModel):
    ciphertext: str
    plaintext: str | None = None


class CiphertextRequest(BaseModel):
    ciphertext: str
    aad: str = ""


class PlaintextRequest(BaseModel):
    plaintext: str
    aad: str = ""


class PlaintextResponse(BaseModel):
    plaintext: str


class CiphertextResponse(BaseModel):
    ciphertext: str


class ScheduleDeletionRequest(BaseModel):
    days: int = Field(7, ge=0, le=365)


class CredentialsResponse(BaseModel):
    appid: str
    apikey: str


def _key_json(key: KeyDescription) -> dict[str, Any]:
    return {
        "key_id": key.key_id, "keyspec": key.keyspec, "origin": key.origin, "description": key.description,
        "state": key.state, "current_version": key.current_version, "created": key.created.isoformat(),
        "deletion_time": key.deletion_time.isoformat() if key.deletion_time else None,
        "release_policy": key.release_policy,
    }


def b64decode(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise KmsRequestRejected(f"{field} is not valid base64") from None


def b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode()


def malformed_request(errors: Sequence[Any]) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:5])
    return JSONResponse({"error": "KmsRequestRejected", "message": f"malformed request: {problems}"},
                        status_code=400)


def ppml_error_response(path: str, exc: PpmlError) -> JSONResponse:
    if path == "/ehsm":
        return ehsm_error_response(exc)
    body: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if exc.hint:
        body["hint"] = exc.hint
    return JSONResponse(body, status_code=status_of(exc))


class _MalformedBody(Exception):
    def __init__(self, errors: Sequence[Any]) -> None:
        super().__init__("malformed request")
        self.errors = errors


ModelT = TypeVar("ModelT", bound=BaseModel)


async def _json_body(request: Request, model: type[ModelT], *, optional: bool = False) -> ModelT:
    """The JSON body validated by ``model`` (an empty body is the defaults when ``optional``)."""
    raw = await request.body()
    if optional and not raw.strip():
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _MalformedBody([{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]) from None


def _request_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """OpenAPI for a body the handler reads itself."""
    return {"requestBody": {"required": required,
                            "content": {"application/json": {"schema": model.model_json_schema()}}}}


_DATA_KEY_PATH = re.compile(r"/v1/keys/([^/]+)/(generate-data-key|decrypt|encrypt)")
RawHandler = Callable[[Request, str], Awaitable[Response]]


class _DataKeyRoutes:
    """Plain-ASGI dispatch of the data-key routes (native and eHSM) to the same handlers that
    FastAPI routes: a data-key request skips FastAPI's middleware stack, routing and dependency
    solving, which cost more than the KMS work itself. Everything else goes to FastAPI."""

    def __init__(self, app: ASGIApp, *, error: Callable[[Request, PpmlError], Response],
                 native: dict[str, RawHandler], native_routes: dict[str, Any],
                 ehsm: Callable[[Request], Awaitable[Response]], ehsm_route: Any) -> None:
        self.app = app
        self.error = error
        self.native = native
        self.native_routes = native_routes
        self.ehsm = ehsm
        self.ehsm_route = ehsm_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            match = _DATA_KEY_PATH.fullmatch(path)
            if match is not None:
                scope["route"] = self.native_routes[match[2]]
                await self._respond(scope, receive, send, self.native[match[2]], match[1])
                return
            if path == "/ehsm" and scope["state"]["ehsm_action"] in DATA_KEY_ACTIONS:
                scope["route"] = self.ehsm_route
                await self._respond(scope, receive, send, lambda request, _: self.ehsm(request), "")
                return
        await self.app(scope, receive, send)

    async def _respond(self, scope: Scope, receive: Receive, send: Send, handler: RawHandler, key_id: str) -> None:
        request = Request(scope, receive)
        try:
            response = await handler(request, key_id)
        except PpmlError as exc:
            response = self.error(request, exc)
        except _MalformedBody as exc:
            response = malformed_request(exc.errors)
        await response(scope, receive, send)


# -- the application ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class AppHooks:
    """What a co-hosted service (the attestation service) may reuse when it adds routes."""

    authenticated: Callable[[Request], Awaitable[RequestContext]]
    call: Callable[..., Awaitable[Any]]
    apikey_of: Callable[[str], bytes | None]
    #: The eHSM action registry: a co-hosted service adds its actions here.
    ehsm_actions: dict[str, EhsmAction]


def create_app(
    service: KmsService,
    *,
    open_enrollment: bool = False,
    now: Callable[[], float] = time.time,
    registry: CollectorRegistry | None = None,
    extend: Callable[[FastAPI, AppHooks], None] | None = None,
) -> FastAPI:
    """Build the ASGI application over ``service``; ``extend`` adds co-hosted routes."""
    app = FastAPI(
        title="ppml KMS",
        version="1",
        description="Envelope-encryption key management: primary keys never leave the service.",
    )
    registry = registry or CollectorRegistry()
    requests_total = Counter("ppml_kms_requests_total", "HTTP requests", ["route", "status"], registry=registry)
    latency = Histogram("ppml_kms_request_seconds", "HTTP request latency", ["route"], registry=registry,
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0))
    inline = service.storage.is_sqlite

    batcher: GroupCommit[DataKeyRequest, bytes] = GroupCommit(service.run_data_key_batch, inline=inline)
    auth = Authenticator(service, now=now, inline=inline, ehsm_actions=EHSM_ACTIONS)

    async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """SQLite work is short and serialised: run it on the event loop instead of paying a
        thread hop; PostgreSQL round trips go to the thread pool."""
        if inline:
            return fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return malformed_request(exc.errors())

    @app.exception_handler(_MalformedBody)
    async def malformed_body(request: Request, exc: _MalformedBody) -> JSONResponse:
        return malformed_request(exc.errors)

    @app.exception_handler(PpmlError)
    async def ppml_error(request: Request, exc: PpmlError) -> JSONResponse:
        return ppml_error_response(request.url.path, exc)

    authenticated = auth.native

    async def maybe_authenticated(request: Request) -> RequestContext | None:
        if signing.HEADER_APP.lower() not in request.headers and open_enrollment:
            return None
        return await auth.native(request)

    # -- health and metrics --

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        def probe() -> None:
            with service.storage.transaction(durable=False) as conn:
                conn.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(probe)
        except KmsUnavailable as exc:
            return JSONResponse({"status": "unavailable", "reason": exc.reason}, status_code=503)
        return JSONResponse({"status": "ok"})

    exposition = registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # ppml serve --workers N: answer for every worker
        from prometheus_client import multiprocess

        exposition = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposition)

    @app.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        return Response(generate_latest(exposition), media_type=CONTENT_TYPE_LATEST)

    # -- native API (handlers return JSONResponse directly; the models document the API) --

    @app.post("/v1/apps", response_model=CredentialsResponse, tags=["apps"], status_code=201)
    async def enroll(ctx: RequestContext | None = Depends(maybe_authenticated)) -> JSONResponse:
        """Enroll an application: needs the admin credential unless the server runs with
        ``--open-enrollment``. The apikey is shown once."""
        credentials = await call(service.enroll, ctx)
        return JSONResponse({"appid": credentials.appid, "apikey": credentials.apikey}, status_code=201)

    @app.post("/v1/keys", response_model=KeyResponse, tags=["keys"], status_code=201)
    async def create_key(body: CreateKeyRequest = Body(default_factory=lambda: CreateKeyRequest()),
                         ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        key = await call(service.create_key, ctx, keyspec=body.keyspec, description=body.description,
                         release_policy=body.release_policy)
        return JSONResponse(_key_json(key), status_code=201)

    @app.get("/v1/keys", response_model=list[KeyResponse], tags=["keys"])
    async def list_keys(ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        return JSONResponse([_key_json(k) for k in await call(service.list_keys, ctx)])

    @app.get("/v1/keys/{key_id}", response_model=KeyResponse, tags=["keys"])
    async def describe_key(key_id: str, ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        return JSONResponse(_key_json(await call(service.describe_key, ctx, key_id)))

    @app.post("/v1/keys/{key_id}/enable", response_model=KeyResponse, tags=["keys"])
    async def enable_key(key_id: str, ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        return JSONResponse(_key_json(await call(service.set_enabled, ctx, key_id, True)))

    @app.post("/v1/keys/{key_id}/disable", response_model=KeyResponse, tags=["keys"])
    async def disable_key(key_id: str, ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        return JSONResponse(_key_json(await call(service.set_enabled, ctx, key_id, False)))

    @app.post("/v1/keys/{key_id}/schedule-deletion", response_model=KeyResponse, tags=["keys"])
    async def schedule_deletion(key_id: str,
                                body: ScheduleDeletionRequest = Body(default_factory=lambda: ScheduleDeletionRequest()),
                                ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        """Make the key unusable now and delete it after ``days`` (0: at once)."""
        result = await call(service.schedule_deletion, ctx, key_id, days=body.days)
        if result is None:
            return JSONResponse({"key_id": key_id, "state": "Deleted"})
        return JSONResponse(_key_json(result))

    @app.post("/v1/keys/{key_id}/cancel-deletion", response_model=KeyResponse, tags=["keys"])
    async def cancel_deletion(key_id: str, ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        return JSONResponse(_key_json(await call(service.cancel_deletion, ctx, key_id)))

    @app.post("/v1/keys/{key_id}/rotate", response_model=KeyResponse, tags=["keys"])
    async def rotate(key_id: str, ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        """Add a new key version for new wraps; older versions still unwrap."""
        return JSONResponse(_key_json(await call(service.rotate, ctx, key_id)))

    # The data-key routes are the hot path: their handlers take the raw request so that the plain
    # ASGI dispatcher below (_DataKeyRoutes) can call them without FastAPI's routing and
    # dependency machinery; FastAPI routes the same handlers everywhere else and documents them.
    async def generate_data_key_raw(request: Request, key_id: str) -> Response:
        ctx = await auth.native(request)
        body = await _json_body(request, GenerateDataKeyRequest, optional=True)
        token = request.headers.get(signing.ATTESTATION_HEADER)
        if token:
            jwe, wrapped = await call(service.generate_data_key_for_tee, ctx, key_id, length=body.length,
                                      aad=b64decode(body.aad, "aad"), token=token)
            return JSONResponse({"ciphertext": b64encode(wrapped), "jwe": jwe})
        job = DataKeyRequest.generate(ctx, key_id, length=body.length, aad=b64decode(body.aad, "aad"),
                                      with_plaintext=body.include_plaintext)
        result = {"ciphertext": b64encode(await batcher.run(job))}
        if body.include_plaintext:
            result["plaintext"] = b64encode(job.data)
        return JSONResponse(result)

    async def decrypt_raw(request: Request, key_id: str) -> Response:
        ctx = await auth.native(request)
        body = await _json_body(request, CiphertextRequest)
        token = request.headers.get(signing.ATTESTATION_HEADER)
        if token:
            jwe = await call(service.release_to_tee, ctx, key_id, b64decode(body.ciphertext, "ciphertext"),
                             b64decode(body.aad, "aad"), token=token)
            return JSONResponse({"jwe": jwe})
        plaintext = await batcher.run(DataKeyRequest.decrypt(
            ctx, key_id, b64decode(body.ciphertext, "ciphertext"), b64decode(body.aad, "aad")))
        return JSONResponse({"plaintext": b64encode(plaintext)})

    async def encrypt_raw(request: Request, key_id: str) -> Response:
        ctx = await auth.native(request)
        body = await _json_body(request, PlaintextRequest)
        ciphertext = await batcher.run(DataKeyRequest.encrypt(
            ctx, key_id, b64decode(body.plaintext, "plaintext"), b64decode(body.aad, "aad")))
        return JSONResponse({"ciphertext": b64encode(ciphertext)})

    @app.post("/v1/keys/{key_id}/generate-data-key", response_model=DataKeyResponse,
              response_model_exclude_none=True, tags=["data keys"],
              openapi_extra=_request_body(GenerateDataKeyRequest, required=False))
    async def generate_data_key(key_id: str, request: Request) -> Response:
        """A fresh data key, wrapped (and in plaintext unless ``include_plaintext`` is false).

        With an ``X-PPML-Attestation`` token the plaintext comes back as ``jwe``, encrypted to the
        TEE public key in the token."""
        return await generate_data_key_raw(request, key_id)

    @app.post("/v1/keys/{key_id}/decrypt", response_model=PlaintextResponse, tags=["data keys"],
              openapi_extra=_request_body(CiphertextRequest))
    async def decrypt(key_id: str, request: Request) -> Response:
        """Unwrap a data key (or decrypt a small ciphertext); ``aad`` must match the one used to wrap.

        With an ``X-PPML-Attestation`` token the key comes back as ``jwe``, encrypted to the TEE
        public key in the token; keys with a release policy answer only that way."""
        return await decrypt_raw(request, key_id)

    @app.post("/v1/keys/{key_id}/encrypt", response_model=CiphertextResponse, tags=["data keys"],
              openapi_extra=_request_body(PlaintextRequest))
    async def encrypt(key_id: str, request: Request) -> Response:
        return await encrypt_raw(request, key_id)

    @app.post("/v1/keys/{key_id}/rewrap", response_model=CiphertextResponse, tags=["data keys"])
    async def rewrap(key_id: str, body: CiphertextRequest,
                     ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        """Move a wrapped key to the key's newest version; the plaintext never leaves the service."""
        ciphertext = await call(service.rewrap, ctx, key_id, b64decode(body.ciphertext, "ciphertext"),
                                b64decode(body.aad, "aad"))
        return JSONResponse({"ciphertext": b64encode(ciphertext)})

    ehsm_actions = kms_actions(service)
    if extend is not None:
        extend(app, AppHooks(authenticated=authenticated, call=call, apikey_of=service.apikey,
                             ehsm_actions=ehsm_actions))
    ehsm_post = add_ehsm_routes(app, service, auth=auth, open_enrollment=open_enrollment, call=call,
                                data_key=batcher.run, actions=ehsm_actions)
    routes = {getattr(r, "path", ""): r for r in app.routes}
    fast = _DataKeyRoutes(
        app, error=lambda request, exc: ppml_error_response(request.url.path, exc),
        native={"generate-data-key": generate_data_key_raw, "decrypt": decrypt_raw, "encrypt": encrypt_raw},
        native_routes={name: routes[f"/v1/keys/{{key_id}}/{name}"] for name in ("generate-data-key", "decrypt", "encrypt")},
        ehsm=ehsm_post, ehsm_route=routes["/ehsm"],
    )
    return _Observe(_BodyLimit(fast, MAX_BODY), requests_total, latency)  # type: ignore[return-value]


__all__ += ["Credentials"]
