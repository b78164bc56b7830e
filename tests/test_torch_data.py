"""``ppml.torch.data``: encrypted datasets for PyTorch.

One module-wide corpus (a local key store, 4 KiB segments so records straddle segment boundaries)
holds the same ids in four forms: csv with a header, ``.npy`` arrays, raw records and PME Parquet,
each as four files of uneven sizes, one of them empty. Every dataset is checked to give each id
exactly once per epoch across 2 ranks x 2 real DataLoader workers (fork), and map-style access to
give the row asked for while decrypting only what holds it.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import pickle
import tracemalloc
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from ppml.core.envelope import EnvelopeHeader, encrypt_file
from ppml.core.keys import SECRET_ACCESS, DataKey, DataKeyProvider, GeneratedDataKey
from ppml.errors import InputError, InvalidCiphertext, NotAnEnvelope, PermissionDenied, UnsafeWarning, UsageError
from ppml.kms.local import LocalKeyStore
from ppml.tabular.parquet import write_encrypted_table
from ppml.tabular.tables import write_csv_table
from ppml.tee.agent import AgentKms, KeyAgent
from ppml.tee.keys import kms_for
from ppml.torch.data import (
    ArrayDataset,
    IterableArrayDataset,
    IterableRecordDataset,
    IterableTableDataset,
    RecordDataset,
    RecordWriter,
    TableDataset,
    save_array,
    write_records,
)
from ppml.torch.data.sharding import Shard, pieces, shard_ranges

SEGMENT = 4 << 10  # the smallest envelope segment: many segments, records across their boundaries
SIZES = (1234, 0, 1, 7000)  # records per file: uneven, one empty file
SECRET = "zz-secret-name"  # a plaintext value that must never be pickled


@dataclass
class Corpus:
    store: LocalKeyStore
    key_id: str
    csv: Path
    arrays: Path
    records: Path
    parquet: Path
    total: int


def record_bytes(ident: int) -> bytes:
    """Record ``ident`` of the records files: lengths 0 .. 9,000 bytes (some span segments)."""
    return b"" if ident % 97 == 5 else (b"%08d;" % ident) * (1 + (ident * 7919) % (1000 if ident % 50 else 1))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("torch-data")
    store = LocalKeyStore(root / "keys")
    key_id = store.create_primary_key().key_id
    dirs = {name: root / name for name in ("csv", "arrays", "records", "parquet", "plain")}
    for directory in dirs.values():
        directory.mkdir()
    first = 0
    for index, size in enumerate(SIZES):
        ids = np.arange(first, first + size)
        first += size
        plain = dirs["plain"] / f"part-{index}.csv"
        names = [SECRET if i == 3 else f"name-{i}-" + "x" * (i % 13) for i in ids]
        plain.write_text("id,score,name\n" + "".join(f"{i},{i / 4},{n}\n" for i, n in zip(ids, names, strict=True)))
        encrypt_file(plain, dirs["csv"] / f"part-{index}.csv.ppml", kms=store, key_id=key_id, segment_size=SEGMENT)
        values = np.stack([ids, ids * 2, ids * 3], axis=1).astype(np.float64)
        save_array(values, dirs["arrays"] / f"part-{index}.npy.ppml", kms=store, key_id=key_id, segment_size=SEGMENT)
        write_records((record_bytes(int(i)) for i in ids), dirs["records"] / f"part-{index}.rec.ppml", kms=store,
                      key_id=key_id, segment_size=SEGMENT)
        table = pa.table({"id": pa.array(ids, pa.int64()), "score": pa.array(ids / 4, pa.float64()),
                          "name": pa.array(names, pa.string())})
        write_encrypted_table(table, dirs["parquet"] / f"part-{index}.parquet", kms=store, footer_key=key_id,
                              row_group_size=500)
    (dirs["csv"] / "_SUCCESS").write_bytes(b"")  # skipped, as Spark's readers skip it
    return Corpus(store=store, key_id=key_id, csv=dirs["csv"], arrays=dirs["arrays"], records=dirs["records"],
                  parquet=dirs["parquet"], total=first)


def ids_of(item: Any, kind: str) -> list[int]:
    """The ids in one sample or batch of a dataset of ``kind``."""
    if kind in ("csv", "parquet"):
        ident = item[1] if isinstance(item, (tuple, list)) else item["id"]
        return [int(v) for v in torch.as_tensor(ident).reshape(-1).tolist()]
    if kind == "arrays":
        return [int(v) for v in torch.as_tensor(item).reshape(-1, 3)[:, 0].tolist()]
    records = item if isinstance(item, list) else [item]
    ids = []
    for record in records:
        assert isinstance(record, bytes)
        ids.append(int(record[:8]) if record else -1)
    return ids


def iterable(corpus: Corpus, kind: str, **options: Any) -> Any:
    if kind == "csv":
        return IterableTableDataset(corpus.csv, kms=corpus.store.uri, features=["score"], label="id",
                                    block_bytes=10_000, **options)
    if kind == "parquet":
        return IterableTableDataset(corpus.parquet, kms=corpus.store.uri, format="parquet", columns=["id", "name"],
                                    **options)
    if kind == "arrays":
        return IterableArrayDataset(corpus.arrays, kms=corpus.store.uri, block_bytes=10_000, **options)
    return IterableRecordDataset(corpus.records, kms=corpus.store.uri, block_bytes=10_000, **options)


def expected_ids(corpus: Corpus, kind: str) -> Counter[int]:
    if kind != "records":
        return Counter(range(corpus.total))
    return Counter(i if record_bytes(i) else -1 for i in range(corpus.total))


@pytest.mark.parametrize("kind", ["csv", "parquet", "arrays", "records"])
@pytest.mark.parametrize("batch_size", [None, 100])
def test_every_record_exactly_once_across_2_ranks_x_2_workers(corpus: Corpus, kind: str,
                                                              batch_size: int | None) -> None:
    seen: Counter[int] = Counter()
    per_rank = []
    for rank in (0, 1):
        dataset = iterable(corpus, kind, rank=rank, world_size=2, batch_size=batch_size)
        # Samples one by one are collated in the workers (one IPC message per sample would be slow).
        loader = DataLoader(dataset, batch_size=50 if batch_size is None else None, num_workers=2,
                            multiprocessing_context="fork")
        ids = [i for item in loader for i in ids_of(item, kind)]
        per_rank.append(len(ids))
        seen.update(ids)
    assert seen == expected_ids(corpus, kind)
    assert all(count > corpus.total // 8 for count in per_rank), per_rank  # both ranks did a share


@pytest.mark.parametrize("kind", ["csv", "arrays", "records"])
def test_shuffled_epochs_still_read_every_record_once_in_a_new_order(corpus: Corpus, kind: str) -> None:
    orders = []
    for epoch in (0, 1):
        seen: list[int] = []
        for rank in (0, 1):
            dataset = iterable(corpus, kind, rank=rank, world_size=2, shuffle=True, seed=7, batch_size=100)
            dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="fork")
            seen += [i for item in loader for i in ids_of(item, kind)]
        assert Counter(seen) == expected_ids(corpus, kind)
        orders.append(seen)
    assert orders[0] != orders[1]


def test_map_style_tables_give_the_row_asked_for(corpus: Corpus) -> None:
    csv = TableDataset(corpus.csv, kms=corpus.store, columns=["id", "name"])
    parquet = TableDataset(corpus.parquet, kms=corpus.store.uri, format="parquet", features=["score"], label="id",
                           dtype=torch.float64)
    assert len(csv) == len(parquet) == corpus.total
    rng = np.random.default_rng(3)
    for index in [*rng.integers(0, corpus.total, 200).tolist(), 0, corpus.total - 1, -1]:
        ident = index % corpus.total
        row = csv[index]
        assert int(row["id"]) == ident and row["name"] in (SECRET, f"name-{ident}-" + "x" * (ident % 13))
        features, label = parquet[index]
        assert features.dtype == torch.float64 and features.tolist() == [ident / 4] and int(label) == ident
    with pytest.raises(IndexError):
        csv[corpus.total]
    assert csv.cache_info().size <= 4 and parquet.cache_info().size <= 4


def test_map_style_arrays_and_records_decrypt_only_the_segments_holding_the_record(corpus: Corpus) -> None:
    arrays = ArrayDataset(corpus.arrays, kms=corpus.store.uri, cache_segments=3)
    records = RecordDataset(corpus.records, kms=corpus.store.uri, cache_segments=3)
    assert len(arrays) == len(records) == corpus.total
    assert arrays.dtype == np.float64 and arrays.record_shape == (3,)
    for index in np.random.default_rng(5).integers(0, corpus.total, 300).tolist():
        before = arrays.cache_info().loads
        assert arrays[index].tolist() == [index, 2 * index, 3 * index]
        assert arrays.cache_info().loads - before <= 2  # 24 bytes lie in one segment, or straddle two
        before = records.cache_info().loads
        data = record_bytes(index)
        assert records[index] == data
        assert records.cache_info().loads - before <= 1 + -(-len(data) // (SEGMENT - 16))
        assert arrays.cache_info().size <= 3 and records.cache_info().size <= 3


def test_samples_batches_and_transforms(corpus: Corpus) -> None:
    dicts = IterableTableDataset(corpus.csv, kms=corpus.store.uri)
    first = next(iter(dicts))
    assert set(first) == {"id", "score", "name"} and first["id"].dtype == torch.int64
    batch = next(iter(DataLoader(dicts, batch_size=8)))  # default collate over dict samples
    assert batch["id"].tolist() == list(range(8)) and batch["name"][0] == "name-0-"
    pairs = IterableTableDataset(corpus.csv, kms=corpus.store.uri, features=["score", "id"], label="id",
                                 batch_size=64, drop_last=True, transform=lambda b: (b[0] * 2, b[1]))
    batches = list(pairs)
    assert all(x.shape == (64, 2) and x.dtype == torch.float32 and y.shape == (64,) for x, y in batches)
    assert len(batches) == corpus.total // 64 and batches[0][0][1].tolist() == [0.5, 2.0]
    arrays = next(iter(IterableArrayDataset(corpus.arrays, kms=corpus.store.uri, batch_size=10)))
    assert arrays.shape == (10, 3) and arrays[9].tolist() == [9.0, 18.0, 27.0]
    records = next(iter(IterableRecordDataset(corpus.records, kms=corpus.store.uri, batch_size=4)))
    assert records == [record_bytes(i) for i in range(4)]
    with pytest.raises(UsageError, match="numeric"):
        IterableTableDataset(corpus.csv, kms=corpus.store.uri, features=["name"])
    with pytest.raises(UsageError, match="no column"):
        TableDataset(corpus.parquet, kms=corpus.store.uri, format="parquet", columns=["nope"])


def test_structured_arrays_give_dicts_and_object_arrays_are_refused(tmp_path: Path, key_store: LocalKeyStore,
                                                                    key_id: str) -> None:
    values = np.zeros(5, dtype=[("x", "<f4", (2,)), ("y", "<i8")])
    values["y"] = np.arange(5)
    values["x"][:, 1] = np.arange(5) / 2
    save_array(values, tmp_path / "s.npy.ppml", kms=key_store, key_id=key_id)
    sample = ArrayDataset(tmp_path / "s.npy.ppml", kms=key_store)[3]
    assert sample["x"].tolist() == [0.0, 1.5] and int(sample["y"]) == 3
    batch = next(iter(IterableArrayDataset(tmp_path / "s.npy.ppml", kms=key_store, batch_size=5)))
    assert batch["y"].tolist() == [0, 1, 2, 3, 4] and batch["x"].shape == (5, 2)
    with pytest.raises(UsageError, match="pickle"):
        save_array(np.array([{"a": 1}], dtype=object), tmp_path / "o.npy.ppml", kms=key_store, key_id=key_id)
    assert not (tmp_path / "o.npy.ppml").exists()
    # Decrypted, the file is a .npy that NumPy reads as it is.
    from ppml.core.envelope import decrypt_file

    decrypt_file(tmp_path / "s.npy.ppml", tmp_path / "s.npy", kms=key_store)
    assert np.array_equal(np.load(tmp_path / "s.npy", allow_pickle=False), values)


def test_a_plaintext_file_fails_when_the_dataset_is_built(corpus: Corpus, tmp_path: Path) -> None:
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "a.csv").write_text("id\n1\n")
    with pytest.raises(NotAnEnvelope):
        IterableTableDataset(tmp_path / "csv", kms=corpus.store.uri)
    for make in (ArrayDataset, IterableRecordDataset):
        with pytest.raises(NotAnEnvelope):
            make(tmp_path / "csv" / "a.csv", kms=corpus.store.uri)
    table = pa.table({"id": [1, 2]})
    pq.write_table(table, tmp_path / "plain.parquet")
    with pytest.raises(InputError, match="plaintext Parquet"):
        TableDataset(tmp_path / "plain.parquet", kms=corpus.store.uri, format="parquet")


def test_another_key_service_fails_when_the_dataset_is_built(corpus: Corpus, tmp_path: Path) -> None:
    other = LocalKeyStore(tmp_path / "other")
    other.create_primary_key()
    for build in (lambda: IterableTableDataset(corpus.csv, kms=other.uri),
                  lambda: TableDataset(corpus.parquet, kms=other, format="parquet"),
                  lambda: IterableArrayDataset(corpus.arrays, kms=other),
                  lambda: RecordDataset(corpus.records, kms=other.uri)):
        with pytest.raises(InvalidCiphertext):
            build()


class RefusingKms:
    """A key service that knows the keys but refuses to release them (a release policy's answer)."""

    def __init__(self, inner: DataKeyProvider, *, refuse_after: int = 0) -> None:
        self.inner = inner
        self.left = refuse_after

    @property
    def uri(self) -> str:
        return self.inner.uri

    def generate_data_key(self, key_id: str, *, associated_data: bytes | None = None) -> GeneratedDataKey:
        return self.inner.generate_data_key(key_id, associated_data=associated_data)

    def unwrap_data_key(self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None) -> DataKey:
        if self.left <= 0:
            raise PermissionDenied(f"key {key_id} is released to attested TEEs only")
        self.left -= 1
        return self.inner.unwrap_data_key(key_id, wrapped, associated_data=associated_data)


@pytest.mark.parametrize("kind", ["csv", "parquet", "arrays", "records"])
def test_a_refused_key_fails_when_the_dataset_is_built(corpus: Corpus, kind: str) -> None:
    refusing = RefusingKms(corpus.store)
    with pytest.raises(PermissionDenied):
        if kind == "csv":
            TableDataset(corpus.csv, kms=refusing)
        elif kind == "parquet":
            IterableTableDataset(corpus.parquet, kms=refusing, format="parquet")
        elif kind == "arrays":
            ArrayDataset(corpus.arrays, kms=refusing)
        else:
            IterableRecordDataset(corpus.records, kms=refusing)


def test_a_refused_parquet_column_key_fails_before_the_first_batch(corpus: Corpus, tmp_path: Path) -> None:
    second = corpus.store.create_primary_key().key_id
    table = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]})
    write_encrypted_table(table, tmp_path / "t.parquet", kms=corpus.store, footer_key=corpus.key_id,
                          column_keys={second: ["name"]})

    class RefuseSecond(RefusingKms):
        def unwrap_data_key(self, key_id: str, wrapped: bytes, *, associated_data: bytes | None = None) -> DataKey:
            if key_id == second:
                raise PermissionDenied("not for you")
            return self.inner.unwrap_data_key(key_id, wrapped, associated_data=associated_data)

    with pytest.raises(PermissionDenied):
        IterableTableDataset(tmp_path / "t.parquet", kms=RefuseSecond(corpus.store), format="parquet")
    only_id = IterableTableDataset(tmp_path / "t.parquet", kms=RefuseSecond(corpus.store), format="parquet",
                                   columns=["id"])
    assert [int(row["id"]) for row in only_id] == [1, 2, 3]  # the other column's key is never needed


