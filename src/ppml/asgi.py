"""HTTPS plumbing shared by ppml's services (the KMS and attestation service, the model server):
request body limits, request ids with metrics and a JSON access log, and running an app under
uvicorn with TLS. Plain ASGI, so that it costs next to nothing per request."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "Observe", "matched_route", "run_https"]

#: Looks at a whole request body before the app does; returns a response to send instead, or None.
Inspect = Callable[[Scope, bytes], ASGIApp | None]


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether announced by Content-Length or sent
    chunked: the body is read (up to limit + 1 bytes) before the app sees the request, so no
    handler ever holds more. ``inspect`` may then answer instead of the app (the KMS refuses JSON
    nested too deep before anything parses it)."""

    def __init__(self, app: ASGIApp, limit: int, *, inspect: Inspect | None = None) -> None:
        self.app = app
        self.limit = limit
        self.inspect = inspect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await self._too_large(send)
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
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if self.inspect is not None:
            refusal = self.inspect(scope, body)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"error": "PayloadTooLarge", "message": f"request body over {self.limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def matched_route(scope: Scope) -> str:
    """The template of the route that answered (``/v1/keys/{key_id}``), or ``unmatched``: never a
    raw path, so clients cannot mint metric series."""
    return getattr(scope.get("route"), "path", "unmatched")


class Observe:
    """Request ids, metrics and one JSON access-log line per request.

    The request id is the client's ``X-Request-Id`` (its first 64 characters) or a fresh one; it
    is in ``scope["state"]["request_id"]`` and echoed in the response. ``route_of`` names the
    route for the metrics and the log. ``log_fields`` are entries of ``scope["state"]`` (None
    until the app sets them, like the KMS's ``appid``) written into each line; a line never holds
    headers, bodies or query values, which could hold secrets. ``worker`` is the process's index
    under ``--workers N``.
    """

    def __init__(self, app: ASGIApp, requests_total: Counter, latency: Histogram, *, access_log: logging.Logger,
                 route_of: Callable[[Scope], str] = matched_route, log_fields: Sequence[str] = (),
                 worker: int | None = None) -> None:
        self.app = app
        self.requests_total = requests_total
        self.latency = latency
        self.access_log = access_log
        self.route_of = route_of
        self.log_fields = tuple(log_fields)
        self.worker = worker

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
        for field in self.log_fields:
            state[field] = None
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", state["request_id"].encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = self.route_of(scope)
            self.requests_total.labels(route, str(status)).inc()
            self.latency.labels(route).observe(elapsed)
            if self.access_log.isEnabledFor(logging.INFO):
                line: dict[str, Any] = {"time": round(time.time(), 3), "method": scope.get("method"), "route": route,
                                        "status": status}
                line.update((field, state.get(field)) for field in self.log_fields)
                line.update(ms=round(elapsed * 1000, 2), request_id=state["request_id"])
                if self.worker is not None:
                    line["worker"] = self.worker
                self.access_log.info(json.dumps(line))


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run_https(app: Callable[[Scope, Receive, Send], Awaitable[None]], *, host: str, port: int, cert: Path, key: Path,
              sock: socket.socket | None = None) -> None:
    """Serve ``app`` over HTTPS until SIGINT/SIGTERM (uvicorn; uvloop and httptools where
    installed: measured, the event loop and HTTP parsing dominate a small request's cost). With
    ``sock`` (a worker of ``--workers N``) it serves that listening socket instead of binding."""
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, ssl_certfile=str(cert), ssl_keyfile=str(key),
        access_log=False, log_level="warning", server_header=False, lifespan="off",
        loop="uvloop" if _has("uvloop") else "asyncio", http="httptools" if _has("httptools") else "h11",
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
