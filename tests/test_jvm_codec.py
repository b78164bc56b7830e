"""ppml's Hadoop codec (org.ppml.codec.PpmlCodec) on the shared local[2] session: Spark's own text,
CSV and JSON readers and writers over ppml envelopes, byte-compatible with the Python writer and
reader, split on segment boundaries with every line read exactly once, and failing with ppml's
message (never rows) on altered files, refused keys and a missing key agent."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ppml.core.envelope import EnvelopeHeader, decrypt_file, encrypt_bytes, encrypt_file
from ppml.datagen import write_people
from ppml.kms.local import LocalKeyStore
from ppml.spark import jvm
from ppml.spark.launch import spark_home
from ppml.tabular.splits import list_input_files
from ppml.tee.agent import AGENT_ENV

pytestmark = pytest.mark.spark

SEGMENT = 4096
SCHEMA = "name STRING, age INT, job STRING"
VECTORS = Path(__file__).resolve().parent / "vectors" / "envelope"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKeyStore, str]]:
    root = tmp_path_factory.mktemp("codec-keys")
    keys = LocalKeyStore(root / "keys")
    yield keys, keys.create_primary_key(description="codec tests").key_id


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory, store: tuple[LocalKeyStore, str]) -> tuple[Path, Path]:
    """people.csv (3,000 rows) and its envelope with 4 KiB segments (about 25 of them)."""
    root = tmp_path_factory.mktemp("codec-people")
    plain = root / "people.csv"
    with open(plain, "wb") as f:
        write_people(f, 3000, seed=11)
    encrypted = root / "enc" / "people.csv.ppml"
    encrypted.parent.mkdir()
    encrypt_file(plain, encrypted, kms=store[0], key_id=store[1], segment_size=SEGMENT)
    return plain, encrypted


@pytest.fixture
def split_bytes(spark: Any) -> Iterator[Any]:
    """Set spark.sql.files.maxPartitionBytes for one test; restored after."""
    before = spark.conf.get("spark.sql.files.maxPartitionBytes")

    def set_to(value: int) -> None:
        spark.conf.set("spark.sql.files.maxPartitionBytes", str(value))

    yield set_to
    spark.conf.set("spark.sql.files.maxPartitionBytes", before)


def rows(df: Any) -> list[tuple[Any, ...]]:
    return sorted(tuple(row) for row in df.collect())


def ppml_csv(spark: Any, uri: str) -> Any:
    return spark.read.schema(SCHEMA).option("header", "true").option("ppml.kms.uri", uri)


# -- reading what Python wrote ------------------------------------------------------------------


def test_spark_csv_reads_a_python_written_envelope_like_the_plaintext(
        spark: Any, store: tuple[LocalKeyStore, str], people: tuple[Path, Path], split_bytes: Any) -> None:
    plain, encrypted = people
    split_bytes(10_000)
    df = ppml_csv(spark, store[0].uri).csv(str(encrypted))
    assert df.rdd.getNumPartitions() > 5  # splittable: Spark cut the one file into many tasks
    expected = spark.read.schema(SCHEMA).option("header", "true").csv(str(plain))
    assert rows(df) == rows(expected)
    assert df.filter("job = 'Developer' AND age BETWEEN 20 AND 40").count() == \
        expected.filter("job = 'Developer' AND age BETWEEN 20 AND 40").count()
    # the header row is read once, by the split owning segment 0: inference sees names, not data
    inferred = spark.read.option("header", "true").option("inferSchema", "true") \
        .option("ppml.kms.uri", store[0].uri).csv(str(encrypted))
    assert inferred.schema.simpleString() == "struct<name:string,age:int,job:string>"


def test_json_lines_and_multiline_json_through_the_codec(
        spark: Any, store: tuple[LocalKeyStore, str], tmp_path: Path) -> None:
    records = [{"id": i, "text": "x" * (i * 37 % 300)} for i in range(400)]
    lines = tmp_path / "lines.json.ppml"
    lines.write_bytes(encrypt_bytes("".join(json.dumps(r) + "\n" for r in records).encode(), kms=store[0],
                                    key_id=store[1], segment_size=SEGMENT))
    df = spark.read.schema("id BIGINT, text STRING").option("ppml.kms.uri", store[0].uri).json(str(lines))
    assert rows(df) == sorted((r["id"], r["text"]) for r in records)
    whole = tmp_path / "array.json.ppml"  # multiLine reads through the codec's non-split stream
    whole.write_bytes(encrypt_bytes(json.dumps(records).encode(), kms=store[0], key_id=store[1],
                                    segment_size=SEGMENT))
    df = spark.read.schema("id BIGINT, text STRING").option("multiLine", "true") \
        .option("ppml.kms.uri", store[0].uri).json(str(whole))
    assert rows(df) == sorted((r["id"], r["text"]) for r in records)


@pytest.fixture
def vector_store(tmp_path: Path) -> str:
    """The frozen vectors' key in a temporary local store (git does not keep the 0600 mode)."""
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    directory = tmp_path / "vector-keys"
    directory.mkdir(mode=0o700)
    key_file = directory / Path(manifest["key_file"]).name
    shutil.copyfile(VECTORS / manifest["key_file"], key_file)
    key_file.chmod(0o600)
    return f"local:{directory}"


