"""What the KMS's clients and its server agree on beyond request signing: header and message
constants, and base64 as both surfaces carry bytes (standard alphabet, padded, validated)."""

from __future__ import annotations

import base64
import binascii
from typing import Final

from ppml.errors import KmsRequestRejected

__all__ = ["ATTESTATION_HEADER", "EHSM_TOKEN_REJECTED", "b64decode", "b64encode"]

#: The header that carries an attestation token on data-key requests (native and eHSM surfaces).
ATTESTATION_HEADER: Final = "X-PPML-Attestation"
#: The eHSM reply message prefix for a refused attestation token (a ppml extension; clients map it
#: to ``TokenRejected``).
EHSM_TOKEN_REJECTED: Final = "Attestation token rejected: "


def b64encode(value: bytes) -> str:
    return base64.b64encode(value).decode()


def b64decode(value: str, what: str) -> bytes:
    """Strict base64 (a request field, or a value in a reply).

    Raises:
        KmsRequestRejected: ``what`` is not valid base64.
    """
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise KmsRequestRejected(f"{what} is not valid base64") from None
