"""The attestation service over HTTP, mounted on the same app as the KMS by ``ppml serve``.

Native API::

    GET  /v1/attestation/nonce            → {"nonce", "expires"}            (no credentials)
    POST /v1/attestation/attest           {"evidence": {"tee", "data"(b64)}, "nonce",
                                           "runtime_data", "policy_ids"} → {"token", "claims", …}
    POST /v1/attestation/policies         Policy fields → {"policy_id"}     (app credentials)
    GET  /v1/attestation/policies/{id}    → the policy                      (owner only)
    POST /v1/attestation/verify           {"evidence", "policy_id"?} → claims and policy result
    GET  /.well-known/jwks.json           the token-signing public keys

eHSM actions (added to ``/ehsm``): UploadQuotePolicy, GetQuotePolicy, VerifyQuote (``result`` is
a boolean, as BigDL's client reads it, plus ``sgx_ql_qv_result`` with the DCAP code, and a
``sign`` over the result as eHSM computes it), GenerateQuote (the service attests itself).

Metrics (on the registry the host app passes): ``ppml_attestation_verifications_total{operation,
result}`` counts evidence verifications by ``attest``, ``verify`` and ``VerifyQuote`` with result
``ok`` or ``failed``, and ``ppml_attestation_failures_total{reason}`` says why, in the closed set of
:mod:`ppml.attestation.failures`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field

from ppml.attestation.failures import failure_reason, mismatch_reason
from ppml.attestation.service import AttestationService
from ppml.core.evidence import Claims, Evidence, report_data_for
from ppml.core.policy import Measurements, parse_policy
from ppml.core.signing import ehsm_sign_object
from ppml.errors import AttestationFailed, PolicyNotFound, RequestRejected

__all__ = ["QV_RESULT", "EhsmHandler", "add_attestation_routes", "qv_result_code"]

#: An eHSM action's handler: (request context, payload) -> (result, message).
EhsmHandler = Callable[[Any, dict[str, Any]], tuple[dict[str, Any], str]]

#: sgx_ql_qv_result_t values (Intel DCAP sgx_qve_header.h) for the TCB statuses we report.
QV_RESULT: Final = {
    "UpToDate": 0x0000,
    "ConfigurationNeeded": 0xA001,
    "OutOfDate": 0xA002,
    "OutOfDateConfigurationNeeded": 0xA003,
    "InvalidSignature": 0xA004,
    "Revoked": 0xA005,
    "Unspecified": 0xA006,
    "SWHardeningNeeded": 0xA007,
    "ConfigurationAndSWHardeningNeeded": 0xA008,
}


def qv_result_code(claims: Claims | None, failure: AttestationFailed | None = None) -> int:
    if failure is not None:
        return QV_RESULT["Revoked"] if "revoked" in failure.reason.lower() else QV_RESULT["InvalidSignature"]
    assert claims is not None
    if claims.simulated:
        return QV_RESULT["Unspecified"]
    return QV_RESULT.get(claims.tcb_status, QV_RESULT["Unspecified"])


class EvidenceModel(BaseModel):
    tee: str = Field(description="sgx, tdx or simulated")
    data: str = Field(description="base64 of the quote or simulated report")


class AttestRequest(BaseModel):
    evidence: EvidenceModel
    nonce: str
    runtime_data: dict[str, Any] = Field(default_factory=dict)
    policy_ids: list[str]


class VerifyRequest(BaseModel):
    evidence: EvidenceModel
    policy_id: str | None = None


def _evidence(model: EvidenceModel) -> Evidence:
    try:
        data = base64.b64decode(model.data, validate=True)
        return Evidence(tee=model.tee, data=data)
    except (binascii.Error, ValueError) as exc:
        raise RequestRejected(f"evidence: {exc}") from None


def add_attestation_routes(
    app: FastAPI,
    service: AttestationService,
    *,
    authenticated: Callable[[Request], Awaitable[Any]],
    call: Callable[..., Awaitable[Any]],
    apikey_of: Callable[[str], bytes | None],
    add_ehsm_action: Callable[[str, EhsmHandler, frozenset[str]], None],
    self_evidence: Callable[[bytes], Evidence] | None = None,
    registry: CollectorRegistry | None = None,
) -> None:
    """Mount the attestation API. ``authenticated`` is the KMS's request authenticator (returns a
    context with ``appid``); ``apikey_of`` gives an app's apikey (to sign VerifyQuote results as
    eHSM does); ``add_ehsm_action(name, handler, payload_fields)`` registers an eHSM action;
    ``self_evidence`` produces the service's own evidence for GenerateQuote; the metrics go on
    ``registry`` (a private one when None)."""
    registry = registry if registry is not None else CollectorRegistry()
    verifications = Counter("ppml_attestation_verifications_total",
                            "Evidence verifications by operation (attest, verify, VerifyQuote): ok or failed",
                            ["operation", "result"], registry=registry)
    failures = Counter("ppml_attestation_failures_total", "Failed attestations by reason (a closed set)",
                       ["reason"], registry=registry)

    def verified(operation: str) -> None:
        verifications.labels(operation, "ok").inc()

    def failed(operation: str, reason: str) -> None:
        verifications.labels(operation, "failed").inc()
        failures.labels(reason).inc()

    def counted(operation: str, work: Callable[[], Any]) -> Any:
        try:
            return work()
        except AttestationFailed as exc:
            failed(operation, failure_reason(exc))
            raise

    @app.exception_handler(AttestationFailed)
    async def attestation_failed(request: Request, exc: AttestationFailed) -> JSONResponse:
        if request.url.path == "/ehsm":
            message = "Invalid  policyId." if isinstance(exc, PolicyNotFound) else exc.reason
            return JSONResponse({"code": 400, "message": message, "result": {}})
        status = 404 if isinstance(exc, PolicyNotFound) else 403
        return JSONResponse({"error": type(exc).__name__, "message": str(exc), "reason": exc.reason},
                            status_code=status)

    @app.get("/.well-known/jwks.json", tags=["attestation"])
    async def jwks() -> JSONResponse:
        return JSONResponse(service.signer.jwks())

    @app.get("/v1/attestation/nonce", tags=["attestation"])
    async def nonce() -> JSONResponse:
        """A single-use nonce to bind into the evidence's report data (expires in 5 minutes)."""
        value, expires = await call(service.new_nonce)
        return JSONResponse({"nonce": value, "expires": expires})

    @app.post("/v1/attestation/attest", tags=["attestation"])
    async def attest(body: AttestRequest) -> JSONResponse:
        """Verify evidence bound to the nonce and runtime data; returns a short-lived token."""
        evidence = _evidence(body.evidence)
        result = await call(counted, "attest", lambda: service.attest(
            evidence, nonce=body.nonce, runtime_data=body.runtime_data, policy_ids=body.policy_ids))
        verified("attest")
        return JSONResponse({"token": result.token, "claims": result.claims.to_dict(),
                             "policy_ids": list(result.policy_ids)})

    @app.post("/v1/attestation/policies", tags=["attestation"], status_code=201)
    async def register(body: dict[str, Any] = Body(..., description="a claims policy (ppml.core.policy)"),
                       ctx: Any = Depends(authenticated)) -> JSONResponse:
        """Register a claims policy: measurements with safe defaults, or ``all_of``/``any_of``."""
        policy = parse_policy(body)
        policy_id = await call(service.register_policy, ctx.appid, policy)
        return JSONResponse({"policy_id": policy_id, "policy": policy.to_dict()}, status_code=201)

    @app.get("/v1/attestation/policies/{policy_id}", tags=["attestation"])
    async def get_policy(policy_id: str, ctx: Any = Depends(authenticated)) -> JSONResponse:
        policy = await call(service.get_policy, policy_id, owner=ctx.appid)
        return JSONResponse({"policy_id": policy_id, "policy": policy.to_dict()})

    @app.post("/v1/attestation/verify", tags=["attestation"])
    async def verify(body: VerifyRequest = Body(...), ctx: Any = Depends(authenticated)) -> JSONResponse:
        """Verify evidence (no nonce binding) and, with ``policy_id``, evaluate that policy."""
        evidence = _evidence(body.evidence)
        claims = await call(counted, "verify", lambda: service.verify_evidence(evidence))
        result: dict[str, Any] = {"claims": claims.to_dict()}
        policy_id = body.policy_id
        if policy_id:
            policy = await call(counted, "verify", lambda: service.get_policy(policy_id, owner=ctx.appid))
            reasons = policy.mismatches(claims)
            result.update({"policy_id": policy_id, "match": not reasons, "mismatches": reasons})
            if reasons:
                failed("verify", mismatch_reason(reasons))
                return JSONResponse(result)
        verified("verify")
        return JSONResponse(result)

    # -- eHSM actions --------------------------------------------------------------------------

    def upload_quote_policy(ctx: Any, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        mr_enclave, mr_signer = payload.get("mr_enclave"), payload.get("mr_signer")
        if not isinstance(mr_enclave, str) or not isinstance(mr_signer, str):
            raise RequestRejected("The mr_enclave and mr_signer must be of string type.")
        policy_id = service.register_policy(ctx.appid, Measurements(mr_enclave=mr_enclave, mr_signer=mr_signer))
        return {"policyId": policy_id}, "Upload quote policy success."

    def get_quote_policy(ctx: Any, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        policy_id = str(payload.get("policyId", ""))
        policy = service.get_policy(policy_id, owner=ctx.appid)
        leaf = policy if isinstance(policy, Measurements) else None  # eHSM knows only these two fields
        return ({"policyId": policy_id, "mr_enclave": (leaf and leaf.mr_enclave) or "",
                 "mr_signer": (leaf and leaf.mr_signer) or ""},
                "Query quote policy success.")

    def verify_quote(ctx: Any, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        quote, nonce = payload.get("quote"), payload.get("nonce")
        if not isinstance(quote, str) or not isinstance(nonce, str) or not quote or not nonce:
            raise RequestRejected("The quote and nonce cannot be empty.")
        try:
            data = base64.b64decode(quote, validate=True)
        except (binascii.Error, ValueError):
            raise RequestRejected("The quote not a vailed base64 string.") from None
        tee = "tdx" if len(data) > 4 and data[4:8] == b"\x81\x00\x00\x00" else "sgx"
        if data.startswith(b"PPMLSIM1"):
            tee = "simulated"
        result: dict[str, Any] = {"nonce": nonce}
        try:
            claims = service.verify_evidence(Evidence(tee=tee, data=data))
            ok = claims.tcb_status == "UpToDate" and not claims.simulated and not claims.debug
            policy_id = payload.get("policyId")
            if policy_id:
                policy = service.get_policy(str(policy_id), owner=ctx.appid)
                reasons = policy.mismatches(claims)
                ok = not reasons
                result.update({"mr_enclave": claims.mr_enclave or "", "mr_signer": claims.mr_signer or ""})
                if reasons:
                    failed("VerifyQuote", mismatch_reason(reasons))
            elif not ok:
                failed("VerifyQuote", "simulated_refused" if claims.simulated else "policy_mismatch")
            if ok:
                verified("VerifyQuote")
            code = qv_result_code(claims)
        except PolicyNotFound as exc:
            failed("VerifyQuote", failure_reason(exc))
            raise
        except AttestationFailed as exc:
            failed("VerifyQuote", failure_reason(exc))
            ok, code = False, qv_result_code(None, exc)
        result.update({"result": ok, "sgx_ql_qv_result": code})
        apikey = apikey_of(ctx.appid) or b""
        result["sign"] = ehsm_sign_object(apikey, {k: v for k, v in result.items() if k != "sgx_ql_qv_result"})
        return result, "success!"

    def generate_quote(ctx: Any, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        challenge = payload.get("challenge")
        if not isinstance(challenge, str) or not challenge:
            raise RequestRejected("The challenge cannot be empty.")
        if self_evidence is None:
            raise AttestationFailed("this service does not run in a TEE and cannot attest itself")
        evidence = self_evidence(report_data_for(challenge.encode(), {}))
        quote = base64.b64encode(evidence.data).decode()
        return {"challenge": challenge, "quote": quote, "tee": evidence.tee}, "success!"

    add_ehsm_action("UploadQuotePolicy", upload_quote_policy, frozenset({"mr_enclave", "mr_signer"}))
    add_ehsm_action("GetQuotePolicy", get_quote_policy, frozenset({"policyId"}))
    add_ehsm_action("VerifyQuote", verify_quote, frozenset({"quote", "nonce", "policyId"}))
    add_ehsm_action("GenerateQuote", generate_quote, frozenset({"challenge"}))
