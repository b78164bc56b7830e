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


SCHEMES: Mapping[str, Callable[[str], KeyManagementService]] = {
    "local": _local,
}


def open_kms(uri: str) -> KeyManagementService:
    """``local:`` (default store), ``local:/path/to/dir``; network schemes come with the KMS."""
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    factory = SCHEMES.get(scheme)
    if factory is None:
        raise UnknownScheme(uri, list(SCHEMES))
    return factory(uri)
