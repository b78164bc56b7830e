"""The DCAP quote parsers against real quotes, trustee's parse of one of them, and fuzzing."""

from __future__ import annotations

import dataclasses
import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml.attestation.describe import NOT_VERIFIED, describe_evidence
from ppml.attestation.quote import (
    MAX_QUOTE_SIZE,
    UNVERIFIED_TCB_STATUS,
    SgxQuote,
    TdxQuote,
    parse_quote,
)
from ppml.errors import QuoteFormatError

VECTORS = Path(__file__).parent / "vectors" / "attestation"
SGX_V3 = (VECTORS / "occlum_quote.dat").read_bytes()
TDX_V4 = (VECTORS / "tdx_quote_4.dat").read_bytes()
TDX_V5 = (VECTORS / "tdx_quote_5.dat").read_bytes()
REAL_QUOTES = {"sgx_v3": SGX_V3, "tdx_v4": TDX_V4, "tdx_v5": TDX_V5}


def length_fields(quote: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every length and type field (types 2 bytes, sizes 4, auth length 2)
    of a quote, found by walking it with the
    layout written out here again, independently of the parser."""
    version = struct.unpack_from("<H", quote, 0)[0]
    fields: list[tuple[int, int]] = []
    if version == 3:
        body_end = 48 + 384
    elif version == 4:
        body_end = 48 + 584
    else:
        fields += [(48, 2), (50, 4)]
        body_end = 54 + struct.unpack_from("<I", quote, 50)[0]
    fields.append((body_end, 4))  # signature data length
    position = body_end + 4 + 64 + 64
    if version >= 4:
        fields += [(position, 2), (position + 2, 4)]  # type 6, its size
        position += 6
    position += 384 + 64
    fields.append((position, 2))  # QE auth data length
    position += 2 + struct.unpack_from("<H", quote, position)[0]
    fields += [(position, 2), (position + 2, 4)]  # certification data type 5, its size
    return fields


def parse_or_format_error(data: bytes) -> SgxQuote | TdxQuote | None:
    """Parse; a QuoteFormatError gives None, and anything else fails the test by propagating."""
    try:
        return parse_quote(data)
    except QuoteFormatError:
        return None


# --- real quotes -------------------------------------------------------------------------------

def test_sgx_v3_quote_from_occlum_parses_at_the_documented_offsets() -> None:
    quote = parse_quote(SGX_V3)
    assert isinstance(quote, SgxQuote)
    assert quote.header.version == 3 and quote.header.tee_type == 0
    assert quote.body.mr_enclave == SGX_V3[112:144]
    assert quote.body.mr_signer == SGX_V3[176:208]
    assert quote.body.report_data == SGX_V3[368:432]
    assert quote.body.isv_prod_id == struct.unpack_from("<H", SGX_V3, 48 + 256)[0]
    assert quote.body.isv_svn == struct.unpack_from("<H", SGX_V3, 48 + 258)[0]
    assert quote.body.debug == bool(SGX_V3[48 + 48] & 0x02)
    assert quote.signed_bytes == SGX_V3[:432]
    assert quote.signature_data.certification_data_type == 5
    assert quote.signature_data.certification_data.count(b"-----BEGIN CERTIFICATE-----") == 3
    assert len(quote.signature_data.qe_auth_data) == 32

    claims = quote.to_claims()
    assert claims.tee == "sgx"
    assert claims.mr_enclave == SGX_V3[112:144].hex()
    assert claims.mr_signer == SGX_V3[176:208].hex()
    assert claims.report_data == SGX_V3[368:432].hex()
    assert claims.tcb_status == UNVERIFIED_TCB_STATUS
    assert claims.mr_td is None


def test_tdx_v4_quote_matches_trustees_parse() -> None:
    expected = json.loads((VECTORS / "parse_tdx_claims_expected.json").read_text())
    quote = parse_quote(TDX_V4)
    assert isinstance(quote, TdxQuote)
    body, header = quote.body, quote.header
    ours = {
        "mr_config_id": body.mr_config_id, "mr_owner": body.mr_owner,
        "mr_owner_config": body.mr_owner_config, "mr_seam": body.mr_seam, "mr_td": body.mr_td,
        "mrsigner_seam": body.mr_signer_seam, "report_data": body.report_data,
        "rtmr_0": body.rtmr0, "rtmr_1": body.rtmr1, "rtmr_2": body.rtmr2, "rtmr_3": body.rtmr3,
        "seam_attributes": body.seam_attributes, "tcb_svn": body.tee_tcb_svn,
        "td_attributes": body.td_attributes, "xfam": body.xfam,
    }
    assert set(ours) == set(expected["quote"]["body"])
    assert {key: value.hex() for key, value in ours.items()} == expected["quote"]["body"]
    assert {
        "att_key_type": struct.pack("<H", header.attestation_key_type).hex(),
        "reserved": header.reserved.hex(),
        "tee_type": struct.pack("<I", header.tee_type).hex(),
        "user_data": header.user_data.hex(),
        "vendor_id": header.qe_vendor_id.hex(),
        "version": struct.pack("<H", header.version).hex(),
    } == expected["quote"]["header"]
    assert body.debug is expected["td_attributes"]["debug"] is True

    claims = quote.to_claims()
    assert claims.tee == "tdx"
    assert claims.report_data == expected["report_data"]
    assert claims.mr_td == TDX_V4[184:232].hex() == expected["quote"]["body"]["mr_td"]
    assert claims.rtmr0 == TDX_V4[376:424].hex()
    assert claims.report_data == TDX_V4[568:632].hex()
    assert (claims.rtmr1, claims.rtmr2, claims.rtmr3) == (
        expected["quote"]["body"]["rtmr_1"], expected["quote"]["body"]["rtmr_2"],
        expected["quote"]["body"]["rtmr_3"])
    assert claims.debug is True and claims.mr_enclave is None


def test_tdx_v5_quote_with_a_td15_body_parses() -> None:
    quote = parse_quote(TDX_V5)
    assert isinstance(quote, TdxQuote)
    assert quote.header.version == 5 and quote.body_type == 3
    assert len(quote.body.raw) == 648
    body_start = 54
    assert quote.body.mr_td == TDX_V5[body_start + 136:body_start + 184]
    assert quote.body.rtmr0 == TDX_V5[body_start + 328:body_start + 376]
    assert quote.body.report_data == TDX_V5[body_start + 520:body_start + 584]
    assert quote.body.tee_tcb_svn2 == TDX_V5[body_start + 584:body_start + 600]
    assert quote.body.mr_service_td == TDX_V5[body_start + 600:body_start + 648]
    assert quote.signed_bytes == TDX_V5[:body_start + 648]
    assert quote.signature_data.certification_data_type == 5
    assert quote.to_claims().debug is False


def test_class_parsers_refuse_the_other_tee() -> None:
    assert isinstance(SgxQuote.parse(SGX_V3), SgxQuote)
    assert isinstance(TdxQuote.parse(TDX_V4), TdxQuote)
    with pytest.raises(QuoteFormatError, match="expected an SGX quote"):
        SgxQuote.parse(TDX_V4)
    with pytest.raises(QuoteFormatError, match="expected a TDX quote"):
        TdxQuote.parse(SGX_V3)


# --- malformed quotes: each refusal names its reason -------------------------------------------

def _patched(quote: bytes, offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(quote)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "truncated"),
    (SGX_V3[:47], "truncated"),
    (_patched(SGX_V3, 0, "<H", 6), "unsupported quote version 6"),
    (_patched(SGX_V3, 0, "<H", 2), "unsupported quote version 2"),
    (_patched(SGX_V3, 2, "<H", 3), "unsupported attestation key type 3"),
    (_patched(SGX_V3, 4, "<I", 0x81), "v3 is SGX only"),
    (_patched(TDX_V4, 4, "<I", 0x00), "unsupported TEE type"),
    (_patched(TDX_V4, 4, "<I", 0x7F), "unsupported TEE type"),
    (_patched(TDX_V5, 48, "<H", 1), "unsupported quote v5 body type 1"),
    (_patched(TDX_V5, 50, "<I", 584), "with size 584"),
    (_patched(TDX_V4, 632 + 4 + 128, "<H", 5), "certification data type 5"),
    (_patched(SGX_V3, 432, "<I", 10**6), "signature data claims"),
    (_patched(SGX_V3, 432, "<I", 100), "signature data truncated"),
    (_patched(SGX_V3, length_fields(SGX_V3)[-1][0], "<I", 3680), "1 unexpected bytes"),
    # a byte inside the signature data that nothing accounts for is no trailing byte
    (_patched(SGX_V3 + b"\0", 432, "<I", len(SGX_V3) - 436 + 1), "signature data: 1 unexpected"),
    (_patched(TDX_V4 + b"\0", 632, "<I", len(TDX_V4) - 636 + 1), "signature data: 1 unexpected"),
    (b"\0" * (MAX_QUOTE_SIZE + 1), "exceeds"),
    (SGX_V3 + bytes(MAX_QUOTE_SIZE), "exceeds"),
])
def test_malformed_quotes_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(QuoteFormatError, match=reason):
        parse_quote(data)


# --- quotes as they arrive: padded buffers and appended bytes ----------------------------------

def padded(quote: bytes, size: int = 8 << 10) -> bytes:
    """``quote`` in a zeroed buffer of ``size`` bytes, as TDX guests hand quotes out."""
    return quote + bytes(size - len(quote))


def appended(quote: bytes, count: int = 777, seed: int = 9) -> bytes:
    """``quote`` followed by ``count`` random bytes, as some tools write them."""
    return quote + random.Random(f"{seed}-{len(quote)}").randbytes(count)


@pytest.mark.parametrize("name", sorted(REAL_QUOTES))
@pytest.mark.parametrize("variant", [padded, appended, lambda q: padded(q, MAX_QUOTE_SIZE),
                                     lambda q: q + b"\0"],
                         ids=["padded-8KiB", "appended-random", "padded-to-the-limit", "one-nul"])
def test_bytes_after_the_quote_are_ignored_and_counted(name: str, variant: Any) -> None:
    quote = REAL_QUOTES[name]
    data = variant(quote)
    exact, arrived = parse_quote(quote), parse_quote(data)
    assert exact.trailing_bytes == 0
    assert arrived.trailing_bytes == len(data) - len(quote) > 0
    # the quote proper is read from the same bytes: header, body, signed part, signature data
    assert arrived.signed_bytes == exact.signed_bytes
    assert arrived.body == exact.body and arrived.header == exact.header
    assert arrived.signature_data == exact.signature_data
    assert arrived.signature_data.certification_data == exact.signature_data.certification_data
    claims = arrived.to_claims()
    assert claims.trailing_bytes == len(data) - len(quote)
    assert dataclasses.replace(claims, trailing_bytes=0) == exact.to_claims()
    assert exact.to_claims().to_dict()["trailing_bytes"] == 0


@pytest.mark.parametrize("name", sorted(REAL_QUOTES))
def test_what_follows_the_quote_influences_no_claim(name: str) -> None:
    """Two different tails of the same length give identical claims: nothing after the
    signature data is read."""
    quote = REAL_QUOTES[name]
    tails = [bytes(1000), b"\xff" * 1000, random.Random(1).randbytes(1000), SGX_V3[:1000]]
    claims = {parse_quote(quote + tail).to_claims() for tail in tails}
    assert len(claims) == 1 and claims.pop().trailing_bytes == 1000


def test_oversized_input_is_refused_even_when_the_quote_inside_is_whole() -> None:
    with pytest.raises(QuoteFormatError, match="exceeds"):
        parse_quote(padded(TDX_V4, MAX_QUOTE_SIZE + 1))


def test_a_quote_must_be_bytes() -> None:
    with pytest.raises(QuoteFormatError, match="bytes"):
        parse_quote("not bytes")  # type: ignore[arg-type]


def test_nested_qe_certification_data_inside_itself_is_refused() -> None:
    # signature length, outer type, outer size, auth data length, inner type, inner size
    inner_type_offset = length_fields(TDX_V4)[4][0]
    with pytest.raises(QuoteFormatError, match="nested"):
        parse_quote(_patched(TDX_V4, inner_type_offset, "<H", 6))
    with pytest.raises(QuoteFormatError, match="unknown certification data type 99"):
        parse_quote(_patched(TDX_V4, inner_type_offset, "<H", 99))


@pytest.mark.parametrize("name", sorted(REAL_QUOTES))
def test_every_truncation_of_a_real_quote_is_a_format_error(name: str) -> None:
    quote = REAL_QUOTES[name]
    for cut in range(len(quote)):
        with pytest.raises(QuoteFormatError):
            parse_quote(quote[:cut])


# --- fuzzing: nothing but QuoteFormatError, ever ----------------------------------------------

quotes = st.sampled_from(sorted(REAL_QUOTES)).map(REAL_QUOTES.__getitem__)


@settings(max_examples=300)
@given(quote=quotes, cut=st.integers(min_value=0, max_value=6000))
def test_truncation_raises_only_quote_format_error(quote: bytes, cut: int) -> None:
    result = parse_or_format_error(quote[:cut])
    assert (result is not None) == (cut >= len(quote))


@settings(max_examples=400)
@given(quote=quotes, data=st.data())
def test_rewritten_length_fields_raise_only_quote_format_error(quote: bytes,
                                                                data: st.DataObject) -> None:
    offset, size = data.draw(st.sampled_from(length_fields(quote)))
    largest = 2 ** (8 * size) - 1
    original = int.from_bytes(quote[offset:offset + size], "little")
    near = st.integers(-8, 8).map(lambda delta: max(0, min(largest, original + delta)))
    value = data.draw(st.one_of(st.integers(0, largest), near))
    mutated = quote[:offset] + value.to_bytes(size, "little") + quote[offset + size:]
    result = parse_or_format_error(mutated)
    if size == 4 and mutated != quote:
        # a changed 32-bit size always breaks the exact nesting of the quote
        assert result is None


@settings(max_examples=300)
@given(quote=quotes, position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_flipped_bits_raise_only_quote_format_error(quote: bytes, position: int, bit: int) -> None:
    data = bytearray(quote)
    data[position % len(data)] ^= 1 << bit
    parse_or_format_error(bytes(data))


@settings(max_examples=300)
@given(data=st.binary(max_size=8000))
def test_random_bytes_raise_only_quote_format_error(data: bytes) -> None:
    assert parse_or_format_error(data) is None


@settings(max_examples=300)
@given(quote=quotes, keep=st.integers(min_value=48, max_value=1400),
       tail=st.binary(max_size=5000))
def test_real_prefix_with_random_tail_raises_only_quote_format_error(
        quote: bytes, keep: int, tail: bytes) -> None:
    parse_or_format_error(quote[:keep] + tail)


# --- describing evidence (``ppml attest show``): nothing but QuoteFormatError, ever --------------

@settings(max_examples=300)
@given(quote=quotes, position=st.integers(min_value=0), value=st.integers(0, 255),
       tail=st.binary(max_size=64))
def test_describing_a_damaged_quote_raises_only_quote_format_error(
        quote: bytes, position: int, value: int, tail: bytes) -> None:
    data = bytearray(quote + tail)
    data[position % len(data)] = value
    try:
        description = describe_evidence(bytes(data))
    except QuoteFormatError:
        return
    assert description.lines()[-1] == NOT_VERIFIED
    assert description.to_dict()["verified"] is False
