"""The eHSM-compatible surface: ``POST /ehsm?Action=…`` (and ``GET`` for GetVersion/Enroll).

Wire facts (docs/ehsm-api.md has the sources): the body is
``{"appid", "payload", "timestamp", "sign"[, "nonce"]}`` with ``sign`` over eHSM's
``params_sort_str``; the timestamp is a 13-digit millisecond string within ±10 minutes and each
(appid, timestamp[, nonce]) is accepted once; replies are always
``{"code": …, "message": …, "result": {…}}`` with eHSM's codes (200, 400, 404, 500) in the body.
Like eHSM, replies use HTTP 200 whatever the code, because eHSM clients (BigDL's among them)
read only the body — except a storage outage, which is HTTP 503 with body code 500.

Where ppml deliberately differs from eHSM:

* Enroll needs the admin credential unless the server runs with ``--open-enrollment``
  (eHSM lets anyone who reaches the port enroll).
* Another app's key id answers ``keyid error`` exactly like an unknown one (eHSM says
  ``appid error``, which tells a caller the key exists).
* A timestamp is consumed only by a request whose signature verified, so nobody can burn
  another app's timestamps; and the replay record lives in the database, shared by replicas.
  It is spent by every authenticated request, whatever its action and whatever its outcome.
* eHSM's signature does not cover ``Action``. Each action's payload must hold only that
  action's fields (anything else is 400), so a captured body cannot be replayed as another
  action; a nonce ``<Action>.<random>`` (ppml's client sends one) binds the request to its action.
* ``Action`` given twice is refused (400); ``/ehsm/`` is served exactly like ``/ehsm`` (eHSM's
  Python SDK posts to ``/ehsm/``); bodies nested deeper than ``MAX_JSON_DEPTH`` are refused.
* With an ``X-PPML-Attestation`` token (ppml's client inside a TEE), ``GenerateDataKey*`` and
  ``Decrypt`` go through the same attested release as the native API: the data key comes back
  only as ``jwe``, encrypted to the TEE's key, and the key's release policy is enforced.
* Ciphertexts are ppml's wrap format (opaque to clients, as eHSM's are).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ppml import __version__
from ppml.core import signing
from ppml.errors import (
    AttestationFailed,
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
)
from ppml.kms import wire
from ppml.kms.http.auth import Authenticator, EhsmError
from ppml.kms.service import KmsService
from ppml.kms.types import ENABLED, DataKeyRequest, RequestContext
from ppml.kms.wire import b64encode

__all__ = [
    "DATA_KEY_ACTIONS", "EHSM_ACTIONS", "MAX_JSON_DEPTH", "EhsmAction", "EhsmError",
    "add_ehsm_routes", "ehsm_error_response", "ehsm_result", "json_too_deep", "parse_action",
]

_UUID = re.compile(r"^[a-z\d]{8}-[a-z\d]{4}-[a-z\d]{4}-[a-z\d]{4}-[a-z\d]{12}$")
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
MAX_B64: Final = 8192
_DECRYPT_FAILED = "Decryption failed, Please confirm that your parameters are correct."
_SERVER_ERROR = "Server internal error, please contact the administrator."


def ehsm_result(result: dict[str, Any] | None = None, message: str = "success!", code: int = 200,
                http_status: int = 200) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "result": result or {}}, status_code=http_status)


def ehsm_error_response(exc: PpmlError) -> JSONResponse:
    if isinstance(exc, TokenRejected):
        return ehsm_result(None, f"{wire.EHSM_TOKEN_REJECTED}{exc.reason}", 400)
    if isinstance(exc, AttestationFailed):
        return ehsm_result(None, exc.reason, 400)
    if isinstance(exc, ReplayedRequest):
        return ehsm_result(None, "Timestamp can't be repeated in 20 minutes", 400)
    if isinstance(exc, AuthenticationFailed | PermissionDenied):
        return ehsm_result(None, "sign error", 400)
    if isinstance(exc, KeyNotFound):
        return ehsm_result(None, "keyid error", 400)
    if isinstance(exc, KeyDisabled):
        return ehsm_result(None, "keyid is disabled", 400)
    if isinstance(exc, InvalidCiphertext):
        return ehsm_result(None, _DECRYPT_FAILED, 400)
    if isinstance(exc, RequestRejected):
        return ehsm_result(None, f"Parameter invalid, {exc}", 400)
    if isinstance(exc, ServiceUnavailable):
        return ehsm_result(None, _SERVER_ERROR, 500, http_status=503)
    return ehsm_result(None, _SERVER_ERROR, 500)


# -- payload checks (eHSM's payload_checker rules) ---------------------------------------------


def _keyid(payload: dict[str, Any]) -> str:
    value = payload.get("keyid")
    if value in (None, ""):
        raise EhsmError(400, "Missing required parameters, The keyid cannot be empty.")
    if not isinstance(value, str):
        raise EhsmError(400, "Parameter invalid, The keyid must be of string type.")
    if not _UUID.fullmatch(value):
        raise EhsmError(400, "Parameter invalid, The keyid format wrong.")
    return value


def _b64_field(payload: dict[str, Any], name: str, *, required: bool) -> bytes:
    value = payload.get(name)
    if value in (None, ""):
        if required:
            raise EhsmError(400, f"Missing required parameters, The {name} cannot be empty.")
        return b""
    if not isinstance(value, str):
        raise EhsmError(400, f"Parameter invalid, The {name} must be of string type.")
    if len(value) > MAX_B64:
        raise EhsmError(400, f"Parameter invalid, The {name} length error.")
    if len(value) % 4 or not _B64.fullmatch(value):
        raise EhsmError(400, f"Parameter invalid, The {name} not a vailed base64 string.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EhsmError(400, f"Parameter invalid, The {name} not a vailed base64 string.") from None


def _keylen(payload: dict[str, Any]) -> int:
    value = payload.get("keylen")
    if value is None:
        raise EhsmError(400, "Missing required parameters, The keylen cannot be empty.")
    if isinstance(value, bool) or not isinstance(value, int):
        raise EhsmError(400, "Parameter invalid, The keylen must be of integer type.")
    if value > 1024:
        raise EhsmError(400, "Parameter invalid, The keylen value must be less than or equal to 1024.")
    if value < 1:
        raise EhsmError(400, "Parameter invalid, The keylen value must be greater than or equal to 1.")
    return value


def _const(payload: dict[str, Any], name: str, allowed: tuple[str, ...], *, required: bool = True,
           default: str | None = None) -> str:
    value = payload.get(name)
    if value in (None, ""):
        if required:
            raise EhsmError(400, f"Missing required parameters, The {name} cannot be empty.")
        assert default is not None
        return default
    if not isinstance(value, str) or value not in allowed:
        raise EhsmError(400, f"Parameter invalid, The {name} type is incorrect.")
    return value


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


#: Nesting deeper than this in a request body is refused before it is parsed (no eHSM payload
#: nests at all; the limit keeps parsing and ``params_sort_str`` bounded).
MAX_JSON_DEPTH: Final = 16
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def json_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when ``raw`` (JSON or not) opens more than ``limit`` nested arrays/objects."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b'""', raw)):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > limit:
            return True
    return False


def parse_action(query_string: bytes) -> str:
    """The request's one ``Action`` (decoded once; dispatch, access log and metrics all use it).

    Raises:
        EhsmError: ``Action`` given more than once.
    """
    values = [value for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
              if name == "Action"]
    if len(values) > 1:
        raise EhsmError(400, "Parameter invalid, Action given more than once")
    return values[0] if values else ""


# -- actions -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class EhsmAction:
    """An eHSM action: its handler and the payload fields it takes (any other field is refused,
    so a body signed for one action cannot be read as another)."""

    run: Callable[[RequestContext, dict[str, Any]], tuple[dict[str, Any], str]]
    fields: frozenset[str]
    payload_required: bool = True

    def check_payload(self, action: str, payload: Any) -> dict[str, Any]:
        return _check_payload(action, payload, self.fields, required=self.payload_required)


def _check_payload(action: str, payload: Any, fields: frozenset[str], *, required: bool = True) -> dict[str, Any]:
    """``payload`` (``{}`` when absent and not required), refused if it holds a field that is not
    one of ``action``'s."""
    if payload is None:
        if required:
            raise EhsmError(400, "Missing required parameters")
        return {}
    assert isinstance(payload, dict)  # checked when the request was authenticated
    foreign = set(payload) - fields
    if foreign:
        raise EhsmError(400, f"Parameter invalid, {action} takes no field(s) {', '.join(sorted(foreign))}.")
    return payload