@pytest.mark.parametrize("kind", ["csv", "arrays", "records"])
def test_tampering_fails_with_invalid_ciphertext(corpus: Corpus, tmp_path: Path, kind: str) -> None:
    source = {"csv": corpus.csv, "arrays": corpus.arrays, "records": corpus.records}[kind]
    (big,) = source.glob("part-0.*")
    target = tmp_path / big.name
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 1  # a middle segment: the dataset builds, reading it fails
    target.write_bytes(bytes(data))
    schema = pa.schema([("id", pa.int64()), ("score", pa.float64()), ("name", pa.string())])
    dataset = iterable_for(kind, target, corpus.store.uri, schema=schema)
    with pytest.raises(InvalidCiphertext):
        for _ in dataset:
            pass
    data = bytearray(big.read_bytes())
    data[12] ^= 1  # the envelope header (the segment size): refused while building
    target.write_bytes(bytes(data))
    with pytest.raises(InvalidCiphertext):
        iterable_for(kind, target, corpus.store.uri, schema=schema)


def iterable_for(kind: str, path: Path, kms: str, *, schema: pa.Schema) -> Any:
    if kind == "csv":
        return IterableTableDataset(path, kms=kms, schema=schema)
    if kind == "arrays":
        return IterableArrayDataset(path, kms=kms)
    return IterableRecordDataset(path, kms=kms)