def test_the_frozen_vectors_decrypt_in_spark(spark: Any, vector_store: str) -> None:
    for entry in json.loads((VECTORS / "manifest.json").read_text())["vectors"]:
        plaintext = (VECTORS / entry["plaintext"]).read_bytes()
        df = spark.read.option("ppml.kms.uri", vector_store).text(str(VECTORS / entry["envelope"]))
        got = [row.value for row in df.collect()]
        assert Counter(got) == Counter(line.decode() for line in plaintext.splitlines()), entry["name"]


# -- split exactness ----------------------------------------------------------------------------


def random_text(rng: random.Random) -> bytes:
    """Lines of random length (empty ones, ones longer than a 4 KiB segment) ended by \\n, \\r\\n or a
    bare \\r (all three end a line for Hadoop), the last one sometimes unterminated."""
    parts = []
    for _ in range(rng.randrange(0, 120)):
        kind = rng.random()
        length = 0 if kind < 0.15 else rng.randrange(5000, 9000) if kind < 0.2 else rng.randrange(1, 200)
        parts.append("".join(rng.choices("abcdefghij,; 0123456789", k=length)).encode())
        parts.append(rng.choice([b"\n"] * 6 + [b"\r\n"] * 3 + [b"\r"]))
    if parts and rng.random() < 0.5:
        parts.pop()
    return b"".join(parts)


def crafted_texts() -> list[bytes]:
    """Texts where a segment boundary (plaintext 4040, then every 4080 bytes) falls right after a \\n,
    right after a bare \\r, between \\r and \\n, and right before a terminator."""
    first = SEGMENT - 40 - 16
    texts = []
    for ending in (b"\n", b"\r", b"\r\n"):
        for shift in (0, 1, 2):
            line = b"y" * (first - len(ending) + shift - 1)
            texts.append(line + b"x" + ending + b"next line\n" + b"z" * 4079 + ending + b"tail")
    return texts


def expected_lines(text: bytes) -> Counter[str]:
    return Counter(line.decode() for line in text.splitlines())


@pytest.fixture(scope="module")
def split_corpus(tmp_path_factory: pytest.TempPathFactory,
                 store: tuple[LocalKeyStore, str]) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("codec-splits")
    texts = {f"random-{seed}": random_text(random.Random(seed)) for seed in range(40)}
    texts.update({f"crafted-{i}": text for i, text in enumerate(crafted_texts())})
    texts["empty"] = b""
    for name, text in texts.items():
        (root / f"{name}.txt.ppml").write_bytes(encrypt_bytes(text, kms=store[0], key_id=store[1],
                                                              segment_size=SEGMENT))
    return root, texts


# split sizes: plain ones, one cutting inside the envelope header (N bytes), ones cutting exactly where
# segment 1 starts (N + S) and one byte before segment 2, and one split for the whole file
SPLITS = {"5000": lambda n: 5000, "4096": lambda n: 4096, "inside the header": lambda n: n // 2,
          "N+S": lambda n: n + SEGMENT, "N+2S-1": lambda n: n + 2 * SEGMENT - 1, "12345": lambda n: 12_345,
          "whole file": lambda n: 1 << 20}


@pytest.mark.parametrize("split", SPLITS)
def test_every_line_is_read_exactly_once_whatever_the_splits(
        spark: Any, store: tuple[LocalKeyStore, str], split_corpus: tuple[Path, dict[str, bytes]],
        split_bytes: Any, split: str) -> None:
    from pyspark.sql import functions as F

    root, texts = split_corpus
    with open(root / "empty.txt.ppml", "rb") as f:
        header_size = len(EnvelopeHeader.read_from(f)[1])
    max_bytes = SPLITS[split](header_size)
    if max_bytes < 1000:  # hundreds of tasks per file: a few texts suffice
        texts = {name: texts[name] for name in ("crafted-0", "crafted-4", "crafted-8", "random-1", "empty")}
    split_bytes(max_bytes)
    paths = [str(root / f"{name}.txt.ppml") for name in texts]
    df = spark.read.option("ppml.kms.uri", store[0].uri).text(paths).select(F.input_file_name(), "value")
    got: dict[str, Counter[str]] = {}
    for path, value in df.collect():
        got.setdefault(path.rsplit("/", 1)[1].removesuffix(".txt.ppml"), Counter())[value] += 1
    for name, text in texts.items():
        assert got.get(name, Counter()) == expected_lines(text), name