# Data-key actions build a request for the server's group commit and render its result.
DataKeyAction = Callable[[RequestContext, dict[str, Any]], DataKeyRequest]


def _generate_data_key(ctx: RequestContext, payload: dict[str, Any], *, with_plaintext: bool = True) -> DataKeyRequest:
    keyid, keylen, aad = _keyid(payload), _keylen(payload), _b64_field(payload, "aad", required=False)
    return DataKeyRequest.generate(ctx, keyid, length=keylen, aad=aad, with_plaintext=with_plaintext)


def _generate_data_key_without_plaintext(ctx: RequestContext, payload: dict[str, Any]) -> DataKeyRequest:
    return _generate_data_key(ctx, payload, with_plaintext=False)


def _encrypt(ctx: RequestContext, payload: dict[str, Any]) -> DataKeyRequest:
    keyid = _keyid(payload)
    plaintext = _b64_field(payload, "plaintext", required=True)
    return DataKeyRequest.encrypt(ctx, keyid, plaintext, _b64_field(payload, "aad", required=False))


def _decrypt(ctx: RequestContext, payload: dict[str, Any]) -> DataKeyRequest:
    keyid = _keyid(payload)
    ciphertext = _b64_field(payload, "ciphertext", required=True)
    return DataKeyRequest.decrypt(ctx, keyid, ciphertext, _b64_field(payload, "aad", required=False))