def test_a_file_of_another_layout_is_refused(corpus: Corpus, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\.npy"):
        ArrayDataset(corpus.csv / "part-0.csv.ppml", kms=corpus.store.uri)
    with pytest.raises(InputError, match="records layout"):
        RecordDataset(corpus.arrays / "part-0.npy.ppml", kms=corpus.store.uri)


def test_a_pickled_dataset_holds_no_key_and_no_plaintext(corpus: Corpus) -> None:
    datasets = [TableDataset(corpus.csv, kms=corpus.store.uri), IterableTableDataset(corpus.csv, kms=corpus.store),
                TableDataset(corpus.parquet, kms=corpus.store.uri, format="parquet"),
                ArrayDataset(corpus.arrays, kms=corpus.store.uri), RecordDataset(corpus.records, kms=corpus.store)]
    for dataset in datasets:  # used first, so every cache holds keys and plaintext
        if isinstance(dataset, IterableTableDataset):
            assert sum(1 for _ in dataset) == corpus.total
        else:
            assert dataset[3] is not None and dataset[corpus.total - 1] is not None
    secrets = [base64.b64decode(json.loads(path.read_text())["material"])
               for path in corpus.store.directory.glob("*.key")]
    for file in [*corpus.csv.glob("*.ppml"), *corpus.arrays.glob("*.ppml"), *corpus.records.glob("*.ppml")]:
        with file.open("rb") as raw:
            header, _ = EnvelopeHeader.read_from(raw)
        secrets.append(corpus.store.unwrap_data_key(header.key_id, header.wrapped_data_key).export(SECRET_ACCESS))
    for dataset in datasets:
        data = pickle.dumps(dataset)
        assert not any(secret in data for secret in secrets)
        assert SECRET.encode() not in data and b"name-1234-" not in data
        copy = pickle.loads(data)
        assert len(copy) == corpus.total if hasattr(copy, "__len__") else True


@pytest.mark.slow  # spawned workers import torch again: ~15 s here
def test_spawned_workers_open_keys_themselves(corpus: Corpus) -> None:
    dataset = IterableArrayDataset(corpus.arrays, kms=corpus.store.uri, batch_size=500)
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    ids = [i for batch in loader for i in ids_of(batch, "arrays")]
    assert Counter(ids) == Counter(range(corpus.total))


def test_fork_workers_get_keys_through_the_key_agent(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def open_kms(uri: str) -> DataKeyProvider:
        asked.append(uri)
        return corpus.store

    uri = "ppml+https://kms.example:8443"  # a remote URI: kms_for goes through the agent when there is one
    with KeyAgent(open_kms, tee="none") as agent:
        for name, value in agent.environment().items():
            monkeypatch.setenv(name, value)
        dataset = IterableTableDataset(corpus.csv, kms=uri, features=["score"], label="id", batch_size=256)
        loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="fork")
        ids = [i for batch in loader for i in ids_of(batch, "csv")]
        client = kms_for(uri)  # this process's, through the agent: closed with it
        assert isinstance(client, AgentKms)
        client.close()
    assert Counter(ids) == Counter(range(corpus.total)) and asked == [uri]


def test_a_forked_child_opens_its_own_kms_client(corpus: Corpus) -> None:
    parent = kms_for(corpus.store.uri)
    context = multiprocessing.get_context("fork")
    queue = context.SimpleQueue()

    def child() -> None:
        queue.put(kms_for(corpus.store.uri) is not parent)

    process = context.Process(target=child)
    process.start()
    process.join(30)
    assert process.exitcode == 0 and queue.get() is True
    assert kms_for(corpus.store.uri) is parent


def test_iterable_memory_stays_near_one_block(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    plain = tmp_path / "big.csv"
    with plain.open("w") as out:
        out.write("a,b\n")
        for start in range(0, 400_000, 10_000):
            out.write("".join(f"{i},{i * 7}\n" for i in range(start, start + 10_000)))
    (tmp_path / "data").mkdir()
    encrypt_file(plain, tmp_path / "data" / "big.csv.ppml", kms=key_store, key_id=key_id, segment_size=64 << 10)
    size = plain.stat().st_size  # ~5.7 MB
    block_bytes = 256 << 10
    for batch_size in (None, 4096):
        dataset = IterableTableDataset(tmp_path / "data", kms=key_store, features=["a"], label="b",
                                       batch_size=batch_size, block_bytes=block_bytes)
        batches = iter(dataset)
        next(batches)  # past the first item: lazy imports are not the dataset's memory
        tracemalloc.start()
        try:
            for _ in batches:
                pass
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 8 * block_bytes < size / 2, (peak, size)  # a few blocks and segments, never the file


def test_unsafe_plaintext_reads_plaintext_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("x,y\n1,2\n3,4\n")
    with pytest.warns(UnsafeWarning, match="PLAINTEXT"):
        dataset = IterableTableDataset(tmp_path / "d", unsafe_plaintext=True, features=["x"], label="y")
    assert [(x.tolist(), int(y)) for x, y in dataset] == [([1.0], 2), ([3.0], 4)]
    with pytest.raises(UsageError, match="kms is required"):
        TableDataset(tmp_path / "d")


def test_tables_written_by_ppml_tabular_read_back(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    table = pa.table({"f0": [0.5, 1.5, 2.5], "label": [0, 1, 0]})
    write_csv_table(table, tmp_path / "t", kms=key_store, key_id=key_id)
    (x, y), = list(IterableTableDataset(tmp_path / "t", kms=key_store, features=["f0"], label="label",
                                        batch_size=3))
    assert x.tolist() == [[0.5], [1.5], [2.5]] and y.tolist() == [0, 1, 0]


def test_nulls_read_as_nan_in_floats_and_fail_in_integers(tmp_path: Path, key_store: LocalKeyStore,
                                                          key_id: str) -> None:
    plain = tmp_path / "n.csv"
    plain.write_text("a,b\n1.5,1\n,2\n")
    (tmp_path / "d").mkdir()
    encrypt_file(plain, tmp_path / "d" / "n.csv.ppml", kms=key_store, key_id=key_id)
    rows = list(IterableTableDataset(tmp_path / "d", kms=key_store))
    assert torch.isnan(rows[1]["a"]) and int(rows[1]["b"]) == 2
    plain.write_text("a,b\n1.5,1\n2.5,\n")
    encrypt_file(plain, tmp_path / "d" / "n.csv.ppml", kms=key_store, key_id=key_id, overwrite=True)
    with pytest.raises(InputError, match="'b' has nulls") as caught:
        list(IterableTableDataset(tmp_path / "d", kms=key_store))
    assert "2.5" not in str(caught.value)


def test_record_writer_publishes_only_whole_files(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    with pytest.raises(RuntimeError), RecordWriter(tmp_path / "r.ppml", kms=key_store, key_id=key_id) as writer:
        writer.write(b"one")
        raise RuntimeError("the producer failed")
    assert list(tmp_path.iterdir()) == [tmp_path / "keys"]
    assert write_records([], tmp_path / "empty.ppml", kms=key_store, key_id=key_id) == 0
    assert len(RecordDataset(tmp_path / "empty.ppml", kms=key_store)) == 0


@given(st.lists(st.integers(0, 50), max_size=40), st.integers(1, 9))
def test_shard_ranges_partition_in_order(weights: list[int], count: int) -> None:
    ranges = shard_ranges(weights, count)
    assert len(ranges) == count
    assert [i for r in ranges for i in r] == list(range(len(weights)))


@given(st.lists(st.integers(1, 6), min_size=1, max_size=8), st.integers(1, 7), st.booleans(), st.integers(1, 4))
def test_pieces_of_all_shards_cover_every_unit_once(files: list[int], count: int, shuffled: bool,
                                                   chunk: int) -> None:
    units = [(file, unit) for file, size in enumerate(files) for unit in range(size)]
    weights = [1 + (file * 31 + unit * 7) % 5 for file, unit in units]
    covered: list[tuple[int, int]] = []
    for index in range(count):
        for piece in pieces(units, weights, Shard(index, count), chunk_units=chunk,
                            order_seed=(1, 2) if shuffled else None):
            assert piece.stop > piece.first and (not shuffled or piece.stop - piece.first <= chunk)
            covered += [(piece.file, unit) for unit in range(piece.first, piece.stop)]
    assert sorted(covered) == units


def test_rank_and_world_size_are_checked(corpus: Corpus) -> None:
    with pytest.raises(UsageError, match="both"):
        IterableArrayDataset(corpus.arrays, kms=corpus.store.uri, rank=0)
    with pytest.raises(UsageError, match="rank must be"):
        IterableArrayDataset(corpus.arrays, kms=corpus.store.uri, rank=2, world_size=2)
