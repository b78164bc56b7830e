"""Generate the frozen ppml envelope v1 vectors in ``tests/vectors/envelope/``. Kept for the record.

These vectors were generated ONCE and must decode forever; this script refuses to overwrite
anything. Do not regenerate them: a change to the envelope format needs a new format version and
new vectors next to these (see ``tests/vectors/envelope/README.md``).

Usage (from the repository root)::

    .venv/bin/python tests/make_envelope_vectors.py

What it does: writes a primary key in the ``local:`` store format (fresh random material) to
``keys/``, encrypts each plaintext below with :func:`ppml.core.envelope.encrypt_bytes` through that
key, writes ``<name>.ppml`` and ``<name>.plain`` and records everything in ``manifest.json``.
Salts, nonces and data keys are random, so a second run would give different envelopes: that is
why the envelopes themselves, not this script, are the vectors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from ppml.core.envelope import DEFAULT_SEGMENT_SIZE, EnvelopeHeader, decrypt_bytes, encrypt_bytes
from ppml.core.keys import DataKey, GeneratedDataKey
from ppml.kms.local import LocalKeyStore

HERE = Path(__file__).resolve().parent / "vectors" / "envelope"
KEY_ID = "ppml-envelope-v1-vectors"
KMS_URI = "local:tests/vectors/envelope/keys"  # informational header field; never dialled
SMALL_SEGMENT = 4096


def people_csv(rows: int) -> bytes:
    lines = [b"id,name,age\n"] + [b"%d,person-%04d,%d\n" % (i, i, 18 + i * 37 % 70) for i in range(rows)]
    return b"".join(lines)


def repeated(pattern: bytes, size: int) -> bytes:
    return (pattern * (size // len(pattern) + 1))[:size]


# name -> (plaintext, segment size, associated data, what it covers)
VECTORS: dict[str, tuple[bytes, int, bytes, str]] = {
    "empty": (b"", SMALL_SEGMENT, b"", "empty plaintext: one segment holding only a tag"),
    "small": (
        b"id,name,age\n1,Ada Lovelace,36\n2,Alan Turing,41\n",
        DEFAULT_SEGMENT_SIZE,
        b"",
        "a few bytes with the default 1 MiB segment size",
    ),
    "multi-segment": (
        people_csv(750),
        SMALL_SEGMENT,
        b"",
        "four 4 KiB segments, the last one partial",
    ),
    "segment-boundary": (
        repeated(b"ppml envelope v1 frozen vector\n", (SMALL_SEGMENT - 56) + (SMALL_SEGMENT - 16)),
        SMALL_SEGMENT,
        b"",
        "plaintext that exactly fills two segments (the last segment is full)",
    ),
    "associated-data": (
        people_csv(250),
        SMALL_SEGMENT,
        b"tenant=acme;table=people;schema=v1",
        "caller associated data in the header, two segments",
    ),
}


class _NamedStore:
    """The local store, named in headers by a repository-relative URI instead of a temp path."""

    def __init__(self, store: LocalKeyStore) -> None:
        self._store = store

    @property
    def uri(self) -> str:
        return KMS_URI

    def generate_data_key(
        self, key_id: str, *, associated_data: bytes | None = None
    ) -> GeneratedDataKey:
        return self._store.generate_data_key(key_id, associated_data=associated_data)

    def unwrap_data_key(
        self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None
    ) -> DataKey:
        return self._store.unwrap_data_key(key_id, wrapped, associated_data=associated_data)


def main() -> int:
    if HERE.exists() and any(p.name != "README.md" for p in HERE.iterdir()):
        print(f"{HERE} already holds vectors; they are frozen and must not be regenerated.")
        return 1
    (HERE / "keys").mkdir(parents=True, exist_ok=True)
    key_record = {
        "format": "ppml-local-key/1",
        "key_id": KEY_ID,
        "created": datetime.now(UTC).isoformat(),
        "description": "frozen test vectors of the ppml envelope v1; test fixture, not a secret",
        "enabled": True,
        "material": base64.b64encode(os.urandom(32)).decode(),
    }
    key_file = HERE / "keys" / f"{KEY_ID}.key"
    key_file.write_text(json.dumps(key_record, indent=2) + "\n")

    vectors: list[dict[str, object]] = []
    manifest = {
        "format": "ppml envelope v1",
        "key_id": KEY_ID,
        "key_file": f"keys/{KEY_ID}.key",
        "generated": key_record["created"],
        "generator": "tests/make_envelope_vectors.py",
        "vectors": vectors,
    }
    with tempfile.TemporaryDirectory() as scratch:
        store_dir = Path(scratch) / "keys"
        store_dir.mkdir(mode=0o700)
        shutil.copy(key_file, store_dir / key_file.name)
        (store_dir / key_file.name).chmod(0o600)
        kms = _NamedStore(LocalKeyStore(store_dir))

        for name, (plaintext, segment_size, associated_data, covers) in VECTORS.items():
            envelope = encrypt_bytes(
                plaintext, kms=kms, key_id=KEY_ID, associated_data=associated_data,
                segment_size=segment_size,
            )
            assert decrypt_bytes(envelope, kms=kms) == plaintext
            header_size = int.from_bytes(envelope[5:9], "big")
            header = EnvelopeHeader.from_bytes(envelope[:header_size])
            (HERE / f"{name}.ppml").write_bytes(envelope)
            (HERE / f"{name}.plain").write_bytes(plaintext)
            vectors.append(
                {
                    "name": name,
                    "covers": covers,
                    "envelope": f"{name}.ppml",
                    "envelope_sha256": hashlib.sha256(envelope).hexdigest(),
                    "plaintext": f"{name}.plain",
                    "plaintext_size": len(plaintext),
                    "plaintext_sha256": hashlib.sha256(plaintext).hexdigest(),
                    "segment_size": header.segment_size,
                    "associated_data_hex": header.associated_data.hex(),
                    "kms": header.kms,
                    "header_size": header_size,
                }
            )
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(VECTORS)} vectors to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
