"""The HTTP layer's one table from ppml errors to responses: native JSON errors and eHSM's shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from fastapi.responses import JSONResponse

from ppml.errors import (
    AuthenticationFailed,
    InvalidCiphertext,
    KeyDisabled,
    KeyNotFound,
    PermissionDenied,
    PpmlError,
    ReplayedRequest,
    RequestRejected,
    ServiceUnavailable,
    TokenRejected,
    UsageError,
)
from ppml.kms.http.ehsm import ehsm_error_response

__all__ = ["STATUS", "MalformedBody", "malformed_request", "ppml_error_response", "status_of"]

STATUS: Final[list[tuple[type[PpmlError], int]]] = [
    (ReplayedRequest, 401),
    (AuthenticationFailed, 401),
    (PermissionDenied, 403),
    (KeyNotFound, 404),
    (KeyDisabled, 409),
    (InvalidCiphertext, 400),
    (RequestRejected, 400),    # the KMS's and the attestation service's
    (ServiceUnavailable, 503),
    (TokenRejected, 403),
    (UsageError, 400),  # a request whose values fail validation (e.g. a policy's mr_enclave)
]


def status_of(exc: PpmlError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


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


class MalformedBody(Exception):
    """A body that fails its request model (answered 400 with the problems)."""

    def __init__(self, errors: Sequence[Any]) -> None:
        super().__init__("malformed request")
        self.errors = errors
