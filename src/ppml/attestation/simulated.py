"""Verifier for the SIMULATED TEE's evidence (see :mod:`ppml.core.simulated`).

It trusts only the simulated platform keys it is given; claims are labelled ``simulated`` and every
verification warns, since such evidence proves nothing about hardware.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ec

from ppml.core.evidence import TEE_SIMULATED, Claims, Evidence
from ppml.core.simulated import verify_report
from ppml.errors import AttestationFailed

__all__ = ["SimulatedVerifier"]

log = logging.getLogger("ppml.attestation")


class SimulatedVerifier:
    """Verifies simulated-TEE evidence signed by one of ``trusted_platform_keys``."""

    def __init__(self, trusted_platform_keys: Sequence[ec.EllipticCurvePublicKey]) -> None:
        self.trusted_platform_keys = list(trusted_platform_keys)

    def verify(self, evidence: Evidence, *, now: datetime) -> Claims:
        if evidence.tee != TEE_SIMULATED:
            raise AttestationFailed(f"{evidence.tee} evidence given to the simulated-TEE verifier")
        claims = verify_report(evidence.data, self.trusted_platform_keys).claims()
        log.warning("verified SIMULATED TEE evidence (mr_enclave %s): no hardware protection", claims.mr_enclave)
        return claims
