"""The native ``/v1`` API: apps, keys and data keys (handlers answer JSON; the models document it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from ppml.core import signing
from ppml.kms import wire
from ppml.kms.http.auth import Authenticator
from ppml.kms.http.batching import GroupCommit
from ppml.kms.http.metrics import KmsMetrics
from ppml.kms.http.models import (
    CiphertextRequest,
    CiphertextResponse,
    CreateKeyRequest,
    CredentialsResponse,
    DataKeyResponse,
    GenerateDataKeyRequest,
    KeyResponse,
    PlaintextRequest,
    PlaintextResponse,
    ScheduleDeletionRequest,
    b64decode,
    b64encode,
    json_body,
    key_json,
    request_body,
)
from ppml.kms.service import KmsService
from ppml.kms.types import DataKeyRequest, RequestContext

__all__ = ["RawHandler", "add_native_routes"]

#: A hot data-key handler: (request, key id) -> response.
RawHandler = Callable[[Request, str], Awaitable[Response]]


def add_native_routes(app: FastAPI, service: KmsService, *, auth: Authenticator, open_enrollment: bool,
                      call: Callable[..., Awaitable[Any]],
                      batcher: GroupCommit[DataKeyRequest, bytes], metrics: KmsMetrics) -> dict[str, RawHandler]:
    """Mount ``/v1`` on ``app``; returns the hot data-key handlers by route name (the server's
    fast path calls them directly)."""
    authenticated = auth.native

    async def maybe_authenticated(request: Request) -> RequestContext | None:
        if signing.HEADER_APP.lower() not in request.headers and open_enrollment:
            return None
        return await auth.native(request)

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
        return JSONResponse(key_json(key), status_code=201)

    @app.get("/v1/keys", response_model=list[KeyResponse], tags=["keys"])
    async def list_keys(ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        return JSONResponse([key_json(k) for k in await call(service.list_keys, ctx)])

    @app.get("/v1/keys/{key_id}", response_model=KeyResponse, tags=["keys"])
    async def describe_key(key_id: str, ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        return JSONResponse(key_json(await call(service.describe_key, ctx, key_id)))

    @app.post("/v1/keys/{key_id}/enable", response_model=KeyResponse, tags=["keys"])
    async def enable_key(key_id: str, ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        return JSONResponse(key_json(await call(service.set_enabled, ctx, key_id, True)))

    @app.post("/v1/keys/{key_id}/disable", response_model=KeyResponse, tags=["keys"])
    async def disable_key(key_id: str, ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        return JSONResponse(key_json(await call(service.set_enabled, ctx, key_id, False)))

    @app.post("/v1/keys/{key_id}/schedule-deletion", response_model=KeyResponse, tags=["keys"])
    async def schedule_deletion(key_id: str,
                                body: ScheduleDeletionRequest = Body(default_factory=lambda: ScheduleDeletionRequest()),
                                ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        """Make the key unusable now and delete it after ``days`` (0: at once)."""
        result = await call(service.schedule_deletion, ctx, key_id, days=body.days)
        if result is None:
            return JSONResponse({"key_id": key_id, "state": "Deleted"})
        return JSONResponse(key_json(result))

    @app.post("/v1/keys/{key_id}/cancel-deletion", response_model=KeyResponse, tags=["keys"])
    async def cancel_deletion(key_id: str, ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        return JSONResponse(key_json(await call(service.cancel_deletion, ctx, key_id)))

    @app.post("/v1/keys/{key_id}/rotate", response_model=KeyResponse, tags=["keys"])
    async def rotate(key_id: str, ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        """Add a new key version for new wraps; older versions still unwrap."""
        return JSONResponse(key_json(await call(service.rotate, ctx, key_id)))

    # The data-key routes are the hot path. Each handler is written once, taking the raw request:
    # the plain-ASGI dispatcher (app.DataKeyRoutes) calls it without FastAPI's routing and
    # dependency machinery, and FastAPI routes the same function (and documents it) elsewhere.
    async def generate_data_key(request: Request, key_id: str) -> Response:
        """A fresh data key, wrapped (and in plaintext unless ``include_plaintext`` is false).

        With an ``X-PPML-Attestation`` token the plaintext comes back as ``jwe``, encrypted to the
        TEE public key in the token."""
        ctx = await auth.native(request)
        body = await json_body(request, GenerateDataKeyRequest, optional=True)
        token = request.headers.get(wire.ATTESTATION_HEADER)
        if token:
            jwe, wrapped = await metrics.count_release(call(
                service.generate_data_key_for_tee, ctx, key_id, length=body.length, aad=b64decode(body.aad, "aad"),
                token=token))
            return JSONResponse({"ciphertext": b64encode(wrapped), "jwe": jwe})
        job = DataKeyRequest.generate(ctx, key_id, length=body.length, aad=b64decode(body.aad, "aad"),
                                      with_plaintext=body.include_plaintext)
        result = {"ciphertext": b64encode(await batcher.run(job))}
        if body.include_plaintext:
            result["plaintext"] = b64encode(job.data)
        return JSONResponse(result)

    async def decrypt(request: Request, key_id: str) -> Response:
        """Unwrap a data key (or decrypt a small ciphertext); ``aad`` must match the one used to wrap.

        With an ``X-PPML-Attestation`` token the key comes back as ``jwe``, encrypted to the TEE
        public key in the token; keys with a release policy answer only that way."""
        ctx = await auth.native(request)
        body = await json_body(request, CiphertextRequest)
        token = request.headers.get(wire.ATTESTATION_HEADER)
        if token:
            jwe = await metrics.count_release(call(
                service.release_to_tee, ctx, key_id, b64decode(body.ciphertext, "ciphertext"),
                b64decode(body.aad, "aad"), token=token))
            return JSONResponse({"jwe": jwe})
        plaintext = await batcher.run(DataKeyRequest.decrypt(
            ctx, key_id, b64decode(body.ciphertext, "ciphertext"), b64decode(body.aad, "aad")))
        return JSONResponse({"plaintext": b64encode(plaintext)})

    async def encrypt(request: Request, key_id: str) -> Response:
        """Encrypt a small plaintext under the key's newest version."""
        ctx = await auth.native(request)
        body = await json_body(request, PlaintextRequest)
        ciphertext = await batcher.run(DataKeyRequest.encrypt(
            ctx, key_id, b64decode(body.plaintext, "plaintext"), b64decode(body.aad, "aad")))
        return JSONResponse({"ciphertext": b64encode(ciphertext)})

    hot: dict[str, tuple[RawHandler, type[BaseModel], type[BaseModel], bool]] = {
        "generate-data-key": (generate_data_key, GenerateDataKeyRequest, DataKeyResponse, False),
        "decrypt": (decrypt, CiphertextRequest, PlaintextResponse, True),
        "encrypt": (encrypt, PlaintextRequest, CiphertextResponse, True),
    }
    for name, (handler, request_model, response_model, required) in hot.items():
        app.add_api_route(f"/v1/keys/{{key_id}}/{name}", handler, methods=["POST"], response_model=response_model,
                          response_model_exclude_none=True, tags=["data keys"],
                          openapi_extra=request_body(request_model, required=required))

    @app.post("/v1/keys/{key_id}/rewrap", response_model=CiphertextResponse, tags=["data keys"])
    async def rewrap(key_id: str, body: CiphertextRequest,
                     ctx: RequestContext = Depends(authenticated)) -> JSONResponse:
        """Move a wrapped key to the key's newest version; the plaintext never leaves the service."""
        ciphertext = await call(service.rewrap, ctx, key_id, b64decode(body.ciphertext, "ciphertext"),
                                b64decode(body.aad, "aad"))
        return JSONResponse({"ciphertext": b64encode(ciphertext)})

    return {name: entry[0] for name, entry in hot.items()}
