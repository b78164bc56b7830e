"""Resolve a KMS URI to an implementation. Called where the program is wired (CLI, config).

A plain mapping from URI scheme to factory; library code takes a ``KeyManagementService`` by
argument and never consults this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ppml.errors import UnknownScheme
from ppml.kms.local import LocalKeyStore, default_local_store_path
from ppml.kms.protocol import KeyManagementService

__all__ = ["SCHEMES", "open_kms"]


def _local(uri: str) -> KeyManagementService:
    path = uri.removeprefix("local:").removeprefix("//")
    return LocalKeyStore(Path(path) if path else default_local_store_path())


def _native(uri: str) -> KeyManagementService:
    from ppml.kms.remote import RemoteKms

    return RemoteKms.from_uri(uri)


def _ehsm(uri: str) -> KeyManagementService:
    from ppml.kms.ehsm_client import EhsmKms

    return EhsmKms.from_uri(uri)


SCHEMES: Mapping[str, Callable[[str], KeyManagementService]] = {
    "local": _local,
    "https": _native,
    "ppml+https": _native,
    "ehsm+https": _ehsm,
}


def open_kms(uri: str) -> KeyManagementService:
    """Resolve a KMS URI.

    ``local:`` (default store) or ``local:DIR``; ``ppml+https://HOST:PORT`` (or ``https://``) for
    ``ppml serve``'s native API; ``ehsm+https://HOST:PORT`` for eHSM-KMS or ``ppml serve``'s eHSM
    surface. Remote URIs take ``?credentials=FILE&ca=FILE`` (or $PPML_KMS_CREDENTIALS,
    $PPML_KMS_CA).
    """
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    factory = SCHEMES.get(scheme)
    if factory is None:
        raise UnknownScheme(uri, list(SCHEMES))
    return factory(uri)
