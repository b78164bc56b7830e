"""The ppml envelope (ppml.core.envelope) with a ``local:`` key store.

Round-trip and random-access properties, tamper resistance (Hypothesis bit flips and a seeded
mutation run), the file API's behaviour on bad input (clear error, source untouched, no output
and no ``*.partial`` left behind) and secret hygiene of keys and error messages.

Segment geometry is recomputed here from the format's definition instead of importing
``ppml.core._streaming.Layout``, so a wrong layout in the code cannot agree with itself.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import pickle
import random
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppml.core.envelope import (
    EnvelopeHeader,
    EnvelopeReader,
    EnvelopeWriter,
    decrypt_bytes,
    decrypt_file,
    encrypt_bytes,
    encrypt_file,
)
from ppml.core.keys import SECRET_ACCESS, DataKey, SecretAccess
from ppml.core.random_access import LocalInput
from ppml.errors import (
    InputNotFound,
    InvalidCiphertext,
    KeyNotFound,
    KeyStoreUnreadable,
    NotAFile,
    NotAnEnvelope,
    OutputExists,
    PpmlError,
)
from ppml.kms.local import LocalKeyStore

SEGMENT = 4096  # the smallest segment size the format allows: boundaries are cheap to reach
STREAM_HEADER = 40  # Tink stream header: length byte, 32-byte salt, 7-byte nonce prefix
TAG = 16
FIRST = SEGMENT - STREAM_HEADER - TAG  # plaintext bytes in segment 0
OTHER = SEGMENT - TAG  # plaintext bytes in every later segment

BOUNDARY_SIZES = sorted(
    {0, 1}
    | {edge + delta for edge in (FIRST, FIRST + OTHER, FIRST + 2 * OTHER) for delta in (-1, 0, 1)}
)


def shared_fixture_settings(**kwargs: object) -> settings:
    """Hypothesis settings for tests whose function-scoped fixtures (a key store, sealed files)
    are read-only, so sharing them between examples is intended."""
    return settings(suppress_health_check=[HealthCheck.function_scoped_fixture], **kwargs)  # type: ignore[arg-type]


# -- helpers --------------------------------------------------------------------------------


def segment_count(plaintext_size: int) -> int:
    if plaintext_size <= FIRST:
        return 1
    return 1 + -(-(plaintext_size - FIRST) // OTHER)


def segment_of(plaintext_offset: int) -> int:
    return 0 if plaintext_offset < FIRST else 1 + (plaintext_offset - FIRST) // OTHER


def header_length(envelope: bytes) -> int:
    """The envelope header length N, read straight from bytes 5..9."""
    return int.from_bytes(envelope[5:9], "big")


def segment_blocks(envelope: bytes) -> tuple[bytes, list[bytes]]:
    """Split an envelope into its header and body blocks of SEGMENT bytes (block 0 holds the
    stream header and segment 0)."""
    n = header_length(envelope)
    body = envelope[n:]
    return envelope[:n], [body[i : i + SEGMENT] for i in range(0, len(body), SEGMENT)]


def random_plaintext(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


plaintexts = st.one_of(
    st.binary(max_size=200),
    st.builds(
        random_plaintext,
        st.one_of(st.sampled_from(BOUNDARY_SIZES), st.integers(0, 4 * SEGMENT)),
        st.integers(0, 2**32),
    ),
)


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_round_trip_at_segment_boundaries(
    key_store: LocalKeyStore, key_id: str, tmp_path: Path, size: int
) -> None:
    plaintext = random_plaintext(size, seed=size)
    sealed = encrypt_bytes(plaintext, kms=key_store, key_id=key_id, segment_size=SEGMENT)

    assert sealed[:4] == b"PPML" and sealed[4] == 1
    n = header_length(sealed)
    assert len(sealed) == n + STREAM_HEADER + size + TAG * segment_count(size)
    assert decrypt_bytes(sealed, kms=key_store) == plaintext

    src, encrypted, decrypted = tmp_path / "in.bin", tmp_path / "in.ppml", tmp_path / "out.bin"
    src.write_bytes(plaintext)
    header = encrypt_file(src, encrypted, kms=key_store, key_id=key_id, segment_size=SEGMENT)
    assert header.segment_size == SEGMENT and header.key_id == key_id
    assert encrypted.stat().st_size == len(sealed)
    decrypt_file(encrypted, decrypted, kms=key_store)
    assert decrypted.read_bytes() == plaintext
    with EnvelopeReader(encrypted, kms=key_store) as reader:
        assert reader.plaintext_size == size
        assert reader.segment_count == segment_count(size)
        assert reader.read_range(0, size + 1) == plaintext
    assert listing(tmp_path) == ["in.bin", "in.ppml", "keys", "out.bin"]


@shared_fixture_settings(max_examples=300)
@given(plaintext=plaintexts, associated_data=st.binary(max_size=64))
def test_round_trip_bytes(
    key_store: LocalKeyStore, key_id: str, plaintext: bytes, associated_data: bytes
) -> None:
    sealed = encrypt_bytes(
        plaintext, kms=key_store, key_id=key_id, associated_data=associated_data,
        segment_size=SEGMENT,
    )
    assert decrypt_bytes(sealed, kms=key_store) == plaintext
    assert decrypt_bytes(sealed, kms=key_store, associated_data=associated_data) == plaintext


@shared_fixture_settings(max_examples=100)
@given(plaintext=plaintexts, segment_size=st.sampled_from([SEGMENT, SEGMENT + 1, 5000]))
def test_round_trip_files(
    key_store: LocalKeyStore, key_id: str, tmp_path: Path, plaintext: bytes, segment_size: int
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        src, encrypted, decrypted = (Path(scratch) / name for name in ("a.csv", "a.ppml", "b.csv"))
        src.write_bytes(plaintext)
        encrypt_file(src, encrypted, kms=key_store, key_id=key_id, segment_size=segment_size)
        decrypt_file(encrypted, decrypted, kms=key_store)
        assert decrypted.read_bytes() == plaintext
        assert src.read_bytes() == plaintext


class TrickleReader(io.RawIOBase):
    """A source whose reads return random short counts, as pipes and sockets do."""

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self._data = memoryview(data)
        self._rng = rng

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self._data), self._rng.randint(1, 3 * SEGMENT))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


@shared_fixture_settings(max_examples=200)
@given(plaintext=plaintexts, seed=st.integers(0, 2**32), use_copy_from=st.booleans())
def test_writer_output_does_not_depend_on_chunking(
    key_store: LocalKeyStore, key_id: str, plaintext: bytes, seed: int, use_copy_from: bool
) -> None:
    rng = random.Random(seed)
    generated = key_store.generate_data_key(key_id)
    header = EnvelopeHeader(
        kms=key_store.uri, key_id=key_id, wrapped_data_key=generated.wrapped, segment_size=SEGMENT
    )
    sink = io.BytesIO()
    with EnvelopeWriter(sink, header=header, data_key=generated.data_key) as writer:
        if use_copy_from:
            assert writer.copy_from(cast(BinaryIO, TrickleReader(plaintext, rng))) == len(plaintext)
        else:
            rest = memoryview(plaintext)
            while rest:
                n = rng.randint(0, 2 * SEGMENT)
                assert writer.write(rest[:n]) == len(rest[:n])
                rest = rest[n:]
    assert writer.plaintext_written == len(plaintext)
    sealed = sink.getvalue()
    assert len(sealed) == len(header.to_bytes()) + STREAM_HEADER + len(plaintext) + TAG * segment_count(
        len(plaintext)
    )
    assert decrypt_bytes(sealed, kms=key_store) == plaintext


# -- random access --------------------------------------------------------------------------

RANGE_PLAINTEXT_SIZE = FIRST + 3 * OTHER + 777  # five segments, the last one partial


@dataclass
class SealedFiles:
    plaintext: bytes
    clean: Path
    corrupted: dict[int, Path]  # segment index -> copy with one byte of that segment altered


@pytest.fixture
def sealed_files(key_store: LocalKeyStore, key_id: str, tmp_path: Path) -> SealedFiles:
    plaintext = random_plaintext(RANGE_PLAINTEXT_SIZE, seed=7)
    src, clean = tmp_path / "plain.bin", tmp_path / "clean.ppml"
    src.write_bytes(plaintext)
    encrypt_file(src, clean, kms=key_store, key_id=key_id, segment_size=SEGMENT)
    sealed = clean.read_bytes()
    n = header_length(sealed)
    corrupted = {}
    for index in range(segment_count(len(plaintext))):
        position = n + index * SEGMENT + (STREAM_HEADER if index == 0 else 0) + 5
        path = tmp_path / f"corrupt-{index}.ppml"
        path.write_bytes(flip_bit(sealed, 8 * position))
        corrupted[index] = path
    return SealedFiles(plaintext, clean, corrupted)


offsets = st.one_of(
    st.integers(0, RANGE_PLAINTEXT_SIZE + 50),
    st.sampled_from([FIRST + k * OTHER + d for k in range(4) for d in (-1, 0, 1)]),
)


@shared_fixture_settings(max_examples=500)
@given(offset=offsets, length=st.integers(0, RANGE_PLAINTEXT_SIZE + 50), bad_segment=st.integers(0, 4))
def test_read_range_reads_and_verifies_only_covering_segments(
    key_store: LocalKeyStore, sealed_files: SealedFiles, offset: int, length: int, bad_segment: int
) -> None:
    plaintext = sealed_files.plaintext
    end = min(offset + length, len(plaintext))
    covering = range(segment_of(offset), segment_of(end - 1) + 1) if offset < end else range(0)

    reads: list[int] = []

    class CountingInput(LocalInput):
        def read_into(self, buffer: memoryview, offset: int) -> int:
            reads.append(offset)
            return super().read_into(buffer, offset)

    with EnvelopeReader(CountingInput(sealed_files.clean), kms=key_store) as reader:
        reads.clear()  # the header's reads: opening is not what is counted
        assert reader.read_range(offset, length) == plaintext[offset : offset + length]
    assert len(reads) == len(covering)

    with EnvelopeReader(sealed_files.corrupted[bad_segment], kms=key_store) as reader:
        if bad_segment in covering:
            with pytest.raises(InvalidCiphertext):
                reader.read_range(offset, length)
        else:
            assert reader.read_range(offset, length) == plaintext[offset : offset + length]


def test_read_range_rejects_negative_arguments(key_store: LocalKeyStore, sealed_files: SealedFiles) -> None:
    with EnvelopeReader(sealed_files.clean, kms=key_store) as reader:
        with pytest.raises(ValueError):
            reader.read_range(-1, 10)
        with pytest.raises(ValueError):
            reader.read_range(0, -1)
        assert reader.read_range(len(sealed_files.plaintext), 10) == b""


def test_read_segment_into_decrypts_in_place_and_checks_the_room(
    key_store: LocalKeyStore, sealed_files: SealedFiles
) -> None:
    plaintext = sealed_files.plaintext
    with EnvelopeReader(sealed_files.clean, kms=key_store) as reader:
        for index in range(reader.segment_count):
            start, end = reader.segment_plaintext_range(index)
            out = bytearray(b"\xee" * (OTHER + 3))
            assert reader.read_segment_into(index, memoryview(out)[3:]) == end - start
            assert out[3 : 3 + end - start] == plaintext[start:end]
            assert out[:3] == b"\xee" * 3 and out[3 + end - start :].count(0xEE) == OTHER - end + start
            with pytest.raises(ValueError):
                reader.read_segment_into(index, memoryview(bytearray(end - start - 1)))


@pytest.mark.parametrize("bad_segment", [0, 2, 4])
def test_read_segment_into_leaves_no_unverified_plaintext(
    key_store: LocalKeyStore, sealed_files: SealedFiles, bad_segment: int
) -> None:
    # AES-GCM decryption writes the plaintext before it checks the tag: a segment that fails
    # must not leave its (attacker-influenced) plaintext in the caller's buffer.
    with EnvelopeReader(sealed_files.corrupted[bad_segment], kms=key_store) as reader:
        start, end = reader.segment_plaintext_range(bad_segment)
        out = bytearray(b"\xee" * OTHER)
        with pytest.raises(InvalidCiphertext):
            reader.read_segment_into(bad_segment, memoryview(out))
        assert out[: end - start] == bytes(end - start)


# -- tampering ------------------------------------------------------------------------------


@shared_fixture_settings(max_examples=1000)
@given(plaintext=plaintexts, associated_data=st.binary(max_size=16), data=st.data())
def test_any_flipped_bit_is_rejected(
    key_store: LocalKeyStore, key_id: str, plaintext: bytes, associated_data: bytes,
    data: st.DataObject,
) -> None:
    sealed = encrypt_bytes(
        plaintext, kms=key_store, key_id=key_id, associated_data=associated_data,
        segment_size=SEGMENT,
    )
    header_and_stream_header = header_length(sealed) + STREAM_HEADER
    # Half of the flips land in the headers, which are a small part of the bytes.
    bit = data.draw(
        st.one_of(
            st.integers(0, 8 * header_and_stream_header - 1), st.integers(0, 8 * len(sealed) - 1)
        ),
        label="bit",
    )
    with pytest.raises(InvalidCiphertext):
        decrypt_bytes(flip_bit(sealed, bit), kms=key_store)


def test_every_bit_of_a_small_envelope_is_authenticated(
    key_store: LocalKeyStore, key_id: str
) -> None:
    sealed = encrypt_bytes(
        b"id,name\n1,Ada\n", kms=key_store, key_id=key_id, associated_data=b"t=people",
        segment_size=SEGMENT,
    )
    accepted = []
    for bit in range(8 * len(sealed)):
        try:
            decrypt_bytes(flip_bit(sealed, bit), kms=key_store)
        except InvalidCiphertext:
            continue
        accepted.append(bit)
    assert accepted == []


MUTATIONS = 20_000
MUTATION_SEED = 0x5EED_2024


class Mutator:
    """Seeded random mutations of envelopes; each returns (description, mutated bytes)."""

    def __init__(self, rng: random.Random, envelopes: list[bytes]) -> None:
        self.rng = rng
        self.envelopes = envelopes
        self.kinds: dict[str, Callable[[bytes], tuple[str, bytes]]] = {
            "bit flip": self.bit_flip,
            "byte overwrite": self.overwrite,
            "truncation": self.truncate,
            "insertion": self.insert,
            "deletion": self.delete,
            "segment swap": self.swap_segments,
            "segment duplication": self.duplicate_segment,
            "segment from another envelope": self.transplant_segment,
            "extension": self.extend,
        }
        self.needs_two_segments = {"segment swap"}

    def position(self, envelope: bytes) -> int:
        # Half the positions fall in the headers or on a segment boundary, where parsing is.
        r = self.rng.random()
        n = header_length(envelope)
        if r < 0.3:
            return self.rng.randrange(min(n + STREAM_HEADER, len(envelope)))
        if r < 0.5:
            boundaries = list(range(n, len(envelope), SEGMENT))
            return min(self.rng.choice(boundaries) + self.rng.randint(-2, 2), len(envelope) - 1)
        return self.rng.randrange(len(envelope))

    def bit_flip(self, envelope: bytes) -> tuple[str, bytes]:
        position, bit = self.position(envelope), self.rng.randrange(8)
        return f"flip bit {bit} of byte {position}", flip_bit(envelope, 8 * position + bit)

    def overwrite(self, envelope: bytes) -> tuple[str, bytes]:
        position = self.position(envelope)
        new = self.rng.randbytes(self.rng.randint(1, 24))
        return f"overwrite at {position} with {new.hex()}", (
            envelope[:position] + new + envelope[position + len(new) :]
        )[: len(envelope)]

    def truncate(self, envelope: bytes) -> tuple[str, bytes]:
        at = self.position(envelope)
        return f"truncate to {at}", envelope[:at]

    def insert(self, envelope: bytes) -> tuple[str, bytes]:
        position = self.rng.randint(0, len(envelope))
        new = self.rng.randbytes(self.rng.choice([1, 2, 15, 16, 17, 40, SEGMENT]))
        return f"insert {len(new)} bytes at {position}", envelope[:position] + new + envelope[position:]

    def delete(self, envelope: bytes) -> tuple[str, bytes]:
        position = self.position(envelope)
        length = self.rng.choice([1, 2, 15, 16, 17, 40, SEGMENT])
        return f"delete {length} bytes at {position}", envelope[:position] + envelope[position + length :]

    def swap_segments(self, envelope: bytes) -> tuple[str, bytes]:
        header, blocks = segment_blocks(envelope)
        i, j = self.rng.sample(range(len(blocks)), 2)
        blocks[i], blocks[j] = blocks[j], blocks[i]
        return f"swap segments {i} and {j}", header + b"".join(blocks)

    def duplicate_segment(self, envelope: bytes) -> tuple[str, bytes]:
        header, blocks = segment_blocks(envelope)
        i = self.rng.randrange(len(blocks))
        at = self.rng.randint(0, len(blocks))
        blocks.insert(at, blocks[i])
        return f"copy segment {i} to position {at}", header + b"".join(blocks)

    def transplant_segment(self, envelope: bytes) -> tuple[str, bytes]:
        """Replace a segment (or the whole header) with the same part of another envelope."""
        other = self.rng.choice([e for e in self.envelopes if e is not envelope])
        header, blocks = segment_blocks(envelope)
        other_header, other_blocks = segment_blocks(other)
        if self.rng.random() < 0.3:
            return "header from another envelope", other_header + b"".join(blocks)
        i = self.rng.randrange(min(len(blocks), len(other_blocks)))
        blocks[i] = other_blocks[i]
        return f"segment {i} from another envelope", header + b"".join(blocks)

    def extend(self, envelope: bytes) -> tuple[str, bytes]:
        new = self.rng.randbytes(self.rng.choice([1, 15, 16, 17, 100, SEGMENT, SEGMENT + 16]))
        return f"append {len(new)} bytes", envelope + new


def test_random_mutations_are_all_rejected(key_store: LocalKeyStore, key_id: str) -> None:
    def seal(size: int, associated_data: bytes = b"") -> bytes:
        return encrypt_bytes(
            random_plaintext(size, seed=size), kms=key_store, key_id=key_id,
            associated_data=associated_data, segment_size=SEGMENT,
        )

    envelopes = [
        seal(FIRST + 3 * OTHER + 1000, b"tenant=acme"),  # five segments, last partial
        seal(FIRST + 2 * OTHER),  # three segments, last exactly full
        seal(FIRST + 2 * OTHER),  # same size again: transplants between equal layouts
        seal(100),  # one segment
    ]
    rng = random.Random(MUTATION_SEED)
    mutator = Mutator(rng, envelopes)
    tried: Counter[str] = Counter()
    accepted: list[str] = []
    wrong_error: list[str] = []
    while sum(tried.values()) < MUTATIONS:
        kind = rng.choice(list(mutator.kinds))
        candidates = envelopes
        if kind in mutator.needs_two_segments:
            candidates = [e for e in envelopes if len(segment_blocks(e)[1]) >= 2]
        original = rng.choice(candidates)
        description, mutated = mutator.kinds[kind](original)
        if mutated == original:
            continue  # e.g. an overwrite with the same bytes: not a mutation
        tried[kind] += 1
        try:
            decrypt_bytes(mutated, kms=key_store)
        except InvalidCiphertext:
            continue
        except Exception as exc:  # anything else is a bug too: the error must be opaque
            wrong_error.append(f"{description}: {type(exc).__name__}: {exc}")
            continue
        accepted.append(description)

    assert accepted == [], f"accepted mutations (seed {MUTATION_SEED:#x}): {accepted[:20]}"
    assert wrong_error == [], f"non-InvalidCiphertext errors: {wrong_error[:20]}"
    assert sum(tried.values()) == MUTATIONS
    assert set(tried) == set(mutator.kinds) and min(tried.values()) > MUTATIONS // 20


# -- bad input through the file API ---------------------------------------------------------


@dataclass
class Sealed:
    """An encrypted multi-segment file in ``tmp_path/in``; decrypt output goes to ``out``."""

    src: Path
    plaintext: bytes
    envelope: bytes
    out_dir: Path

    @property
    def dst(self) -> Path:
        return self.out_dir / "data.csv"

    @property
    def header_length(self) -> int:
        return header_length(self.envelope)

    def replace(self, data: bytes) -> bytes:
        self.src.write_bytes(data)
        return data


@pytest.fixture
def sealed(key_store: LocalKeyStore, key_id: str, tmp_path: Path) -> Sealed:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    plaintext = b"".join(b"%d,person-%d,%d\n" % (i, i, i * 37 % 91) for i in range(900))
    assert segment_count(len(plaintext)) >= 4
    source = tmp_path / "data.csv"
    source.write_bytes(plaintext)
    src = in_dir / "data.csv.ppml"
    encrypt_file(source, src, kms=key_store, key_id=key_id, segment_size=SEGMENT)
    return Sealed(src=src, plaintext=plaintext, envelope=src.read_bytes(), out_dir=out_dir)


def decrypt_fails(
    sealed: Sealed, kms: LocalKeyStore, error: type[PpmlError], **kwargs: object
) -> PpmlError:
    """Decrypt ``sealed.src``, expect ``error``, and check nothing was written or changed."""
    before = sealed.src.read_bytes() if sealed.src.is_file() else None
    before_listing = listing(sealed.out_dir)
    with pytest.raises(error) as caught:
        decrypt_file(sealed.src, sealed.dst, kms=kms, **kwargs)  # type: ignore[arg-type]
    if before is not None:
        assert sealed.src.read_bytes() == before
    assert listing(sealed.out_dir) == before_listing  # no output, no *.partial
    return caught.value


def with_blocks(edit: Callable[[list[bytes]], list[bytes]]) -> Callable[[Sealed], bytes]:
    """A tampering that rearranges the body's segment blocks."""

    def tamper(sealed: Sealed) -> bytes:
        header, blocks = segment_blocks(sealed.envelope)
        return header + b"".join(edit(blocks))

    return tamper


