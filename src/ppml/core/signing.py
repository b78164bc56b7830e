"""Request signing for the KMS's two HTTP surfaces. Shared by the server and the clients.

Native API (``/v1``): every request carries four headers::

    X-PPML-App        appid
    X-PPML-Timestamp  milliseconds since the epoch (13 digits)
    X-PPML-Nonce      32 hex characters, random per request
    X-PPML-Signature  base64(HMAC-SHA256(apikey, string_to_sign))

    string_to_sign = "PPML-HMAC-SHA256\\n" METHOD "\\n" PATH "\\n" QUERY "\\n" TIMESTAMP "\\n"
                     NONCE "\\n" hex(SHA-256(body))
    PATH is the path as sent on the wire (percent-encoded), without the query.

The server accepts a timestamp within ±10 minutes and each nonce once per app in that window.
Unlike a bearer apikey, the secret never crosses the wire and a captured request cannot be
replayed or altered.

eHSM surface (``/ehsm?Action=…``): ``sign = base64(HMAC-SHA256(apikey, params_sort_str))`` over
``appid``, ``payload`` and ``timestamp`` (see :func:`ehsm_sort_str`), the timestamp being the nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "REPLAY_WINDOW_MS",
    "ehsm_sign",
    "ehsm_sign_object",
    "ehsm_sort_str",
    "native_headers",
    "native_signature",
    "timestamp_ms",
    "verify_signature",
]

REPLAY_WINDOW_MS: Final = 10 * 60 * 1000
HEADER_APP, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE = (
    "X-PPML-App", "X-PPML-Timestamp", "X-PPML-Nonce", "X-PPML-Signature",
)


def timestamp_ms(now: float | None = None) -> str:
    return str(int((time.time() if now is None else now) * 1000))


def _hmac_b64(apikey: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(apikey, message, hashlib.sha256).digest()).decode()


def native_signature(apikey: bytes, *, method: str, path: str, query: str, timestamp: str, nonce: str,
                     body: bytes) -> str:
    message = "\n".join(
        ["PPML-HMAC-SHA256", method.upper(), path, query, timestamp, nonce, hashlib.sha256(body).hexdigest()]
    )
    return _hmac_b64(apikey, message.encode())


def native_headers(appid: str, apikey: bytes, *, method: str, path: str, query: str = "", body: bytes = b"",
                   now: float | None = None) -> dict[str, str]:
    timestamp = timestamp_ms(now)
    nonce = secrets.token_hex(16)
    return {
        HEADER_APP: appid,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: native_signature(apikey, method=method, path=path, query=query,
                                           timestamp=timestamp, nonce=nonce, body=body),
    }


def _skipped(value: Any) -> bool:
    """JavaScript's ``v != '' && v != undefined && v != null`` fails for these (loose equality)."""
    if value is None or value is False:
        return True
    if isinstance(value, str | list) and len(value) == 0:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def _render(value: Any) -> str:
    if isinstance(value, Mapping):
        return ehsm_sort_str(value)
    if isinstance(value, list):
        return ehsm_sort_str({str(i): v for i, v in enumerate(value)})
    if value is True:
        return "true"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def ehsm_sort_str(params: Mapping[str, Any]) -> str:
    """eHSM's ``params_sort_str``: keys in ASCII order; values that JavaScript's loose
    ``v != ''`` test drops (null, "", 0, false, []) skipped; objects rendered the same way
    recursively with no brackets; ``k=v`` joined by ``&``; no URL escaping."""
    return "&".join(f"{key}={_render(params[key])}" for key in sorted(params) if not _skipped(params[key]))


def ehsm_sign(apikey: bytes, *, appid: str, payload: Mapping[str, Any] | None, timestamp: str,
              nonce: str | None = None) -> str:
    """The request ``sign``; ``payload=None`` leaves it out (an empty ``{}`` is signed as ``payload=``)."""
    params = {"appid": appid, "nonce": nonce, "payload": payload, "timestamp": timestamp}
    return ehsm_sign_object(apikey, params)


def ehsm_sign_object(apikey: bytes, params: Mapping[str, Any]) -> str:
    """``sign`` over any object, as eHSM signs requests and VerifyQuote results."""
    return _hmac_b64(apikey, ehsm_sort_str(params).encode())


def verify_signature(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())
