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
* Ciphertexts are ppml's wrap format (opaque to clients, as eHSM's are).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ppml import __version__
from ppml.errors import (
    AttestationFailed,
    AuthenticationFailed,
    InvalidCiphertext,
    KeyDisabled,
    KeyNotFound,
    KmsRequestRejected,
    KmsUnavailable,
    PermissionDenied,
    PpmlError,
    ReplayedRequest,
)
from ppml.core import signing
from ppml.kms.service import ENABLED, DataKeyRequest, KmsService, RequestContext

__all__ = ["DATA_KEY_ACTIONS", "EHSM_ACTIONS", "add_ehsm_routes", "ehsm_error_response", "ehsm_result"]

_UUID = re.compile(r"^[a-z\d]{8}-[a-z\d]{4}-[a-z\d]{4}-[a-z\d]{4}-[a-z\d]{12}$")
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
MAX_B64: Final = 8192
_DECRYPT_FAILED = "Decryption failed, Please confirm that your parameters are correct."
_SERVER_ERROR = "Server internal error, please contact the administrator."


class EhsmError(Exception):
    """A refusal with eHSM's body code and message."""

    def __init__(self, code: int, message: str, *, http_status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


def ehsm_result(result: dict[str, Any] | None = None, message: str = "success!", code: int = 200,
                http_status: int = 200) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "result": result or {}}, status_code=http_status)


def ehsm_error_response(exc: PpmlError) -> JSONResponse:
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
    if isinstance(exc, KmsRequestRejected):
        return ehsm_result(None, f"Parameter invalid, {exc}", 400)
    if isinstance(exc, KmsUnavailable):
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


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


# -- actions -----------------------------------------------------------------------------------

Action = Callable[[KmsService, RequestContext, dict[str, Any]], tuple[dict[str, Any], str]]


