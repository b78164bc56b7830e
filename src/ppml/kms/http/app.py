"""The KMS over HTTP, assembled: the native ``/v1`` JSON API (OpenAPI at ``/openapi.json``), the
eHSM-compatible ``/ehsm`` surface, ``/healthz`` and ``/metrics``.

Wiring only: requests are authenticated (:mod:`ppml.kms.http.auth`), turned into a
:class:`~ppml.kms.types.RequestContext` and handed to :class:`~ppml.kms.service.KmsService`.
Access logs are one JSON line per request with method, path, status, appid, duration and request
id — never bodies, headers or query values that could hold secrets.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ppml.errors import PpmlError, ServiceUnavailable
from ppml.kms.http.auth import Authenticator
from ppml.kms.http.batching import GroupCommit
from ppml.kms.http.ehsm import DATA_KEY_ACTIONS, EHSM_ACTIONS, EhsmAction, add_ehsm_routes, kms_actions
from ppml.kms.http.errors import MalformedBody, malformed_request, ppml_error_response
from ppml.kms.http.metrics import AuditChainCollector, KmsMetrics
from ppml.kms.http.middleware import observed
from ppml.kms.http.native import RawHandler, add_native_routes
from ppml.kms.service import KmsService
from ppml.kms.types import DataKeyRequest, RequestContext

__all__ = ["AppHooks", "DataKeyRoutes", "create_app"]


_DATA_KEY_PATH = re.compile(r"/v1/keys/([^/]+)/(generate-data-key|decrypt|encrypt)")


class DataKeyRoutes:
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
        except MalformedBody as exc:
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
    #: Where a co-hosted service registers its metrics (exported on the same ``/metrics``).
    registry: CollectorRegistry


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
    metrics = KmsMetrics.create(registry)
    inline = service.runs_inline

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

    @app.exception_handler(MalformedBody)
    async def malformed_body(request: Request, exc: MalformedBody) -> JSONResponse:
        return malformed_request(exc.errors)

    @app.exception_handler(PpmlError)
    async def ppml_error(request: Request, exc: PpmlError) -> JSONResponse:
        return ppml_error_response(request.url.path, exc)

    # -- health and metrics --

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        def probe() -> None:
            with service.storage.transaction(durable=False) as conn:
                conn.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(probe)
        except ServiceUnavailable as exc:
            return JSONResponse({"status": "unavailable", "reason": exc.reason}, status_code=503)
        return JSONResponse({"status": "ok"})

    exposition = registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # ppml serve --workers N: answer for every worker
        from prometheus_client import multiprocess

        exposition = CollectorRegistry()
        multiprocess.MultiProcessCollector(exposition)
    # The audit head lives in the database: read at scrape time, the same from every worker.
    exposition.register(AuditChainCollector(service.audit_head))

    @app.get("/metrics", tags=["operations"])
    async def prometheus_metrics() -> Response:
        """Prometheus exposition (docs/monitoring.md lists the series)."""
        return Response(await run_in_threadpool(generate_latest, exposition), media_type=CONTENT_TYPE_LATEST)

    hot = add_native_routes(app, service, auth=auth, open_enrollment=open_enrollment, call=call, batcher=batcher,
                            metrics=metrics)

    ehsm_actions = kms_actions(service)
    if extend is not None:
        extend(app, AppHooks(authenticated=auth.native, call=call, apikey_of=service.apikey,
                             ehsm_actions=ehsm_actions, registry=registry))
    ehsm_post = add_ehsm_routes(app, service, auth=auth, open_enrollment=open_enrollment, call=call,
                                data_key=batcher.run, actions=ehsm_actions, releases=metrics.count_release)
    routes = {getattr(r, "path", ""): r for r in app.routes}
    fast = DataKeyRoutes(
        app, error=lambda request, exc: ppml_error_response(request.url.path, exc), native=hot,
        native_routes={name: routes[f"/v1/keys/{{key_id}}/{name}"] for name in hot},
        ehsm=ehsm_post, ehsm_route=routes["/ehsm"],
    )
    return observed(fast, metrics)  # type: ignore[return-value]

