"""What the KMS's clients and its server agree on beyond request signing: header and message
constants, and base64 as both surfaces carry bytes (standard alphabet, padded, validated)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final, Protocol

from ppml.errors import InvalidCiphertext, KmsRequestRejected

__all__ = ["ATTESTATION_HEADER", "EHSM_TOKEN_REJECTED", "JweOpener", "b64decode", "b64encode", "data_key_of"]

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


class JweOpener(Protocol):
    """An attested session that can open keys released to its TEE (``TeeSession``)."""

    def decrypt_jwe(self, token: str) -> bytes: ...


def data_key_of(result: Mapping[str, Any], attestation: JweOpener | None, uri: str) -> bytes:
    """The data key in a reply of either surface: ``jwe`` (released to this TEE; only a session
    opens it) or ``plaintext`` (base64).

    Raises:
        InvalidCiphertext: a JWE without a session to open it, or one that does not open.
        KmsRequestRejected: the reply carries no data key.
    """
    if "jwe" in result:
        if attestation is None:
            raise InvalidCiphertext()
        return attestation.decrypt_jwe(str(result["jwe"]))
    if "plaintext" not in result:
        raise KmsRequestRejected(f"{uri}: the key service answered without the data key")
    return b64decode(result["plaintext"], "the key service's reply")
