"""The key agent: data keys for the processes of one TEE, through the session that attested.

The attested runtime (``ppml tee run``) serves a Unix domain socket in a private directory (0700,
the socket 0600) and hands its path to the processes it starts in ``PPML_KEY_AGENT``. Those
processes (the JVM, Python workers) ask it for data keys; it answers through its own KMS clients,
which carry the attestation session (tokens, release policies, keys as JWE to the TEE key), so no
credential, token or TEE key ever leaves the runtime. A peer is served only if it runs as the
agent's user (``SO_PEERCRED``) and descends from the agent's process; anything else is refused
before a request is read. The wire protocol is in ``docs/key-agent.md``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import shutil
import socket
import socketserver
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ppml.core.keys import SECRET_ACCESS, DataKey, DataKeyProvider, GeneratedDataKey
from ppml.errors import InvalidCiphertext, KeyServiceError, PpmlError, UsageError

__all__ = ["AGENT_ENV", "MAX_FRAME", "AgentKms", "KeyAgent", "KeyAgentClient"]

#: The environment variable naming the agent's socket for the processes of the TEE.
AGENT_ENV: Final = "PPML_KEY_AGENT"
#: A request or reply line longer than this is refused.
MAX_FRAME: Final = 64 << 10
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether process ``pid`` is ``ancestor`` or one of its descendants (Linux /proc)."""
    for _ in range(4096):  # bounded: a ppid chain is short; a loop would be a kernel bug
        if pid == ancestor:
            return True
        if pid <= 1:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        # pid (comm) state ppid …: comm may hold spaces and parentheses, so split after the last ')'.
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{what} is not valid base64") from None


class KeyAgent:
    """Serve data keys to this TEE's processes; ``open_kms(uri)`` gives the runtime's (attested)
    KMS client for a URI, opened once per URI."""

    def __init__(self, open_kms: Callable[[str], DataKeyProvider], *, tee: str = "none") -> None:
        self._open_kms = open_kms
        self._clients: dict[str, DataKeyProvider] = {}
        self._lock = threading.Lock()
        self._tee = tee
        self._directory: Path | None = None
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None
        self.refused = 0

    @property
    def path(self) -> Path:
        if self._directory is None:
            raise UsageError("the key agent is not running")
        return self._directory / "agent.sock"

    def environment(self) -> dict[str, str]:
        """What the processes of the TEE need to find the agent (a path, no secret)."""
        return {AGENT_ENV: str(self.path)}

    def start(self) -> KeyAgent:
        self._directory = Path(tempfile.mkdtemp(prefix="ppml-agent-"))  # 0700
        agent = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                agent._serve(self.connection, self.rfile, self.wfile)

        old = os.umask(0o177)  # the socket is created 0600: no window with a wider mode
        try:
            server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        finally:
            os.umask(old)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ppml-key-agent", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def __enter__(self) -> KeyAgent:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- serving -------------------------------------------------------------------------------

    def _serve(self, connection: socket.socket, rfile: Any, wfile: Any) -> None:
        pid, uid, _ = _PEERCRED.unpack(connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             _PEERCRED.size))
        if uid != os.getuid() or not _descends_from(pid, os.getpid()):
            self.refused += 1
            wfile.write(self._reply_error("PermissionDenied", "this process is not one of the TEE's: refused"))
            return
        while True:
            line = rfile.readline(MAX_FRAME + 1)
            if not line:
                return
            if len(line) > MAX_FRAME or not line.endswith(b"\n"):
                wfile.write(self._reply_error("UsageError", f"request longer than {MAX_FRAME} bytes"))
                return
            wfile.write(self._answer(line))
            wfile.flush()

    def _answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise UsageError("a request is a JSON object")
            return self._reply(self._dispatch(request))
        except (ValueError, RecursionError):
            return self._reply_error("UsageError", "a request is one line of JSON")
        except PpmlError as exc:
            # Messages name keys, ids and reasons, never key material (errors.py's rule).
            return self._reply_error(type(exc).__name__, str(exc))

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"tee": self._tee}
        if op not in ("generate", "unwrap"):
            raise UsageError(f"unknown op {op!r}: use generate, unwrap or ping")
        uri, key_id = request.get("kms"), request.get("key_id")
        if not isinstance(uri, str) or not isinstance(key_id, str) or not uri or not key_id:
            raise UsageError("kms and key_id must be non-empty strings")
        aad = _unb64(request["aad"], "aad") if request.get("aad") else None
        kms = self._kms(uri)
        if op == "generate":
            generated = kms.generate_data_key(key_id, associated_data=aad)
            return {"key": _b64(generated.data_key.export(SECRET_ACCESS)), "wrapped": _b64(generated.wrapped)}
        wrapped = _unb64(request.get("wrapped"), "wrapped")
        return {"key": _b64(kms.unwrap_data_key(key_id, wrapped, associated_data=aad).export(SECRET_ACCESS))}

    def _kms(self, uri: str) -> DataKeyProvider:
        with self._lock:
            client = self._clients.get(uri)
            if client is None:
                client = self._clients[uri] = self._open_kms(uri)
            return client

    @staticmethod
    def _reply(fields: dict[str, Any]) -> bytes:
        return json.dumps({"ok": True, **fields}).encode() + b"\n"

    @staticmethod
    def _reply_error(error: str, message: str) -> bytes:
        return json.dumps({"ok": False, "error": error, "message": message}).encode() + b"\n"


