"""`ppml.tabular.tables`: encrypted CSV tables to and from Arrow without Spark, for single-node ML in the TEE."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from ppml.core.envelope import DEFAULT_SEGMENT_SIZE, encrypt_file
from ppml.errors import InputNotFound, InvalidCiphertext, KeyServiceError, OutputExists, UsageError
from ppml.kms.local import LocalKeyStore
from ppml.tabular.tables import read_csv_table, table_files, write_csv_table


def sample(rows: int) -> pa.Table:
    return pa.table({"id": pa.array(range(rows), pa.int64()),
                     "score": pa.array([i / 7 for i in range(rows)], pa.float64()),
                     "name": pa.array([f"row, {i}" for i in range(rows)])})


def test_round_trip_is_exact_and_nothing_is_plaintext(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    table = sample(1000)
    write_csv_table(table, tmp_path / "out", kms=key_store, key_id=key_id)
    (part,) = table_files(tmp_path / "out")
    assert part.name == "part-00000.csv.ppml" and part.read_bytes()[:4] == b"PPML"
    assert b"row, 5" not in part.read_bytes()
    assert read_csv_table(tmp_path / "out", kms=key_store).equals(table)  # doubles survive the text exactly


def test_reads_files_larger_than_a_segment_and_directories_of_parts(tmp_path: Path, key_store: LocalKeyStore,
                                                                   key_id: str) -> None:
    lines = ["a,b"] + [f"{i},{i * 3}" for i in range(300_000)]
    (tmp_path / "in").mkdir()
    for index, chunk in enumerate((lines[:150_001], [lines[0], *lines[150_001:]])):
        plain = tmp_path / f"p{index}.csv"
        plain.write_text("\n".join(chunk) + "\n")
        encrypt_file(plain, tmp_path / "in" / f"part-{index:05d}.csv.ppml", kms=key_store, key_id=key_id)
    assert (tmp_path / "in" / "part-00000.csv.ppml").stat().st_size > DEFAULT_SEGMENT_SIZE
    (tmp_path / "in" / "_SUCCESS").write_bytes(b"")
    table = read_csv_table(tmp_path / "in", kms=key_store, column_types={"a": pa.int64()})
    assert table.num_rows == 300_000 and table.column("a").to_pylist() == list(range(300_000))
    assert table.column("b").to_pylist()[-1] == 299_999 * 3


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_an_altered_file_fails_the_whole_read(tmp_path: Path, key_store: LocalKeyStore, key_id: str, how: str) -> None:
    write_csv_table(sample(50_000), tmp_path / "out", kms=key_store, key_id=key_id)
    (part,) = table_files(tmp_path / "out")
    data = bytearray(part.read_bytes())
    if how == "flip":
        data[-100] ^= 1
    else:
        del data[-100:]
    part.write_bytes(bytes(data))
    with pytest.raises(InvalidCiphertext):
        read_csv_table(tmp_path / "out", kms=key_store)


def test_another_key_store_is_refused(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    write_csv_table(sample(10), tmp_path / "out", kms=key_store, key_id=key_id)
    other = LocalKeyStore(tmp_path / "other")
    other.create_primary_key()
    with pytest.raises(InvalidCiphertext):
        read_csv_table(tmp_path / "out", kms=other)


def test_bad_paths_and_existing_output(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    with pytest.raises(InputNotFound):
        read_csv_table(tmp_path / "missing", kms=key_store)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"no \.ppml file"):
        read_csv_table(tmp_path / "empty", kms=key_store)
    write_csv_table(sample(3), tmp_path / "out", kms=key_store, key_id=key_id)
    with pytest.raises(OutputExists):
        write_csv_table(sample(4), tmp_path / "out", kms=key_store, key_id=key_id)
    write_csv_table(sample(4), tmp_path / "out", kms=key_store, key_id=key_id, overwrite=True)
    assert read_csv_table(tmp_path / "out", kms=key_store).num_rows == 4


def test_a_failed_write_leaves_nothing(tmp_path: Path, key_store: LocalKeyStore) -> None:
    with pytest.raises(KeyServiceError):
        write_csv_table(sample(3), tmp_path / "out", kms=key_store, key_id="no-such-key")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]
