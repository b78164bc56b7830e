"""ASGI middleware of the KMS app: body limits, request ids, metrics and the access log."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Final

from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ppml.kms.http.auth import EhsmError
from ppml.kms.http.ehsm import EHSM_ACTIONS, MAX_JSON_DEPTH, ehsm_result, json_too_deep, parse_action

__all__ = ["MAX_BODY", "BodyLimit", "Observe"]

MAX_BODY: Final = 1 << 20
access_log = logging.getLogger("ppml.kms.access")


class BodyLimit:
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


class Observe:
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
