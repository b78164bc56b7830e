"""Request authentication for both HTTP surfaces, and the one place replay stamps are spent.

Every authenticated request — native ``/v1``, ``/ehsm``, and the attestation routes co-hosted on
the same app — goes through :class:`Authenticator`: the signature and the clock window are
checked (:mod:`ppml.core.signing` has both wire formats), then the request's replay stamp (its
timestamp/nonce) is spent in the database before the route does anything. A stamp is therefore
spent exactly once whatever the route, and a request that is refused afterwards (a bad
attestation token, a disabled key, a malformed payload) has still spent it: sending the same
signed request again, to the same route or another, is a replay.

eHSM's signature does not cover the ``Action`` query parameter. Besides the stamp, two things keep
a captured body from being reinterpreted as another action: every action's payload is checked
against that action's own fields (``ppml.kms.http.ehsm``), and a nonce of the form
``<Action>.<random>`` — which ppml's eHSM client sends, and which the signature covers — binds the
request to that action.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any, Final

from starlette.requests import Request

from ppml.core import signing
from ppml.errors import AuthenticationFailed, ReplayedRequest
from ppml.kms.http.batching import GroupCommit
from ppml.kms.service import KmsService
from ppml.kms.types import RequestContext

__all__ = ["Authenticator", "EhsmError"]

_REPLAYED: Final = "this request was already used (replayed timestamp)"


class EhsmError(Exception):
    """A refusal with eHSM's body code and message."""

    def __init__(self, code: int, message: str, *, http_status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


class Authenticator:
    """Verifies signed requests and spends their replay stamps (group-committed, like data keys)."""

    def __init__(self, service: KmsService, *, now: Callable[[], float] = time.time, inline: bool = False,
                 ehsm_actions: Collection[str] = ()) -> None:
        self._service = service
        self._now = now
        self._stamps: GroupCommit[RequestContext, bool] = GroupCommit(service.spend_replay_stamps, inline=inline)
        self._ehsm_actions = frozenset(ehsm_actions)

    async def native(self, request: Request) -> RequestContext:
        """Authenticate a native request (``X-PPML-*`` headers) and spend its stamp.

        Raises:
            AuthenticationFailed: missing or malformed headers, unknown app, bad signature.
            ReplayedRequest: a stale timestamp, or a stamp spent before.
        """
        headers = request.headers
        appid = headers.get(signing.HEADER_APP, "")
        timestamp = headers.get(signing.HEADER_TIMESTAMP, "")
        nonce = headers.get(signing.HEADER_NONCE, "")
        given = headers.get(signing.HEADER_SIGNATURE, "")
        request.state.appid = appid[:64] or None
        if not (appid and timestamp and nonce and given):
            raise AuthenticationFailed("missing X-PPML-App/-Timestamp/-Nonce/-Signature headers")
        if len(appid) > 64 or len(nonce) != 32 or not timestamp.isdigit() or len(timestamp) != 13:
            raise AuthenticationFailed("malformed authentication headers")
        apikey = self._service.apikey(appid)
        body = await request.body()
        # The path as it was on the wire (percent-encoded), which is what the client signed.
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        expected = "" if apikey is None else signing.native_signature(
            apikey, method=request.method, path=raw_path.decode("latin-1"),
            query=request.scope.get("query_string", b"").decode("latin-1"),
            timestamp=timestamp, nonce=nonce, body=body,
        )
        operation = f"{request.method} {request.url.path}"
        ctx = RequestContext(appid=appid, request_id=request.state.request_id)
        if apikey is None or not signing.verify_signature(expected, given):
            self._service.record_rejected_request(ctx, operation, "AuthenticationFailed")
            raise AuthenticationFailed("unknown app or bad signature")
        stamp = int(timestamp)
        if abs(int(self._now() * 1000) - stamp) > signing.REPLAY_WINDOW_MS:
            self._service.record_rejected_request(ctx, operation, "StaleTimestamp")
            raise ReplayedRequest("timestamp outside the ±10 minute window (check the clock)")
        return await self._spend(RequestContext(
            appid=appid, request_id=request.state.request_id, replay_stamp=f"n:{nonce}",
            replay_expires=(stamp + signing.REPLAY_WINDOW_MS) // 1000 + 1,
        ), operation)

    async def ehsm(self, request: Request, body: dict[str, Any], action: str) -> RequestContext:
        """Authenticate an eHSM request body (``appid``, ``timestamp``, ``sign``, ``nonce``) for
        ``action`` and spend its stamp.

        Raises:
            EhsmError: eHSM's refusals, with its messages.
            ReplayedRequest: a stamp spent before.
        """
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
        operation = f"ehsm:{action[:40]}"
        request_id = getattr(request.state, "request_id", "")
        ctx = RequestContext(appid=appid[:64], request_id=request_id)
        apikey = self._service.apikey(appid) if len(appid) <= 64 else None
        expected = "" if apikey is None else signing.ehsm_sign(apikey, appid=appid, payload=payload,
                                                               timestamp=timestamp, nonce=nonce or None)
        if apikey is None or not signing.verify_signature(expected, given):
            self._service.record_rejected_request(ctx, operation, "AuthenticationFailed")
            raise EhsmError(400, "sign error")
        bound = nonce.split(".", 1)[0] if nonce and "." in nonce else None
        if bound is not None and bound in self._ehsm_actions and bound != action:
            self._service.record_rejected_request(ctx, operation, "ForeignAction")
            raise EhsmError(400, f"this request was signed for Action={bound}")
        if abs(int(self._now() * 1000) - int(timestamp)) >= signing.REPLAY_WINDOW_MS:
            self._service.record_rejected_request(ctx, operation, "StaleTimestamp")
            raise EhsmError(400, "Timestamp error")
        stamp = f"t:{timestamp}" + (f":{nonce}" if nonce else "")
        return await self._spend(RequestContext(
            appid=appid, request_id=request_id, replay_stamp=stamp,
            replay_expires=(int(timestamp) + 2 * signing.REPLAY_WINDOW_MS) // 1000 + 1,
        ), operation)

    async def _spend(self, ctx: RequestContext, operation: str) -> RequestContext:
        """Spend the request's stamp: the one place every authenticated request passes."""
        if not await self._stamps.run(ctx):
            self._service.record_rejected_request(ctx, operation, "ReplayedRequest")
            raise ReplayedRequest(_REPLAYED)
        return ctx
