"""Resolve a KMS URI to an implementation. Called where the program is wired (CLI, config).

A plain mapping from URI scheme to factory; library code takes a ``KeyManagementService`` by
argument and never consults this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ppml.errors import UnknownScheme, UsageError
from ppml.kms.local import LocalKeyStore, default_local_store_path
from ppml.kms.protocol import KeyManagementService

if TYPE_CHECKING:
    from ppml.kms.remote import AttestationCredential

__all__ = ["SCHEMES", "open_kms"]


def _local(uri: str, attestation: AttestationCredential | None) -> KeyManagementService:
    if attestation is not None:
        raise UsageError(f"{uri}: a local key store has no attestation gate; inside a TEE use a key "
                         "service (ppml+https:// or ehsm+https://) that releases keys to attested workloads")
    path = uri.removeprefix("local:").removeprefix("//")
    return LocalKeyStore(Path(path) if path else default_local_store_path())


def _native(uri: str, attestation: AttestationCredential | None) -> KeyManagementService:
    from ppml.kms.remote import RemoteKms

    return RemoteKms.from_uri(uri, attestation=attestation)


def _ehsm(uri: str, attestation: AttestationCredential | None) -> KeyManagementService:
    from ppml.kms.ehsm_client import EhsmKms

    return EhsmKms.from_uri(uri, attestation=attestation)


SCHEMES: Mapping[str, Callable[[str, AttestationCredential | None], KeyManagementService]] = {
    "local": _local,
    "https": _native,
    "ppml+https": _native,
    "ehsm+https": _ehsm,
}


def open_kms(uri: str, *, attestation: AttestationCredential | None = None) -> KeyManagementService:
    """Resolve a KMS URI.

    ``local:`` (default store) or ``local:DIR``; ``ppml+https://HOST:PORT`` (or ``https://``) for
    ``ppml serve``'s native API; ``ehsm+https://HOST:PORT`` for eHSM-KMS or ``ppml serve``'s eHSM
    surface. Remote URIs take ``?credentials=FILE&ca=FILE`` (or $PPML_KMS_CREDENTIALS,
    $PPML_KMS_CA). With ``attestation`` (an attested TEE's session) every remote scheme sends its
    token on data-key requests and receives data keys as JWE to the TEE's key; ``local:`` has no
    attestation gate and is refused.
    """
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    factory = SCHEMES.get(scheme)
    if factory is None:
        raise UnknownScheme(uri, list(SCHEMES))
    return factory(uri, attestation)