class KeyAgentClient:
    """A connection to the agent named by ``PPML_KEY_AGENT`` (or ``path``); requests from several
    threads take turns on it."""

    def __init__(self, path: Path | str | None = None) -> None:
        path = path or os.environ.get(AGENT_ENV)
        if not path:
            raise UsageError(f"no key agent: ${AGENT_ENV} is not set",)
        self.path = Path(path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.connect(str(self.path))
        except OSError as exc:
            self._socket.close()
            error = UsageError(f"cannot reach the key agent at {self.path}: {exc.strerror or exc}")
            error.hint = "run the job under `ppml submit` or `ppml tee run`, which start the agent"
            raise error from None
        self._file = self._socket.makefile("rwb")
        self._lock = threading.Lock()

    def request(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            try:
                self._file.write(json.dumps(request).encode() + b"\n")
                self._file.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the agent refuses a peer before reading its request: its one reply says why
            try:
                line = self._file.readline(MAX_FRAME + 1)
            except ConnectionResetError:
                line = b""
        if not line:
            raise KeyServiceError(f"the key agent at {self.path} closed the connection")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise _agent_error(str(reply.get("error", "")), str(reply.get("message", "")))
        return dict(reply)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
            self._socket.close()


def _agent_error(kind: str, message: str) -> PpmlError:
    from ppml import errors

    error_type = getattr(errors, kind, None)
    if isinstance(error_type, type) and issubclass(error_type, PpmlError) and error_type is not InvalidCiphertext:
        try:
            return error_type(message)
        except TypeError:  # a leaf with structured fields: keep its family
            pass
    if kind == "InvalidCiphertext":
        return InvalidCiphertext()
    return KeyServiceError(f"key agent: {kind}: {message}")


class AgentKms:
    """A ``DataKeyProvider`` for one KMS URI through the key agent: what the processes of a TEE use
    instead of a KMS client of their own."""

    def __init__(self, uri: str, *, client: KeyAgentClient | None = None) -> None:
        self._uri = uri
        self._client = client or KeyAgentClient()

    @property
    def uri(self) -> str:
        return self._uri

    def generate_data_key(self, key_id: str, *, associated_data: bytes | None = None) -> GeneratedDataKey:
        reply = self._client.request({"op": "generate", "kms": self._uri, "key_id": key_id,
                                      "aad": _b64(associated_data or b"")})
        return GeneratedDataKey(key_id=key_id, data_key=DataKey(_unb64(reply["key"], "key")),
                                wrapped=_unb64(reply["wrapped"], "wrapped"))

    def unwrap_data_key(self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None) -> DataKey:
        reply = self._client.request({"op": "unwrap", "kms": self._uri, "key_id": key_id, "wrapped": _b64(wrapped),
                                      "aad": _b64(associated_data or b"")})
        return DataKey(_unb64(reply["key"], "key"))

    def close(self) -> None:
        self._client.close()
