"""Formats and crypto recipes: no network, no frameworks. Depends on nothing else in ppml
except :mod:`ppml.errors`."""

from ppml.core.envelope import (
    EnvelopeHeader,
    EnvelopeReader,
    EnvelopeWriter,
    decrypt_bytes,
    decrypt_file,
    encrypt_bytes,
    encrypt_file,
)
from ppml.core.keys import SECRET_ACCESS, DataKey, DataKeyProvider, GeneratedDataKey, KeyInfo

__all__ = [
    "SECRET_ACCESS",
    "DataKey",
    "DataKeyProvider",
    "EnvelopeHeader",
    "EnvelopeReader",
    "EnvelopeWriter",
    "GeneratedDataKey",
    "KeyInfo",
    "decrypt_bytes",
    "decrypt_file",
    "encrypt_bytes",
    "encrypt_file",
]
