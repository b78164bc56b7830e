"""ASGI middleware of the KMS app: eHSM request normalisation and the KMS's body checks, around
the body limit, request ids, metrics and access log every ppml service shares (:mod:`ppml.asgi`)."""

from __future__ import annotations

import logging
import os
import re
from typing import Final

from fastapi.responses import JSONResponse
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ppml.asgi import BodyLimit, Observe, matched_route
from ppml.kms.http.auth import EhsmError
from ppml.kms.http.ehsm import EHSM_ACTIONS, MAX_JSON_DEPTH, ehsm_result, json_too_deep, parse_action
from ppml.kms.http.metrics import KmsMetrics

__all__ = ["MAX_BODY", "ActionOutcomes", "EhsmRequests", "observed"]

MAX_BODY: Final = 1 << 20
access_log = logging.getLogger("ppml.kms.access")
#: eHSM replies are ``{"code": N, ...}`` (ehsm_result writes ``code`` first, compactly).
_EHSM_CODE = re.compile(rb'\{"code":(\d{3})[,}]')


def _too_deep(scope: Scope, body: bytes) -> ASGIApp | None:
    """Bodies nested deeper than ``MAX_JSON_DEPTH`` are refused with 400 before anything parses them."""
    if not json_too_deep(body):
        return None
    refusal = f"request body nested deeper than {MAX_JSON_DEPTH} levels"
    if scope["path"] == "/ehsm":
        return ehsm_result(None, f"Parameter invalid, {refusal}", 400)
    return JSONResponse({"error": "KmsRequestRejected", "message": refusal}, status_code=400)


class EhsmRequests:
    """eHSM requests are normalised here, once: ``/ehsm/`` becomes ``/ehsm`` (eHSM's Python SDK
    posts there), and the one ``Action`` is parsed into ``scope["state"]["ehsm_action"]`` (a
    repeated ``Action`` is refused), which dispatch, the access log and metrics all read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in ("/ehsm", "/ehsm/"):
            scope["path"], scope["raw_path"] = "/ehsm", b"/ehsm"
            try:
                scope["state"]["ehsm_action"] = parse_action(scope.get("query_string", b""))
            except EhsmError as exc:
                scope["state"]["ehsm_action"] = ""
                await ehsm_result(None, exc.message, exc.code)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _route(scope: Scope) -> str:
    if scope["path"] == "/ehsm":
        action = scope["state"].get("ehsm_action", "")
        # Only known actions become label values: clients must not mint metric series.
        return f"/ehsm?Action={action if action in EHSM_ACTIONS else 'unknown'}"
    return matched_route(scope)


class ActionOutcomes:
    """Counts each request by API and action with its outcome: the HTTP status for the native
    API, and for ``/ehsm`` the ``code`` in eHSM's reply body, because eHSM answers errors with
    HTTP 200 (only the body's first bytes are looked at). Sits outside :class:`EhsmRequests`,
    so it sees the parsed ``Action`` and the route that answered."""

    def __init__(self, app: ASGIApp, actions: Counter) -> None:
        self.app = app
        self.actions = actions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        ehsm_code: bytes | None = None
        is_ehsm = scope["path"] == "/ehsm"
        first_body = is_ehsm  # only eHSM replies carry their outcome in the body

        async def watch(message: Message) -> None:
            nonlocal status, ehsm_code, first_body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and first_body:
                first_body = False
                match = _EHSM_CODE.match(message.get("body", b""))
                ehsm_code = match[1] if match else None
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if is_ehsm:
                action = scope.get("state", {}).get("ehsm_action", "")
                code = ehsm_code.decode() if ehsm_code is not None else str(status)
                self.actions.labels("ehsm", action if action in EHSM_ACTIONS else "unknown", code).inc()
            else:
                self.actions.labels("native", getattr(scope.get("route"), "name", "unmatched"), str(status)).inc()


def observed(app: ASGIApp, metrics: KmsMetrics) -> Observe:
    """``app`` behind the KMS's middleware: observed (request ids, metrics, the access log with
    the caller's appid), counted by action, eHSM requests normalised, bodies limited to
    ``MAX_BODY`` and checked."""
    worker = os.environ.get("PPML_WORKER_INDEX")  # set in ppml serve --workers N
    inner = ActionOutcomes(EhsmRequests(BodyLimit(app, MAX_BODY, inspect=_too_deep)), metrics.actions)
    return Observe(inner, metrics.requests, metrics.latency, access_log=access_log, route_of=_route,
                   log_fields=("appid",), worker=int(worker) if worker and worker.isdigit() else None)