def _create_key(service: KmsService, ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    keyspec = _const(payload, "keyspec", ("EH_AES_GCM_128", "EH_AES_GCM_192", "EH_AES_GCM_256"))
    origin = _const(payload, "origin", ("EH_INTERNAL_KEY",))
    _const(payload, "keyusage", ("EH_KEYUSAGE_ENCRYPT_DECRYPT",), required=False,
           default="EH_KEYUSAGE_ENCRYPT_DECRYPT")
    key = service.create_key(ctx, keyspec=keyspec, origin=origin)
    return {"keyid": key.key_id}, "success!"


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
        return {"plaintext": _b64(result)}
    if request.operation == "GenerateDataKey":
        return {"plaintext": _b64(request.data), "ciphertext": _b64(result)}
    return {"ciphertext": _b64(result)}


DATA_KEY_ACTIONS: dict[str, DataKeyAction] = {
    "GenerateDataKey": _generate_data_key,
    "GenerateDataKeyWithoutPlaintext": _generate_data_key_without_plaintext,
    "Encrypt": _encrypt,
    "Decrypt": _decrypt,
}


def _list_key(service: KmsService, ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    keys = service.list_keys(ctx)
    return {"list": [
        {"keyid": k.key_id, "creationDate": _ms(k.created), "expireTime": 0, "alias": k.description,
         "keyspec": k.keyspec, "keyState": 1 if k.state == ENABLED else 0}
        for k in keys
    ]}, "successful"


def _enable_key(service: KmsService, ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    service.set_enabled(ctx, _keyid(payload), True)
    return {}, "successful"


def _disable_key(service: KmsService, ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    service.set_enabled(ctx, _keyid(payload), False)
    return {}, "successful"


def _delete_key(service: KmsService, ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    try:
        service.schedule_deletion(ctx, _keyid(payload), days=0)
    except KeyNotFound:
        pass  # eHSM answers "successful" for a key that is not there
    return {}, "successful"


def _delete_all_key(service: KmsService, ctx: RequestContext, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    for key in service.list_keys(ctx):
        service.schedule_deletion(ctx, key.key_id, days=0)
    return {}, "successful"


EHSM_ACTIONS: dict[str, Action] = {
    "CreateKey": _create_key,
    "ListKey": _list_key,
    "EnableKey": _enable_key,
    "DisableKey": _disable_key,
    "DeleteKey": _delete_key,
    "DeleteAllKey": _delete_all_key,
    "DeleteALLKey": _delete_all_key,
}
#: Actions whose payload may be left out.
_PAYLOAD_OPTIONAL = {"ListKey", "DeleteAllKey", "DeleteALLKey", "Enroll"}


def add_ehsm_routes(app: FastAPI, service: KmsService, *, open_enrollment: bool,
                    now: Callable[[], float] = time.time) -> None:
    """Mount ``/ehsm`` on ``app``. Other modules may add actions to ``app.state.ehsm_actions``."""
    app.state.ehsm_actions = dict(EHSM_ACTIONS)

    def enroll(ctx: RequestContext | None) -> JSONResponse:
        if ctx is None and not open_enrollment:
            raise EhsmError(400, "Enroll needs the admin credential (sign the request with it), "
                                 "or a server started with --open-enrollment")
        credentials = service.enroll(ctx)
        return ehsm_result({"appid": credentials.appid, "apikey": credentials.apikey}, "successful")

    @app.get("/ehsm", tags=["eHSM"], include_in_schema=True)
    async def ehsm_get(request: Request) -> JSONResponse:
        """``GetVersion`` and ``Enroll`` (eHSM clients use GET for these two)."""
        action = request.query_params.get("Action", "")
        try:
            if action == "GetVersion":
                return ehsm_result({"version": __version__, "git_sha": "ppml"})
            if action == "Enroll":
                ctx = None
                if signing.HEADER_APP.lower() in request.headers:
                    from ppml.kms.server import _authenticate_native

                    ctx = await _authenticate_native(request, service, now)
                return enroll(ctx)
            return ehsm_result(None, "API Not Found", 404)
        except EhsmError as exc:
            return ehsm_result(None, exc.message, exc.code, exc.http_status)

    @app.post("/ehsm", tags=["eHSM"])
    async def ehsm_post(request: Request) -> JSONResponse:
        """Every eHSM action; see docs/ehsm-api.md for payloads and results."""
        action = request.query_params.get("Action", "")
        try:
            if action == "GetVersion":
                return ehsm_result({"version": __version__, "git_sha": "ppml"})
            body = _parse(await request.body())
            if action == "Enroll" and body.get("appid") in (None, "") and open_enrollment:
                return enroll(None)
            ctx = _authenticate(service, body, action, now, request)
            request.state.appid = ctx.appid
            if action == "Enroll":
                return await app.state.call(enroll, ctx)
            payload = body.get("payload")
            data_key_action = DATA_KEY_ACTIONS.get(action)
            if data_key_action is not None:
                if payload is None:
                    raise EhsmError(400, "Missing required parameters")
                job = data_key_action(ctx, payload)
                return ehsm_result(_data_key_result(job, await app.state.data_key(job)), "success!")
            handler = app.state.ehsm_actions.get(action)
            if handler is None:
                return ehsm_result(None, "API Not Found", 404)
            if payload is None:
                if action not in _PAYLOAD_OPTIONAL:
                    raise EhsmError(400, "Missing required parameters")
                payload = {}
            result, message = await app.state.call(handler, service, ctx, payload)
            return ehsm_result(result, message)
        except EhsmError as exc:
            return ehsm_result(None, exc.message, exc.code, exc.http_status)

    app.state.ehsm_post = ehsm_post


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise EhsmError(400, "Invalid JSON") from None
    if not isinstance(body, dict):
        raise EhsmError(400, "Invalid JSON")
    return body


def _authenticate(service: KmsService, body: dict[str, Any], action: str, now: Callable[[], float],
                  request: Request) -> RequestContext:
    appid, timestamp, given = body.get("appid"), body.get("timestamp"), body.get("sign")
    nonce, payload = body.get("nonce"), body.get("payload")
    if appid in (None, "") or timestamp in (None, "") or given in (None, ""):
        raise EhsmError(400, "Missing required parameters")
    if not isinstance(appid, str) or not isinstance(timestamp, str) or not isinstance(given, str) \
            or (payload is not None and not isinstance(payload, dict)) \
            or (nonce is not None and not isinstance(nonce, str)):
        raise EhsmError(400, "param type error")
    if nonce is not None and len(nonce) > 64:
        raise EhsmError(400, "Nonce length error")
    if len(timestamp) != 13 or not timestamp.isdigit():
        raise EhsmError(400, "Timestamp length error")
    request_id = getattr(request.state, "request_id", "")
    ctx = RequestContext(appid=appid[:64], request_id=request_id)
    apikey = service.apikey(appid) if len(appid) <= 64 else None
    expected = "" if apikey is None else signing.ehsm_sign(apikey, appid=appid, payload=payload,
                                                           timestamp=timestamp, nonce=nonce or None)
    if apikey is None or not signing.verify_signature(expected, given):
        service.record_rejected_request(ctx, f"ehsm:{action[:40]}", "AuthenticationFailed")
        raise EhsmError(400, "sign error")
    if abs(int(now() * 1000) - int(timestamp)) >= signing.REPLAY_WINDOW_MS:
        service.record_rejected_request(ctx, f"ehsm:{action[:40]}", "StaleTimestamp")
        raise EhsmError(400, "Timestamp error")
    stamp = f"t:{timestamp}" + (f":{nonce}" if nonce else "")
    return RequestContext(appid=appid, request_id=request_id, replay_stamp=stamp,
                          replay_expires=(int(timestamp) + 2 * signing.REPLAY_WINDOW_MS) // 1000 + 1)