def _data_key_result(request: DataKeyRequest, result: bytes) -> dict[str, Any]:
    if request.operation == "Decrypt":
        return {"plaintext": b64encode(result)}
    if request.operation == "GenerateDataKey":
        return {"plaintext": b64encode(request.data), "ciphertext": b64encode(result)}
    return {"ciphertext": b64encode(result)}


DATA_KEY_ACTIONS: dict[str, DataKeyAction] = {
    "GenerateDataKey": _generate_data_key,
    "GenerateDataKeyWithoutPlaintext": _generate_data_key_without_plaintext,
    "Encrypt": _encrypt,
    "Decrypt": _decrypt,
}
_DATA_KEY_FIELDS: Final = {
    "GenerateDataKey": frozenset({"keyid", "keylen", "aad"}),
    "GenerateDataKeyWithoutPlaintext": frozenset({"keyid", "keylen", "aad"}),
    "Encrypt": frozenset({"keyid", "plaintext", "aad"}),
    "Decrypt": frozenset({"keyid", "ciphertext", "aad"}),
}


def kms_actions(service: KmsService) -> dict[str, EhsmAction]:
    """The KMS's own eHSM actions (besides the data-key ones, which are group-committed)."""

    def create_key(ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        keyspec = _const(payload, "keyspec", ("EH_AES_GCM_128", "EH_AES_GCM_192", "EH_AES_GCM_256"))
        origin = _const(payload, "origin", ("EH_INTERNAL_KEY",))
        _const(payload, "keyusage", ("EH_KEYUSAGE_ENCRYPT_DECRYPT",), required=False,
               default="EH_KEYUSAGE_ENCRYPT_DECRYPT")
        key = service.create_key(ctx, keyspec=keyspec, origin=origin)
        return {"keyid": key.key_id}, "success!"

    def list_key(ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return {"list": [
            {"keyid": k.key_id, "creationDate": _ms(k.created), "expireTime": 0, "alias": k.description,
             "keyspec": k.keyspec, "keyState": 1 if k.state == ENABLED else 0}
            for k in service.list_keys(ctx)
        ]}, "successful"

    def enable_key(ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        service.set_enabled(ctx, _keyid(payload), True)
        return {}, "successful"

    def disable_key(ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        service.set_enabled(ctx, _keyid(payload), False)
        return {}, "successful"

    def delete_key(ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        try:
            service.schedule_deletion(ctx, _keyid(payload), days=0)
        except KeyNotFound:
            pass  # eHSM answers "successful" for a key that is not there
        return {}, "successful"

    def delete_all_key(ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        service.delete_all_keys(ctx)
        return {}, "successful"

    keyid = frozenset({"keyid"})
    none: frozenset[str] = frozenset()
    return {
        "CreateKey": EhsmAction(create_key, frozenset({"keyspec", "origin", "keyusage"})),
        "ListKey": EhsmAction(list_key, none, payload_required=False),
        "EnableKey": EhsmAction(enable_key, keyid),
        "DisableKey": EhsmAction(disable_key, keyid),
        "DeleteKey": EhsmAction(delete_key, keyid),
        "DeleteAllKey": EhsmAction(delete_all_key, none, payload_required=False),
        "DeleteALLKey": EhsmAction(delete_all_key, none, payload_required=False),
    }


#: Every action name this server knows (metrics label them; others share one label).
EHSM_ACTIONS: Final = frozenset({"GetVersion", "Enroll", *DATA_KEY_ACTIONS, "CreateKey", "ListKey", "EnableKey",
                                 "DisableKey", "DeleteKey", "DeleteAllKey", "DeleteALLKey", "UploadQuotePolicy",
                                 "GetQuotePolicy", "VerifyQuote", "GenerateQuote"})


def add_ehsm_routes(app: FastAPI, service: KmsService, *, auth: Authenticator, open_enrollment: bool,
                    call: Callable[..., Awaitable[Any]], data_key: Callable[[DataKeyRequest], Awaitable[bytes]],
                    actions: Mapping[str, EhsmAction],
                    releases: Callable[[Awaitable[Any]], Awaitable[Any]] | None = None,
                    ) -> Callable[[Request], Awaitable[JSONResponse]]:
    """Mount ``/ehsm`` on ``app`` with ``actions`` (the KMS's and any co-hosted service's);
    returns the POST handler (the server's fast path calls it for data-key actions).
    ``releases`` wraps each attested release (the metrics count them)."""

    async def released(work: Awaitable[Any]) -> Any:
        return await (releases(work) if releases is not None else work)

    def enroll(ctx: RequestContext | None) -> JSONResponse:
        if ctx is None and not open_enrollment:
            raise EhsmError(400, "Enroll needs the admin credential (sign the request with it), "
                                 "or a server started with --open-enrollment")
        credentials = service.enroll(ctx)
        return ehsm_result({"appid": credentials.appid, "apikey": credentials.apikey}, "successful")

    @app.get("/ehsm", tags=["eHSM"], include_in_schema=True)
    async def ehsm_get(request: Request) -> JSONResponse:
        """``GetVersion`` and ``Enroll`` (eHSM clients use GET for these two)."""
        action = request.scope["state"]["ehsm_action"]
        try:
            if action == "GetVersion":
                return ehsm_result({"version": __version__, "git_sha": "ppml"})
            if action == "Enroll":
                ctx = await auth.native(request) if signing.HEADER_APP.lower() in request.headers else None
                return enroll(ctx)
            return ehsm_result(None, "API Not Found", 404)
        except EhsmError as exc:
            return ehsm_result(None, exc.message, exc.code, exc.http_status)

    async def attested(ctx: RequestContext, action: str, payload: dict[str, Any], token: str) -> dict[str, Any]:
        job = DATA_KEY_ACTIONS[action](ctx, payload)
        if job.operation == "Decrypt":
            jwe = await released(call(service.release_to_tee, ctx, job.key_id, job.data, job.aad, token=token))
            return {"jwe": jwe}
        jwe, wrapped = await released(call(service.generate_data_key_for_tee, ctx, job.key_id,
                                           length=len(job.data), aad=job.aad, token=token))
        return {"ciphertext": b64encode(wrapped), "jwe": jwe}

    @app.post("/ehsm", tags=["eHSM"])
    async def ehsm_post(request: Request) -> JSONResponse:
        """Every eHSM action; see docs/ehsm-api.md for payloads and results."""
        action = request.scope["state"]["ehsm_action"]
        try:
            if action == "GetVersion":
                return ehsm_result({"version": __version__, "git_sha": "ppml"})
            body = _parse(await request.body())
            if action == "Enroll" and body.get("appid") in (None, "") and open_enrollment:
                return enroll(None)
            ctx = await auth.ehsm(request, body, action)
            request.state.appid = ctx.appid
            payload = body.get("payload")
            if action == "Enroll":
                _check_payload(action, payload, frozenset(), required=False)
                return await call(enroll, ctx)
            if action in DATA_KEY_ACTIONS:
                payload = _check_payload(action, payload, _DATA_KEY_FIELDS[action])
                token = request.headers.get(wire.ATTESTATION_HEADER)
                if token and action != "Encrypt":
                    return ehsm_result(await attested(ctx, action, payload, token), "success!")
                job = DATA_KEY_ACTIONS[action](ctx, payload)
                return ehsm_result(_data_key_result(job, await data_key(job)), "success!")
            handler = actions.get(action)
            if handler is None:
                return ehsm_result(None, "API Not Found", 404)
            result, message = await call(handler.run, ctx, handler.check_payload(action, payload))
            return ehsm_result(result, message)
        except EhsmError as exc:
            return ehsm_result(None, exc.message, exc.code, exc.http_status)

    return ehsm_post


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise EhsmError(400, "Invalid JSON") from None
    if not isinstance(body, dict):
        raise EhsmError(400, "Invalid JSON")
    return body
