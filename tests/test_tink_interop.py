"""The envelope body is Tink's AES-GCM-HKDF streaming ciphertext, byte for byte.

The ``tink`` package is the peer: given the data key and the envelope header as associated data
it decrypts our bodies, and we decrypt bodies it wrote behind a ppml header. The data key comes
from a provider defined here, so the test knows it (``DataKey.export(SECRET_ACCESS)``).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import tink
from hypothesis import given, settings
from hypothesis import strategies as st
from tink import secret_key_access, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

from ppml.core.envelope import (
    DEFAULT_SEGMENT_SIZE,
    EnvelopeHeader,
    EnvelopeReader,
    decrypt_bytes,
    decrypt_file,
    encrypt_bytes,
    encrypt_file,
)
from ppml.core.keys import SECRET_ACCESS, DataKey, DataKeyProvider, GeneratedDataKey
from ppml.errors import InvalidCiphertext, KeyNotFound

streaming_aead.register()

STREAM_HEADER, TAG = 40, 16


class FixedDataKeyProvider:
    """A DataKeyProvider that issues one known data key, "wrapped" as a fixed token."""

    uri = "test:fixed-data-key"
    wrapped = b"fixed-data-key/1"

    def __init__(self, key_id: str = "tink-interop") -> None:
        self.key_id = key_id
        self.data_key = DataKey.generate()

    def generate_data_key(
        self, key_id: str, *, associated_data: bytes | None = None
    ) -> GeneratedDataKey:
        if key_id != self.key_id:
            raise KeyNotFound(key_id, self.uri)
        return GeneratedDataKey(key_id=key_id, data_key=self.data_key, wrapped=self.wrapped)

    def unwrap_data_key(
        self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None
    ) -> DataKey:
        if key_id != self.key_id:
            raise KeyNotFound(key_id, self.uri)
        if wrapped != self.wrapped:
            raise InvalidCiphertext()
        return self.data_key

    def header(self, *, segment_size: int, associated_data: bytes = b"") -> bytes:
        return EnvelopeHeader(
            kms=self.uri, key_id=self.key_id, wrapped_data_key=self.wrapped,
            segment_size=segment_size, associated_data=associated_data,
        ).to_bytes()


def tink_primitive(key: bytes, segment_size: int) -> streaming_aead.StreamingAead:
    """Tink's AesGcmHkdfStreaming with our data key, in a one-key RAW keyset."""
    params = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
        ciphertext_segment_size=segment_size, derived_key_size=32, hkdf_hash_type=common_pb2.SHA256
    )
    key_proto = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(
        version=0, params=params, key_value=key
    )
    keyset = tink_pb2.Keyset(
        primary_key_id=1,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url="type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey",
                    value=key_proto.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=1,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return handle.primitive(streaming_aead.StreamingAead)


class _Capture(io.BytesIO):
    """Keeps its bytes when Tink closes it at the end of the stream."""

    value = b""

    def close(self) -> None:
        self.value = self.getvalue()
        super().close()


def tink_encrypt(primitive: streaming_aead.StreamingAead, plaintext: bytes, aad: bytes) -> bytes:
    sink = _Capture()
    with primitive.new_encrypting_stream(sink, aad) as stream:
        stream.write(plaintext)
    return sink.value


def tink_decrypt(primitive: streaming_aead.StreamingAead, ciphertext: bytes, aad: bytes) -> bytes:
    with primitive.new_decrypting_stream(io.BytesIO(ciphertext), aad) as stream:
        return stream.read()


def split(envelope: bytes) -> tuple[bytes, bytes]:
    _, header_bytes = EnvelopeHeader.read_from(io.BytesIO(envelope))
    return header_bytes, envelope[len(header_bytes) :]


def boundary_cases(segment_size: int) -> list[tuple[int, int]]:
    first, other = segment_size - STREAM_HEADER - TAG, segment_size - TAG
    sizes = [0, 1, first - 1, first, first + 1, first + other, first + other + 1, 5 * segment_size + 123]
    return [(segment_size, size) for size in sizes]


CASES = boundary_cases(4096) + boundary_cases(5000) + [(DEFAULT_SEGMENT_SIZE, 3 * (1 << 20) + 12345)]


def case_id(case: tuple[int, int]) -> str:
    return f"S={case[0]}-n={case[1]}"


@pytest.fixture
def provider() -> FixedDataKeyProvider:
    provider = FixedDataKeyProvider()
    assert isinstance(provider, DataKeyProvider)
    return provider


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_tink_decrypts_our_body(provider: FixedDataKeyProvider, tmp_path: Path, case: tuple[int, int]) -> None:
    segment_size, size = case
    plaintext = random.Random(size).randbytes(size)
    tink_aead = tink_primitive(provider.data_key.export(SECRET_ACCESS), segment_size)

    envelope = encrypt_bytes(
        plaintext, kms=provider, key_id=provider.key_id, associated_data=b"tenant=acme",
        segment_size=segment_size,
    )
    header_bytes, body = split(envelope)
    assert tink_decrypt(tink_aead, body, header_bytes) == plaintext

    src, sealed = tmp_path / "plain.bin", tmp_path / "plain.bin.ppml"
    src.write_bytes(plaintext)
    encrypt_file(src, sealed, kms=provider, key_id=provider.key_id, segment_size=segment_size)
    header_bytes, body = split(sealed.read_bytes())
    assert tink_decrypt(tink_aead, body, header_bytes) == plaintext

    # Tink, too, holds the body to the exact header bytes.
    altered = header_bytes[:-1] + bytes([header_bytes[-1] ^ 1])
    with pytest.raises(tink.TinkError):
        tink_decrypt(tink_aead, body, altered)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_we_decrypt_a_body_tink_wrote(
    provider: FixedDataKeyProvider, tmp_path: Path, case: tuple[int, int]
) -> None:
    segment_size, size = case
    plaintext = random.Random(size).randbytes(size)
    tink_aead = tink_primitive(provider.data_key.export(SECRET_ACCESS), segment_size)
    header_bytes = provider.header(segment_size=segment_size, associated_data=b"tenant=acme")

    body = tink_encrypt(tink_aead, plaintext, header_bytes)
    envelope = header_bytes + body
    assert decrypt_bytes(envelope, kms=provider) == plaintext
    assert decrypt_bytes(envelope, kms=provider, associated_data=b"tenant=acme") == plaintext

    sealed, decrypted = tmp_path / "tink.ppml", tmp_path / "tink.bin"
    sealed.write_bytes(envelope)
    decrypt_file(sealed, decrypted, kms=provider)
    assert decrypted.read_bytes() == plaintext
    with EnvelopeReader(sealed, kms=provider) as reader:
        assert reader.plaintext_size == size
        middle = size // 2
        assert reader.read_range(middle, segment_size) == plaintext[middle : middle + segment_size]

    # A Tink body is bound to the header it was written under, not to any ppml header.
    other_header = provider.header(segment_size=segment_size, associated_data=b"tenant=other")
    with pytest.raises(InvalidCiphertext):
        decrypt_bytes(other_header + body, kms=provider)


@settings(max_examples=100)
@given(
    plaintext=st.binary(max_size=3 * 4096),
    segment_size=st.integers(4096, 4096 + 300),
    associated_data=st.binary(max_size=32),
)
def test_round_trip_through_tink_either_way(
    plaintext: bytes, segment_size: int, associated_data: bytes
) -> None:
    provider = FixedDataKeyProvider()
    tink_aead = tink_primitive(provider.data_key.export(SECRET_ACCESS), segment_size)

    ours = encrypt_bytes(
        plaintext, kms=provider, key_id=provider.key_id, associated_data=associated_data,
        segment_size=segment_size,
    )
    header_bytes, body = split(ours)
    assert tink_decrypt(tink_aead, body, header_bytes) == plaintext

    header_bytes = provider.header(segment_size=segment_size, associated_data=associated_data)
    theirs = header_bytes + tink_encrypt(tink_aead, plaintext, header_bytes)
    assert len(theirs) == len(ours)  # same framing: same segment layout and overhead
    assert decrypt_bytes(theirs, kms=provider) == plaintext
