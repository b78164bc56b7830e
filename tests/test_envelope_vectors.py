"""Frozen vectors: envelopes written by ppml envelope v1 decrypt to their plaintext forever.

The vectors, their key and ``manifest.json`` live in ``tests/vectors/envelope/`` (see the README
there); they were generated once by ``tests/make_envelope_vectors.py`` and are never regenerated.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ppml.core.envelope import EnvelopeHeader, EnvelopeReader, decrypt_bytes, decrypt_file
from ppml.errors import InvalidCiphertext
from ppml.kms.local import LocalKeyStore

VECTORS = Path(__file__).resolve().parent / "vectors" / "envelope"
MANIFEST: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
ENTRIES: list[dict[str, Any]] = MANIFEST["vectors"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def vector_store(tmp_path: Path) -> LocalKeyStore:
    """The vectors' key in a temporary store, with the 0600 mode git does not keep."""
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    key_file = directory / Path(MANIFEST["key_file"]).name
    shutil.copyfile(VECTORS / MANIFEST["key_file"], key_file)
    key_file.chmod(0o600)
    store = LocalKeyStore(directory)
    assert [info.key_id for info in store.list_keys()] == [MANIFEST["key_id"]]
    return store


def test_manifest_lists_every_vector() -> None:
    recorded = {e["envelope"] for e in ENTRIES} | {e["plaintext"] for e in ENTRIES}
    on_disk = {p.name for p in VECTORS.iterdir() if p.is_file()} - {"README.md", "manifest.json"}
    assert on_disk == recorded
    assert {e["name"] for e in ENTRIES} == {
        "empty", "small", "multi-segment", "segment-boundary", "associated-data"
    }


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_vector_decodes_to_recorded_plaintext(
    vector_store: LocalKeyStore, tmp_path: Path, entry: dict[str, Any]
) -> None:
    envelope = (VECTORS / entry["envelope"]).read_bytes()
    plaintext = (VECTORS / entry["plaintext"]).read_bytes()
    # The files are the ones recorded at generation time, not regenerated ones.
    assert sha256(envelope) == entry["envelope_sha256"]
    assert sha256(plaintext) == entry["plaintext_sha256"]
    assert len(plaintext) == entry["plaintext_size"]

    assert envelope[:5] == b"PPML\x01"
    header_size = entry["header_size"]
    header = EnvelopeHeader.from_bytes(envelope[:header_size])
    assert header.key_id == MANIFEST["key_id"]
    assert header.kms == entry["kms"]
    assert header.segment_size == entry["segment_size"]
    assert header.associated_data == bytes.fromhex(entry["associated_data_hex"])

    assert decrypt_bytes(envelope, kms=vector_store) == plaintext
    assert decrypt_bytes(envelope, kms=vector_store, associated_data=header.associated_data) == plaintext

    decrypted = tmp_path / "decrypted"
    decrypt_file(VECTORS / entry["envelope"], decrypted, kms=vector_store)
    assert decrypted.read_bytes() == plaintext

    with EnvelopeReader(VECTORS / entry["envelope"], kms=vector_store) as reader:
        assert reader.plaintext_size == len(plaintext)
        for offset in {0, 1, 4039, 4040, 4041, len(plaintext) // 2, max(len(plaintext) - 1, 0)}:
            assert reader.read_range(offset, 5000) == plaintext[offset : offset + 5000]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_altered_vector_is_rejected(vector_store: LocalKeyStore, entry: dict[str, Any]) -> None:
    """The vectors are authenticated by their key, not merely parsed: one flipped bit in the
    header or in the last byte of the body and they no longer decrypt."""
    envelope = bytearray((VECTORS / entry["envelope"]).read_bytes())
    for position in (entry["header_size"] - 1, len(envelope) - 1):
        altered = bytearray(envelope)
        altered[position] ^= 0x01
        with pytest.raises(InvalidCiphertext):
            decrypt_bytes(bytes(altered), kms=vector_store)
