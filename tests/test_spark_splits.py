"""Split planning and line ownership (ppml.tabular.splits), without Spark.

The central property: for any text and any split size, the lines the splits own, taken in
order, are the file's lines, each exactly once (Hadoop's LineRecordReader convention). It is
checked against a plain ``split(b"\\n")`` on an in-memory segment source whose geometry is
recomputed here from the format's definition (not imported), and on real envelopes.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml.core.envelope import EnvelopeReader, encrypt_file
from ppml.errors import InputNotFound, InvalidCiphertext, NotAnEnvelope
from ppml.kms.local import LocalKeyStore
from ppml.tabular.splits import (
    FileSplit,
    envelope_plaintext_size,
    iter_owned_blocks,
    list_input_files,
    max_split_bytes,
    pack_splits,
    plan_envelope_splits,
    plan_ranges,
    read_owned_lines,
)

STREAM_HEADER, TAG = 40, 16  # Tink's stream header and GCM tag sizes


class MemorySegments:
    """A plaintext cut into segments the way the envelope format cuts it."""

    def __init__(self, data: bytes, segment_size: int) -> None:
        self.data = data
        self.first = segment_size - STREAM_HEADER - TAG
        self.other = segment_size - TAG
        self.reads: list[int] = []

    @property
    def plaintext_size(self) -> int:
        return len(self.data)

    @property
    def segment_count(self) -> int:
        if len(self.data) <= self.first:
            return 1
        return 1 + -(-(len(self.data) - self.first) // self.other)

    def _start(self, index: int) -> int:
        return 0 if index == 0 else self.first + (index - 1) * self.other

    def segment_plaintext_range(self, index: int) -> tuple[int, int]:
        end = self._start(index) + (self.first if index == 0 else self.other)
        return self._start(index), min(end, len(self.data))

    def read_segment_into(self, index: int, out: memoryview) -> int:
        assert 0 <= index < self.segment_count
        self.reads.append(index)
        start, end = self.segment_plaintext_range(index)
        out[: end - start] = self.data[start:end]
        return end - start


def lines_of(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    return lines[:-1] if lines[-1] == b"" else lines


def owned_chunks(source: MemorySegments | EnvelopeReader, splits: list[FileSplit],
                 header: bool) -> list[bytes]:
    return [
        bytes(read_owned_lines(source, split, skip_first_line=split.start > 0 or header))
        for split in splits
    ]


def memory_splits(data: bytes, segment_size: int, max_split_bytes: int) -> list[FileSplit]:
    return [
        FileSplit(path="memory", start=start, end=end, first_segment=first, stop_segment=stop,
                  file_size=len(data))
        for start, end, first, stop in plan_ranges(len(data), segment_size, max_split_bytes)
    ]


def check_lines_once(data: bytes, chunks: list[bytes], header: bool) -> None:
    expected = lines_of(data)
    if header:
        expected = expected[1:]
    assert [line for chunk in chunks for line in lines_of(chunk)] == expected
    # Stronger: the chunks are the text after the header, cut only at line ends.
    header_end = data.find(b"\n") + 1 if header else 0
    if header and header_end == 0:
        header_end = len(data)
    assert b"".join(chunks) == data[header_end:]
    filled = [chunk for chunk in chunks if chunk]
    assert all(chunk.endswith(b"\n") for chunk in filled[:-1])


texts = st.lists(
    st.sampled_from([b"a", b"bc", b",", b"\n", b"\n", b"\r\n", b"\r", b"x" * 37, b"y" * 150]),
    max_size=120,
).map(b"".join)


@settings(max_examples=500)
@given(data=texts, segment_size=st.integers(57, 160), max_split_bytes=st.integers(1, 500),
       header=st.booleans())
def test_every_line_is_read_exactly_once_in_order(
    data: bytes, segment_size: int, max_split_bytes: int, header: bool
) -> None:
    source = MemorySegments(data, segment_size)
    splits = memory_splits(data, segment_size, max_split_bytes)
    check_lines_once(data, owned_chunks(source, splits, header), header)


@given(data=texts, segment_size=st.integers(57, 160), max_split_bytes=st.integers(1, 500))
def test_splits_cover_the_file_on_segment_boundaries(
    data: bytes, segment_size: int, max_split_bytes: int
) -> None:
    source = MemorySegments(data, segment_size)
    splits = memory_splits(data, segment_size, max_split_bytes)
    assert splits[0].start == 0 and splits[-1].end == len(data)
    assert splits[0].first_segment == 0 and splits[-1].stop_segment == source.segment_count
    per_split = max(1, max_split_bytes // source.other)
    for before, after in itertools.pairwise(splits):
        assert before.end == after.start and before.stop_segment == after.first_segment
        assert after.start == source._start(after.first_segment)
    for split in splits:
        assert 1 <= split.stop_segment - split.first_segment <= max(per_split * 11 // 10, per_split)


def test_an_empty_file_still_has_one_split_over_its_one_segment() -> None:
    source = MemorySegments(b"", 4096)
    (split,) = memory_splits(b"", 4096, 1 << 20)
    assert (split.start, split.end, split.first_segment, split.stop_segment) == (0, 0, 0, 1)
    assert bytes(read_owned_lines(source, split, skip_first_line=True)) == b""
    assert source.reads == [0]  # verified, even though it holds nothing


def test_a_split_reads_past_its_end_only_to_finish_its_last_line() -> None:
    data = b"".join(b"%05d\n" % i for i in range(2000))  # 12000 bytes, lines of 6
    source = MemorySegments(data, 4096)
    splits = memory_splits(data, 4096, 4080)
    assert len(splits) == 3
    read_owned_lines(source, splits[0], skip_first_line=False)
    assert source.reads == [0, 1]  # its own segment, then one more for the last line


def test_a_line_longer_than_several_splits() -> None:
    long_line = b"z" * 1000
    data = b"a\n" + long_line + b"\nb\nc"
    source = MemorySegments(data, 100)
    splits = memory_splits(data, 100, 84)
    assert len(splits) > 10
    chunks = owned_chunks(source, splits, header=False)
    assert chunks[0] == b"a\n" + long_line + b"\n"
    assert all(chunk == b"" for chunk in chunks[1:-2])
    check_lines_once(data, chunks, header=False)


def test_a_split_that_starts_inside_the_file_must_skip() -> None:
    data = b"ab\n" * 100
    splits = memory_splits(data, 100, 84)
    with pytest.raises(ValueError):
        read_owned_lines(MemorySegments(data, 100), splits[1], skip_first_line=False)


def owned_blocks(source: MemorySegments | EnvelopeReader, split: FileSplit, header: bool,
                 block_bytes: int) -> list[bytes]:
    skip = split.start > 0 or header
    return [bytes(block) for block in
            iter_owned_blocks(source, split, skip_first_line=skip, block_bytes=block_bytes)]


@settings(max_examples=500)
@given(data=texts, segment_size=st.integers(57, 160), max_split_bytes=st.integers(1, 500),
       block_bytes=st.integers(1, 400), header=st.booleans())
def test_blocks_are_whole_lines_and_join_to_each_splits_lines(
    data: bytes, segment_size: int, max_split_bytes: int, block_bytes: int, header: bool
) -> None:
    source = MemorySegments(data, segment_size)
    splits = memory_splits(data, segment_size, max_split_bytes)
    per_split = [owned_blocks(source, split, header, block_bytes) for split in splits]
    check_lines_once(data, [b"".join(blocks) for blocks in per_split], header)
    for blocks in per_split:
        assert all(blocks)
        assert all(block.endswith(b"\n") for block in blocks[:-1])


def test_blocks_are_cut_near_block_bytes_and_are_buffers_of_their_own() -> None:
    data = b"".join(b"%05d\n" % i for i in range(2000))  # 12000 bytes, lines of 6
    source = MemorySegments(data, 4096)
    (split,) = memory_splits(data, 4096, 1 << 20)
    blocks = list(iter_owned_blocks(source, split, skip_first_line=False, block_bytes=5000))
    assert b"".join(blocks) == data
    # A block is cut at the last newline once 5000 bytes are gathered, whole segments at a time.
    assert [len(block) for block in blocks] == [8118, 3882]
    assert all(isinstance(block, bytearray) for block in blocks)
    blocks[0][:6] = b"XXXXX\n"  # the caller may keep and even change a block
    assert blocks[1][:6] == b"01353\n"
    assert source.reads == [0, 1, 2]


def test_max_split_bytes_follows_sparks_rule() -> None:
    mib = 1 << 20
    # 152 MB on 2 cores: two tasks of 78 MB, not one of 128 MiB and one of 24.
    assert max_split_bytes([152_000_000], max_partition_bytes=128 * mib, min_partitions=2) == (
        152_000_000 + 4 * mib) // 2
    # Two files count their open cost each.
    assert max_split_bytes([100 * mib, 50 * mib], max_partition_bytes=128 * mib,
                           min_partitions=4) == (158 * mib) // 4
    # Large input: capped at maxPartitionBytes; small input: never below the open cost.
    assert max_split_bytes([2 << 30], max_partition_bytes=128 * mib, min_partitions=2) == 128 * mib
    assert max_split_bytes([1000], max_partition_bytes=128 * mib, min_partitions=8) == 4 * mib
    assert max_split_bytes([1000], max_partition_bytes=64 << 10, min_partitions=8) == 64 << 10
    # Without a parallelism: maxPartitionBytes alone.
    assert max_split_bytes([152_000_000], max_partition_bytes=128 * mib,
                           min_partitions=None) == 128 * mib
    with pytest.raises(ValueError):
        max_split_bytes([1], max_partition_bytes=1, min_partitions=0)


def test_pack_splits_keeps_order_and_bounds_partitions() -> None:
    splits = [
        FileSplit(path=f"f{i}", start=0, end=size, first_segment=0, stop_segment=1, file_size=size)
        for i, size in enumerate([10, 10, 100, 5, 5, 5, 200])
    ]
    groups = pack_splits(splits, 120, open_cost=4)
    assert [s for group in groups for s in group] == splits
    # Each split costs its size plus 4; a group closes before it would pass 120.
    assert [[s.path for s in g] for g in groups] == [["f0", "f1"], ["f2", "f3", "f4"], ["f5"], ["f6"]]


def test_list_input_files_skips_hidden_and_underscore_names(tmp_path: Path) -> None:
    for name in ["b.csv", "a.csv", "_SUCCESS", ".a.csv.crc", "sub/c.csv", "_temporary/0/x.csv",
                 ".hidden/y.csv", "sub/_meta", "sub/deeper/d.csv"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_input_files(tmp_path)]
    assert found == ["a.csv", "b.csv", "sub/c.csv", "sub/deeper/d.csv"]
    assert list_input_files(tmp_path / "a.csv") == [tmp_path / "a.csv"]
    with pytest.raises(InputNotFound):
        list_input_files(tmp_path / "missing")


# -- real envelopes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalKeyStore, str]:
    key_store = LocalKeyStore(tmp_path_factory.mktemp("keys"))
    return key_store, key_store.create_primary_key().key_id


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("envelopes")


def encrypt(data: bytes, work: Path, store: tuple[LocalKeyStore, str], name: str) -> Path:
    plain, sealed = work / f"{name}.txt", work / f"{name}.ppml"
    plain.write_bytes(data)
    encrypt_file(plain, sealed, kms=store[0], key_id=store[1], segment_size=4096, overwrite=True)
    return sealed


@pytest.mark.parametrize("size", [0, 1, 4040, 4041, 4080, 4081, 4040 + 4080, 4040 + 4080 + 1, 50_000])
def test_plaintext_size_from_header_and_file_size(
    size: int, work: Path, store: tuple[LocalKeyStore, str]
) -> None:
    sealed = encrypt(os.urandom(size), work, store, f"size{size}")
    header, planned = envelope_plaintext_size(sealed)
    assert header.segment_size == 4096
    with EnvelopeReader(sealed, kms=store[0]) as reader:
        assert planned == reader.plaintext_size == size


@settings(max_examples=30)
@given(data=st.lists(texts, min_size=1, max_size=40).map(b"".join),
       max_split_bytes=st.integers(1, 20_000), header=st.booleans())
def test_envelope_splits_read_every_line_once(
    data: bytes, max_split_bytes: int, header: bool, work: Path, store: tuple[LocalKeyStore, str]
) -> None:
    sealed = encrypt(data, work, store, "property")
    splits = plan_envelope_splits(sealed, max_split_bytes)
    with EnvelopeReader(sealed, kms=store[0]) as reader:
        check_lines_once(data, owned_chunks(reader, splits, header), header)


def test_planning_names_a_truncated_or_foreign_file(
    work: Path, store: tuple[LocalKeyStore, str]
) -> None:
    sealed = encrypt(b"x" * 10_000, work, store, "truncated")
    body = STREAM_HEADER + 10_000 + 3 * TAG  # segments of 4040, 4080 and 1880 bytes
    header_size = os.path.getsize(sealed) - body
    with open(sealed, "r+b") as f:
        f.truncate(header_size + 4096 + 5)  # a last "segment" shorter than its tag
    with pytest.raises(InvalidCiphertext, match=r"truncated\.ppml"):
        plan_envelope_splits(sealed, 1 << 20)
    plain = work / "plain.csv"
    plain.write_bytes(b"a,b\n")
    with pytest.raises(NotAnEnvelope, match=r"plain\.csv"):
        plan_envelope_splits(plain, 1 << 20)


@settings(max_examples=30)
@given(data=st.lists(texts, min_size=1, max_size=40).map(b"".join),
       max_split_bytes=st.integers(1, 20_000), block_bytes=st.integers(1, 9000))
def test_envelope_blocks_read_every_line_once(
    data: bytes, max_split_bytes: int, block_bytes: int, work: Path,
    store: tuple[LocalKeyStore, str],
) -> None:
    sealed = encrypt(data, work, store, "blocks")
    splits = plan_envelope_splits(sealed, max_split_bytes)
    with EnvelopeReader(sealed, kms=store[0]) as reader:
        chunks = [b"".join(owned_blocks(reader, split, False, block_bytes)) for split in splits]
    check_lines_once(data, chunks, header=False)


def test_a_tampered_segment_stops_the_blocks_before_any_of_its_bytes(
    work: Path, store: tuple[LocalKeyStore, str]
) -> None:
    data = b"".join(b"%07d\n" % i for i in range(5000))  # 40000 bytes: segments 0..9
    sealed = encrypt(data, work, store, "tampered")
    body = STREAM_HEADER + len(data) + 10 * TAG
    position = os.path.getsize(sealed) - body + 5 * 4096 + 100  # inside segment 5
    raw = bytearray(sealed.read_bytes())
    raw[position] ^= 1
    sealed.write_bytes(bytes(raw))
    (split,) = plan_envelope_splits(sealed, 1 << 20)
    handed_out = []
    with EnvelopeReader(sealed, kms=store[0]) as reader:
        with pytest.raises(InvalidCiphertext, match=r"tampered\.ppml"):
            for block in iter_owned_blocks(reader, split, skip_first_line=False, block_bytes=4096):
                handed_out.append(bytes(block))
    # Only verified bytes came out: whole lines of segments 0..4.
    assert handed_out and data.startswith(b"".join(handed_out))
    assert len(b"".join(handed_out)) <= 4040 + 4 * 4080


def test_a_file_cut_at_a_segment_boundary_fails_when_read(
    work: Path, store: tuple[LocalKeyStore, str]
) -> None:
    sealed = encrypt(b"line\n" * 2000, work, store, "cut")
    with open(sealed, "r+b") as f:
        f.truncate(os.path.getsize(sealed) - (10_000 - 4040 - 4080) - TAG)  # drop the last segment
    splits = plan_envelope_splits(sealed, 4080)  # plans fine: two whole segments are left
    assert [s.stop_segment for s in splits] == [1, 2]
    with EnvelopeReader(sealed, kms=store[0]) as reader:
        for split in splits:  # segment 1 is not the stream's last: each split fails on it
            with pytest.raises(InvalidCiphertext, match=r"cut\.ppml"):
                read_owned_lines(reader, split, skip_first_line=split.start > 0)