TAMPERINGS: dict[str, Callable[[Sealed], bytes]] = {
    "flipped bit in magic": lambda s: flip_bit(s.envelope, 0),
    "flipped bit in version": lambda s: flip_bit(s.envelope, 8 * 4),
    "flipped bit in header length": lambda s: flip_bit(s.envelope, 8 * 8),
    "flipped bit in algorithm": lambda s: flip_bit(s.envelope, 8 * 9 + 1),
    "flipped bit in segment size": lambda s: flip_bit(s.envelope, 8 * 12),
    "flipped bit in kms uri": lambda s: flip_bit(s.envelope, 8 * 16),
    "flipped bit in last header byte": lambda s: flip_bit(s.envelope, 8 * s.header_length - 1),
    "flipped bit in stream salt": lambda s: flip_bit(s.envelope, 8 * (s.header_length + 3)),
    "flipped bit in first segment": lambda s: flip_bit(s.envelope, 8 * (s.header_length + 100)),
    "flipped bit in last segment": lambda s: flip_bit(s.envelope, 8 * (len(s.envelope) - 30)),
    "flipped bit in last tag": lambda s: flip_bit(s.envelope, 8 * len(s.envelope) - 1),
    "truncated in header": lambda s: s.envelope[: s.header_length - 3],
    "truncated after header": lambda s: s.envelope[: s.header_length],
    "truncated at first segment boundary": lambda s: s.envelope[: s.header_length + SEGMENT],
    "truncated at last segment boundary": lambda s: s.envelope[
        : s.header_length + (len(s.envelope) - s.header_length - 1) // SEGMENT * SEGMENT
    ],
    "truncated inside a segment": lambda s: s.envelope[: s.header_length + 2 * SEGMENT + 1000],
    "truncated by one byte": lambda s: s.envelope[:-1],
    "extended by one byte": lambda s: s.envelope + b"\0",
    "extended by a tag's worth": lambda s: s.envelope + bytes(TAG),
    "extended by a segment": lambda s: s.envelope + os.urandom(SEGMENT),
    "two segments swapped": with_blocks(lambda blocks: [blocks[0], blocks[2], blocks[1], *blocks[3:]]),
    "a segment duplicated": with_blocks(lambda blocks: [blocks[0], blocks[1], *blocks[1:]]),
    "last segment dropped": with_blocks(lambda blocks: blocks[:-1]),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_decrypt_file_rejects_tampered_input(
    key_store: LocalKeyStore, sealed: Sealed, tampering: str
) -> None:
    tampered = sealed.replace(TAMPERINGS[tampering](sealed))
    assert tampered != sealed.envelope
    decrypt_fails(sealed, key_store, InvalidCiphertext)
    # The untampered file still decrypts: the failure was the tampering, not the set-up.
    sealed.replace(sealed.envelope)
    decrypt_file(sealed.src, sealed.dst, kms=key_store)
    assert sealed.dst.read_bytes() == sealed.plaintext


def write_key_file(directory: Path, record: dict[str, object]) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{record['key_id']}.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.chmod(path, 0o600)
    return path


def test_wrong_key_with_the_same_id(
    key_store: LocalKeyStore, key_id: str, sealed: Sealed, tmp_path: Path
) -> None:
    record = json.loads((key_store.directory / f"{key_id}.key").read_text())
    record["material"] = base64.b64encode(os.urandom(32)).decode()
    impostor = LocalKeyStore(tmp_path / "impostor-keys")
    write_key_file(impostor.directory, record)
    assert [k.key_id for k in impostor.list_keys()] == [key_id]

    decrypt_fails(sealed, impostor, InvalidCiphertext)
    with pytest.raises(InvalidCiphertext):
        decrypt_bytes(sealed.envelope, kms=impostor)


def test_key_store_without_the_key_id(key_id: str, sealed: Sealed, tmp_path: Path) -> None:
    other = LocalKeyStore(tmp_path / "other-keys")
    other.create_primary_key()
    error = decrypt_fails(sealed, other, InvalidCiphertext)
    assert key_id in error.diagnostics()  # the hint says which key was looked up where
    assert str(other.directory) in error.diagnostics()


def test_missing_key_store(sealed: Sealed, tmp_path: Path) -> None:
    error = decrypt_fails(sealed, LocalKeyStore(tmp_path / "no-such-dir"), KeyStoreUnreadable)
    assert "no-such-dir" in str(error)


def test_key_file_readable_by_others_is_refused(
    key_store: LocalKeyStore, key_id: str, sealed: Sealed
) -> None:
    key_file = key_store.directory / f"{key_id}.key"
    key_file.chmod(0o644)
    error = decrypt_fails(sealed, key_store, KeyStoreUnreadable)
    assert "too open" in str(error) and "0644" in str(error)
    key_file.chmod(0o600)
    decrypt_file(sealed.src, sealed.dst, kms=key_store)
    assert sealed.dst.read_bytes() == sealed.plaintext


def test_empty_file_is_not_an_envelope(key_store: LocalKeyStore, sealed: Sealed) -> None:
    sealed.replace(b"")
    error = decrypt_fails(sealed, key_store, NotAnEnvelope)
    assert "not a ppml encrypted file" in str(error)


def test_csv_is_not_an_envelope(key_store: LocalKeyStore, sealed: Sealed) -> None:
    sealed.replace(sealed.plaintext)
    error = decrypt_fails(sealed, key_store, NotAnEnvelope)
    assert error.hint and "plaintext file needs no decryption" in error.hint


def test_directory_as_input(key_store: LocalKeyStore, sealed: Sealed) -> None:
    sealed.src = sealed.src.parent
    decrypt_fails(sealed, key_store, NotAFile)
    with pytest.raises(NotAFile):
        encrypt_file(sealed.src, sealed.dst, kms=key_store, key_id="unused")
    assert listing(sealed.out_dir) == []


def test_directory_as_output(key_store: LocalKeyStore, sealed: Sealed) -> None:
    sealed.dst.mkdir()
    decrypt_fails(sealed, key_store, NotAFile)
    assert listing(sealed.dst) == []


def test_missing_input(key_store: LocalKeyStore, key_id: str, sealed: Sealed) -> None:
    sealed.src = sealed.src.with_name("missing.ppml")
    decrypt_fails(sealed, key_store, InputNotFound)
    with pytest.raises(InputNotFound):
        encrypt_file(sealed.src, sealed.dst, kms=key_store, key_id=key_id)
    assert listing(sealed.out_dir) == []


def test_existing_output_is_kept_without_overwrite(
    key_store: LocalKeyStore, key_id: str, sealed: Sealed
) -> None:
    sealed.dst.write_bytes(b"precious")
    decrypt_fails(sealed, key_store, OutputExists)
    assert sealed.dst.read_bytes() == b"precious"

    plain = sealed.out_dir / "plain.csv"
    plain.write_bytes(b"a,b\n")
    with pytest.raises(OutputExists):
        encrypt_file(plain, sealed.dst, kms=key_store, key_id=key_id)
    assert sealed.dst.read_bytes() == b"precious"
    assert listing(sealed.out_dir) == ["data.csv", "plain.csv"]

    decrypt_file(sealed.src, sealed.dst, kms=key_store, overwrite=True)
    assert sealed.dst.read_bytes() == sealed.plaintext


def test_encrypt_with_unknown_key_id_writes_nothing(key_store: LocalKeyStore, tmp_path: Path) -> None:
    src = tmp_path / "plain.csv"
    src.write_bytes(b"a,b\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(KeyNotFound):
        encrypt_file(src, out_dir / "plain.csv.ppml", kms=key_store, key_id="no-such-key")
    assert listing(out_dir) == []


def test_associated_data_mismatch(
    key_store: LocalKeyStore, key_id: str, tmp_path: Path
) -> None:
    src, dst = tmp_path / "plain.bin", tmp_path / "sealed.ppml"
    plaintext = random_plaintext(3 * SEGMENT, seed=3)
    src.write_bytes(plaintext)
    encrypt_file(
        src, dst, kms=key_store, key_id=key_id, associated_data=b"table=people", segment_size=SEGMENT
    )
    sealed_file = Sealed(src=dst, plaintext=plaintext, envelope=dst.read_bytes(), out_dir=tmp_path / "out")
    sealed_file.out_dir.mkdir()

    for wrong in (b"", b"table=peoplf", b"table=people\0"):
        decrypt_fails(sealed_file, key_store, InvalidCiphertext, associated_data=wrong)
        with pytest.raises(InvalidCiphertext):
            decrypt_bytes(sealed_file.envelope, kms=key_store, associated_data=wrong)
        with pytest.raises(InvalidCiphertext):
            EnvelopeReader(dst, kms=key_store, associated_data=wrong)

    decrypt_file(dst, sealed_file.dst, kms=key_store, associated_data=b"table=people")
    assert sealed_file.dst.read_bytes() == plaintext


# -- secret hygiene -------------------------------------------------------------------------


def test_data_key_does_not_show_its_bytes() -> None:
    material = bytes(range(32))
    key = DataKey(material)
    assert repr(key) == str(key) == f"{key}" == f"{key!r}" == "DataKey(<redacted>)"
    assert repr([key]) == "[DataKey(<redacted>)]"


def test_generated_data_key_repr_hides_the_data_key(key_store: LocalKeyStore, key_id: str) -> None:
    generated = key_store.generate_data_key(key_id)
    material = generated.data_key.export(SECRET_ACCESS)
    text = repr(generated) + str(generated)
    assert "DataKey(<redacted>)" in text
    for encoded in encodings(material):
        assert encoded not in text


def test_data_key_cannot_be_pickled_or_copied(key_store: LocalKeyStore, key_id: str) -> None:
    key = DataKey(os.urandom(32))
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError):
            pickle.dumps(key, protocol=protocol)
    with pytest.raises(TypeError):
        pickle.dumps(key_store.generate_data_key(key_id))
    with pytest.raises(TypeError):
        copy.deepcopy(key)


def test_data_key_export_needs_secret_access() -> None:
    material = os.urandom(32)
    key = DataKey(material)
    for access in (None, object(), "SECRET_ACCESS", copy.copy(SECRET_ACCESS)):
        with pytest.raises(PermissionError):
            key.export(access)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SecretAccess()  # there is only one token
    assert key.export(SECRET_ACCESS) == material


def encodings(secret: bytes) -> list[str]:
    b64 = base64.b64encode(secret).decode()
    urlsafe = base64.urlsafe_b64encode(secret).decode()
    return [
        secret.hex(),
        secret.hex().upper(),
        secret.hex(":"),
        b64,
        b64.rstrip("="),
        urlsafe,
        urlsafe.rstrip("="),
        repr(secret)[2:-1],
        str(list(secret))[1:-1],
    ]


def test_failed_decrypt_messages_hold_no_key_material(
    key_store: LocalKeyStore, key_id: str, sealed: Sealed, tmp_path: Path
) -> None:
    record = json.loads((key_store.directory / f"{key_id}.key").read_text())
    primary_key = base64.b64decode(record["material"])
    header = EnvelopeHeader.from_bytes(sealed.envelope[: sealed.header_length])
    data_key = key_store.unwrap_data_key(key_id, header.wrapped_data_key).export(SECRET_ACCESS)

    impostor = LocalKeyStore(tmp_path / "impostor-keys")
    write_key_file(impostor.directory, {**record, "material": base64.b64encode(os.urandom(32)).decode()})
    stranger = LocalKeyStore(tmp_path / "stranger-keys")
    stranger.create_primary_key()

    failures: list[PpmlError] = []

    def collect(data: bytes, kms: LocalKeyStore, **kwargs: object) -> None:
        sealed.replace(data)
        failures.append(decrypt_fails(sealed, kms, PpmlError, **kwargs))
        with pytest.raises(PpmlError) as caught:
            decrypt_bytes(data, kms=kms, **kwargs)  # type: ignore[arg-type]
        failures.append(caught.value)

    collect(sealed.envelope, impostor)
    collect(sealed.envelope, stranger)
    collect(sealed.envelope, key_store, associated_data=b"other")
    collect(flip_bit(sealed.envelope, 8 * (sealed.header_length - 5)), key_store)  # wrapped key
    collect(flip_bit(sealed.envelope, 8 * (len(sealed.envelope) - 5)), key_store)
    collect(sealed.envelope[:-1], key_store)

    assert len(failures) == 12
    for error in failures:
        assert isinstance(error, InvalidCiphertext)
        text = "\n".join(
            [str(error), repr(error), error.diagnostics(), *traceback.format_exception(error)]
        )
        for secret in (data_key, primary_key):
            for encoded in encodings(secret):
                assert encoded not in text