# -- writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["ppml.envelope", "org.ppml.codec.PpmlCodec"])
def test_spark_writes_envelopes_that_python_and_the_ppml_source_read(
        spark: Any, store: tuple[LocalKeyStore, str], people: tuple[Path, Path], tmp_path: Path, codec: str) -> None:
    plain, _ = people
    df = spark.read.schema(SCHEMA).option("header", "true").csv(str(plain)).repartition(3)
    out = tmp_path / "out"
    (df.write.option("compression", codec).option("ppml.codec.key.id", store[1])
     .option("ppml.kms.uri", store[0].uri).option("ppml.codec.segment.size", "8k").option("header", "true")
     .csv(str(out)))
    written = list_input_files(out)
    assert len(written) == 3 and all(p.name.endswith(".csv.ppml") for p in written)
    python_rows = []
    for part in written:
        with open(part, "rb") as f:
            header = EnvelopeHeader.read_from(f)[0]
        assert (header.key_id, header.segment_size, header.kms) == (store[1], 8192, store[0].uri)
        decrypt_file(part, tmp_path / "plain.csv", kms=store[0], overwrite=True)
        reader = csv.reader(io.StringIO((tmp_path / "plain.csv").read_text()))
        assert next(reader) == ["name", "age", "job"]
        python_rows += [(name, int(age), job) for name, age, job in reader]
    expected = rows(df)
    assert sorted(python_rows) == expected
    via_source = (spark.read.format("ppml").option("kms", store[0].uri).option("format", "csv")
                  .option("header", "true").schema(SCHEMA).load(str(out)))
    assert rows(via_source) == expected
    assert rows(ppml_csv(spark, store[0].uri).csv(str(out))) == expected


def test_writing_without_a_key_id_says_which_setting(
        spark: Any, store: tuple[LocalKeyStore, str], tmp_path: Path) -> None:
    df = spark.range(3)
    with pytest.raises(Exception) as caught:
        df.write.option("compression", "ppml.envelope").option("ppml.kms.uri", store[0].uri).csv(str(tmp_path / "o"))
    assert "ppml.codec.key.id" in str(caught.value)


# -- failures -----------------------------------------------------------------------------------


def alterations(envelope: bytes) -> dict[str, bytes]:
    n = len(EnvelopeHeader.read_from(io.BytesIO(envelope))[1])
    body = n + 40

    def seg(i: int) -> int:  # where segment i >= 1 starts
        return n + i * SEGMENT

    def flipped(at: int) -> bytes:
        return envelope[:at] + bytes([envelope[at] ^ 1]) + envelope[at + 1:]

    last = seg((len(envelope) - n - 1) // SEGMENT)
    return {
        "header byte": flipped(20),
        "body byte": flipped(body + 100),
        "last segment byte": flipped(len(envelope) - 5),
        "cut at a segment boundary": envelope[:seg(3)],
        "cut inside a segment": envelope[:seg(3) + 1000],
        "cut inside the last segment": envelope[:last + 20],
        "segments swapped": envelope[:seg(1)] + envelope[seg(2):seg(3)] + envelope[seg(1):seg(2)] + envelope[seg(3):],
        "bytes appended": envelope + b"\0" * 100,
        "a segment appended": envelope + envelope[seg(1):seg(2)],
    }


def test_altered_files_fail_the_job_with_ppmls_message_and_no_rows(
        spark: Any, store: tuple[LocalKeyStore, str], people: tuple[Path, Path], tmp_path: Path,
        split_bytes: Any) -> None:
    split_bytes(10_000)
    envelope = people[1].read_bytes()
    for name, altered in alterations(envelope).items():
        target = tmp_path / name.replace(" ", "-") / "people.csv.ppml"
        target.parent.mkdir()
        target.write_bytes(altered)
        with pytest.raises(Exception) as caught:
            ppml_csv(spark, store[0].uri).csv(str(target)).collect()
        message = str(caught.value)
        assert "ppml: InvalidCiphertext" in message and str(target) in message, (name, message[:2000])


def test_an_unknown_key_or_service_is_named_and_a_missing_setting_explained(
        spark: Any, store: tuple[LocalKeyStore, str], people: tuple[Path, Path], tmp_path: Path) -> None:
    other = LocalKeyStore(tmp_path / "other-keys")
    other.create_primary_key()
    with pytest.raises(Exception) as caught:
        ppml_csv(spark, other.uri).csv(str(people[1])).collect()
    assert "KeyNotFound" in str(caught.value) and store[1] in str(caught.value)
    with pytest.raises(Exception) as caught:
        spark.read.schema(SCHEMA).csv(str(people[1])).collect()
    assert "ppml.kms.uri" in str(caught.value) and "never dials" in str(caught.value)


def test_the_java_reader_without_a_key_agent_says_to_run_under_ppml_submit(
        store: tuple[LocalKeyStore, str], people: tuple[Path, Path], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != AGENT_ENV}
    classpath = os.pathsep.join([str(jvm.library_jar()), str(spark_home() / "jars" / "*")])
    result = subprocess.run(["java", "-cp", classpath, "org.ppml.codec.EnvelopeCli", "decrypt", store[0].uri,
                             str(people[1]), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 1
    assert "no key agent" in result.stderr and "ppml submit" in result.stderr
    assert not (tmp_path / "out").exists()
