"""Why an attestation failed, as one word from a closed set: the label of the failure metrics.

Verifiers say why they refuse in a human sentence (``AttestationFailed.reason``: which check, with
values such as an FMSPC or a policy id). A metric needs the opposite, a small fixed set of values
that no input can extend, so :func:`failure_reason` maps each failure to one of
:data:`FAILURE_REASONS` by its error type first and then by the wording of the check that raised
it (the checks' sentences are ppml's own: :mod:`ppml.attestation.dcap`, :mod:`ppml.core.simulated`,
:mod:`ppml.core.policy`, :mod:`ppml.attestation.service`). Anything unrecognised is ``other``.
"""

from __future__ import annotations

from typing import Final

from ppml.errors import AttestationFailed, NonceRejected, PolicyNotFound, QuoteFormatError, TokenRejected

__all__ = ["FAILURE_REASONS", "failure_reason", "mismatch_reason"]

#: Every value :func:`failure_reason` returns.
FAILURE_REASONS: Final = (
    "malformed_evidence",      # truncated, oversized or unparsable evidence; a TEE type not verified here
    "replayed_nonce",          # a nonce unknown or already used (the service cannot tell which)
    "expired_nonce",
    "policy_not_found",
    "policy_mismatch",         # the claims do not satisfy a policy
    "simulated_refused",       # simulated evidence against a policy that does not allow_simulated
    "report_data_mismatch",    # the evidence does not bind this nonce and runtime data
    "bad_signature",           # a quote, QE report, collateral or simulated-report signature
    "untrusted_platform",      # a certificate chain not ending at the pinned root; an untrusted platform key
    "stale_collateral",        # collateral, a certificate or a CRL outside its validity now
    "collateral_unavailable",  # the PCCS cannot be reached or answers an error
    "revoked",                 # a revoked TCB level, QE or certificate
    "tcb_mismatch",            # FMSPC, PCE-ID, QE identity, TDX module or TCB level checks
    "token_rejected",          # an attestation token refused (signature, expiry, audience)
    "other",
)

# (words in the reason, label), first match wins; the order settles reasons that hold two phrases.
_WORDING: Final = (
    (("revoked",), "revoked"),
    (("allow_simulated",), "simulated_refused"),
    (("report data does not bind",), "report_data_mismatch"),
    (("collateral:", "expired"), "stale_collateral"),
    (("collateral:", "not valid before"), "stale_collateral"),
    (("is not valid at",), "stale_collateral"),
    (("pccs",), "collateral_unavailable"),
    (("signature",), "bad_signature"),
    (("not signed by",), "bad_signature"),
    (("does not bind the attestation key",), "bad_signature"),
    (("mismatch",), "tcb_mismatch"),
    (("does not trust",), "untrusted_platform"),
    (("chain",), "untrusted_platform"),
    (("certificate",), "untrusted_platform"),
    (("tcb",), "tcb_mismatch"),
    (("tdx module",), "tcb_mismatch"),
    (("qe identity",), "tcb_mismatch"),
    (("does not verify",), "malformed_evidence"),
)


def mismatch_reason(reasons: list[str] | tuple[str, ...]) -> str:
    """The label of a policy evaluation that failed with ``reasons`` (:meth:`ClaimsPolicy.mismatches`)."""
    return "simulated_refused" if any("allow_simulated" in reason for reason in reasons) else "policy_mismatch"


def failure_reason(exc: AttestationFailed) -> str:
    """One of :data:`FAILURE_REASONS` for ``exc``."""
    if isinstance(exc, QuoteFormatError):
        return "malformed_evidence"
    if isinstance(exc, NonceRejected):
        return "expired_nonce" if "expired" in exc.reason else "replayed_nonce"
    if isinstance(exc, PolicyNotFound):
        return "policy_not_found"
    if isinstance(exc, TokenRejected):
        return "token_rejected"
    text = exc.reason.lower()
    if text.startswith("policy "):
        return mismatch_reason([text])
    for words, label in _WORDING:
        if all(word in text for word in words):
            return label
    return "other"
