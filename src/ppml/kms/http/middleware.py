"""ASGI middleware of the KMS app: eHSM request normalisation and the KMS's body checks, around
the body limit, request ids, metrics and access log every ppml service shares (:mod:`ppml.asgi`)."""

from __future__ import annotations

import logging
import os
from typing import Final

from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Receive, Scope, Send

from ppml.asgi import BodyLimit, Observe, matched_route
from ppml.kms.http.auth import EhsmError
from ppml.kms.http.ehsm import EHSM_ACTIONS, MAX_JSON_DEPTH, ehsm_result, json_too_deep, parse_action

__all__ = ["MAX_BODY", "EhsmRequests", "observed"]

MAX_BODY: Final = 1 << 20
access_log = logging.getLogger("ppml.kms.access")


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


def observed(app: ASGIApp, requests_total: Counter, latency: Histogram) -> Observe:
    """``app`` behind the KMS's middleware: observed (request ids, metrics, the access log with
    the caller's appid), eHSM requests normalised, bodies limited to ``MAX_BODY`` and checked."""
    worker = os.environ.get("PPML_WORKER_INDEX")  # set in ppml serve --workers N
    return Observe(EhsmRequests(BodyLimit(app, MAX_BODY, inspect=_too_deep)), requests_total, latency,
                   access_log=access_log, route_of=_route, log_fields=("appid",),
                   worker=int(worker) if worker and worker.isdigit() else None)
