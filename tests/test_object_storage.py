"""Object storage: ``s3://`` paths for ``ppml encrypt/decrypt`` and ``format("ppml")``, against
moto's S3-compatible server run as a process on loopback (no in-process patching).

The CLI tests take the endpoint and credentials from the standard AWS environment variables, the
Spark tests from the source's options (``s3.endpoint``, ``s3.credentialsFile``): Spark's Python
workers keep the environment the session started with. Every check of what is visible lists the
bucket's raw keys, directory markers included.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pyarrow.fs as pafs
import pytest

from ppml.cli.main import main
from ppml.core.envelope import encrypt_file
from ppml.datagen import write_people
from ppml.kms.local import LocalKeyStore
from servers import MotoS3Server, free_port

ACCESS_KEY, SECRET_KEY, REGION = "ppml-test-access", "ppml-test-secret", "us-east-1"
SEGMENT = 4096


def raw_keys(server: MotoS3Server, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix``, as S3 lists it (directory markers and hidden names too)."""
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def _filesystem(server: MotoS3Server) -> pafs.S3FileSystem:
    return pafs.S3FileSystem(endpoint_override=server.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                             region=REGION, allow_bucket_creation=True)


def new_bucket(server: MotoS3Server) -> str:
    name = f"ppml-{uuid.uuid4().hex[:12]}"
    _filesystem(server).create_dir(name)
    return name


def put(server: MotoS3Server, url: str, data: bytes) -> None:
    with _filesystem(server).open_output_stream(url.removeprefix("s3://")) as out:
        out.write(data)


def get(server: MotoS3Server, url: str) -> bytes:
    with _filesystem(server).open_input_stream(url.removeprefix("s3://")) as source:
        return bytes(source.read())


# -- ppml encrypt / decrypt ----------------------------------------------------------------------


@pytest.fixture
def aws_env(s3_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch) -> MotoS3Server:
    """The standard AWS settings pointing at the test server, as a user would export them."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    return s3_server


@pytest.fixture
def cli_key(tmp_path: Path) -> tuple[str, str]:
    store = LocalKeyStore(tmp_path / "keys")
    return store.uri, store.create_primary_key().key_id


def test_cli_round_trip_through_s3_both_ways(aws_env: MotoS3Server, cli_key: tuple[str, str], tmp_path: Path) -> None:
    kms, key_id = cli_key
    bucket = new_bucket(aws_env)
    plain = tmp_path / "people.csv"
    with open(plain, "wb") as f:
        write_people(f, 3000, seed=3)
    sealed = f"s3://{bucket}/in/people.csv.ppml"
    assert main(["encrypt", str(plain), sealed, "--kms", kms, "--key", key_id, "--segment-size", str(SEGMENT)]) == 0
    assert main(["decrypt", sealed, f"s3://{bucket}/out/people.csv", "--kms", kms]) == 0
    assert main(["decrypt", f"s3://{bucket}/out/people.csv.ppml", str(tmp_path / "x"), "--kms", kms]) == 3
    assert main(["decrypt", sealed, str(tmp_path / "back.csv"), "--kms", kms]) == 0
    assert (tmp_path / "back.csv").read_bytes() == plain.read_bytes()
    assert get(aws_env, f"s3://{bucket}/out/people.csv") == plain.read_bytes()
    # An existing object is replaced only with --force.
    assert main(["decrypt", sealed, f"s3://{bucket}/out/people.csv", "--kms", kms]) == 3
    assert main(["decrypt", sealed, f"s3://{bucket}/out/people.csv", "--kms", kms, "--force"]) == 0

    # A directory to a prefix and back, names mapped as for local directories.
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.csv").write_bytes(b"a,1\n")
    (tree / "sub" / "b.csv").write_bytes(b"b,2\n")
    (tree / "_SUCCESS").write_bytes(b"")
    assert main(["encrypt", str(tree), f"s3://{bucket}/tree", "--kms", kms, "--key", key_id]) == 0
    assert main(["decrypt", f"s3://{bucket}/tree", str(tmp_path / "tree-back"), "--kms", kms]) == 0
    assert (tmp_path / "tree-back" / "sub" / "b.csv").read_bytes() == b"b,2\n"
    assert (tmp_path / "tree-back" / "a.csv").read_bytes() == b"a,1\n"
    data_keys = [key for key in raw_keys(aws_env, bucket) if not key.endswith("/")]
    assert data_keys == ["in/people.csv.ppml", "out/people.csv", "tree/a.csv.ppml", "tree/sub/b.csv.ppml"]


def test_a_tampered_object_fails_naming_it_and_leaves_no_output(
    aws_env: MotoS3Server, cli_key: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kms, key_id = cli_key
    bucket = new_bucket(aws_env)
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"name,age\n" + b"ann,31\n" * 3000)
    local_sealed = tmp_path / "plain.csv.ppml"
    assert main(["encrypt", str(plain), str(local_sealed), "--kms", kms, "--key", key_id,
                 "--segment-size", str(SEGMENT)]) == 0
    data = bytearray(local_sealed.read_bytes())
    data[-3 * SEGMENT] ^= 1  # a late segment: earlier plaintext would already have been written
    put(aws_env, f"s3://{bucket}/bad/plain.csv.ppml", bytes(data))
    put(aws_env, f"s3://{bucket}/cut/plain.csv.ppml", local_sealed.read_bytes()[:-SEGMENT])
    capsys.readouterr()
    for source in ("bad", "cut"):
        for target in (f"s3://{bucket}/out-{source}.csv", str(tmp_path / f"out-{source}.csv")):
            assert main(["decrypt", f"s3://{bucket}/{source}/plain.csv.ppml", target, "--kms", kms]) == 4
            message = capsys.readouterr().err
            assert f"s3://{bucket}/{source}/plain.csv.ppml: cannot decrypt" in message
    assert not list(tmp_path.glob("out-*")) and not list(tmp_path.glob(".out-*"))
    assert [key for key in raw_keys(aws_env, bucket) if not key.endswith("/")] == [
        "bad/plain.csv.ppml", "cut/plain.csv.ppml"]


def test_missing_objects_and_an_unreachable_endpoint_are_clear_errors(
    aws_env: MotoS3Server, cli_key: tuple[str, str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    kms, _ = cli_key
    bucket = new_bucket(aws_env)
    capsys.readouterr()
    assert main(["decrypt", f"s3://{bucket}/nothing.ppml", str(tmp_path / "x"), "--kms", kms]) == 3
    assert f"s3://{bucket}/nothing.ppml: no such file or directory" in capsys.readouterr().err
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    assert main(["decrypt", f"s3://{bucket}/nothing.ppml", str(tmp_path / "x"), "--kms", kms]) == 6
    message = capsys.readouterr().err
    assert f"object storage at {closed} unavailable" in message and "Traceback" not in message
    assert "hint: check s3.endpoint or AWS_ENDPOINT_URL_S3" in message
    assert not (tmp_path / "x").exists()


# -- format("ppml") --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark_s3(s3_server: MotoS3Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bucket with people.csv encrypted under ``people/``, a key store, and the options that
    point the source at the server (credentials by file: never an option's value)."""
    root = tmp_path_factory.mktemp("s3-spark")
    credentials = root / "aws-credentials"
    credentials.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    store = LocalKeyStore(root / "keys")
    key_id = store.create_primary_key().key_id
    plain = root / "people.csv"
    with open(plain, "wb") as f:
        write_people(f, 6000, seed=11)
    encrypt_file(plain, root / "people.csv.ppml", kms=store, key_id=key_id, segment_size=SEGMENT)
    bucket = new_bucket(s3_server)
    put(s3_server, f"s3://{bucket}/people/people.csv.ppml", (root / "people.csv.ppml").read_bytes())
    options = {"kms": store.uri, "s3.endpoint": s3_server.endpoint, "s3.region": REGION,
               "s3.credentialsFile": str(credentials)}
    return {"root": root, "bucket": bucket, "plain": plain, "key_id": key_id, "options": options,
            "server": s3_server}


def _reader(spark: Any, env: dict[str, Any], fmt: str = "csv", **options: str) -> Any:
    reader = spark.read.format("ppml").option("format", fmt)
    for key, value in {**env["options"], **options}.items():
        reader = reader.option(key, value)
    return reader


def _writer(df: Any, env: dict[str, Any], fmt: str = "csv", mode: str = "append") -> Any:
    writer = df.write.format("ppml").option("format", fmt).option("key", env["key_id"]).mode(mode)
    for key, value in env["options"].items():
        writer = writer.option(key, value)
    return writer.option("segmentSize", str(SEGMENT))


def _rows(df: Any) -> list[tuple[Any, ...]]:
    return sorted(tuple(row) for row in df.collect())


@pytest.mark.spark
def test_spark_reads_csv_from_s3_in_splits_as_from_a_local_file(spark: Any, spark_s3: dict[str, Any]) -> None:
    url = f"s3://{spark_s3['bucket']}/people"
    df = _reader(spark, spark_s3, header="true", maxPartitionBytes=str(32 << 10)).load(url)
    assert df.rdd.getNumPartitions() > 1
    expected = spark.read.csv(str(spark_s3["plain"]), header=True, inferSchema=True)
    assert _rows(df) == _rows(expected)


@pytest.mark.spark
def test_spark_writes_to_s3_commits_and_reads_back_csv_and_parquet(spark: Any, spark_s3: dict[str, Any]) -> None:
    bucket, server = spark_s3["bucket"], spark_s3["server"]
    schema = "name STRING, age INT, job STRING"
    people = spark.read.csv(str(spark_s3["plain"]), header=True, schema=schema).coalesce(2)
    expected = _rows(people)
    for fmt in ("csv", "parquet"):
        url = f"s3://{bucket}/written-{fmt}"
        _writer(people, spark_s3, fmt).save(url)
        keys = raw_keys(server, bucket, f"written-{fmt}/")
        assert "_temporary" not in " ".join(keys) and f"written-{fmt}/_SUCCESS" in keys
        assert _rows(_reader(spark, spark_s3, fmt).schema(schema).load(url)) == expected
    # errorifexists refuses a prefix with data (on the driver); overwrite replaces every part.
    with pytest.raises(Exception, match="already exists"):
        _writer(people, spark_s3).option("saveMode", "errorifexists").save(f"s3://{bucket}/written-csv")
    _writer(people.limit(5).coalesce(1), spark_s3, mode="overwrite").save(f"s3://{bucket}/written-csv")
    assert len([key for key in raw_keys(server, bucket, "written-csv/") if key.endswith(".csv.ppml")]) == 1


@pytest.mark.spark
@pytest.mark.filterwarnings("ignore:Cannot infer the eval type from type hints")
def test_a_failing_s3_write_leaves_nothing_under_the_prefix(spark: Any, spark_s3: dict[str, Any]) -> None:
    from pyspark.sql.functions import udf

    @udf("long")
    def explode_on_seven(value: int) -> int:
        if value == 7:
            raise RuntimeError("task failure injected by the test")
        return value

    bucket, server = spark_s3["bucket"], spark_s3["server"]
    failing = spark.range(0, 40, numPartitions=4).select(explode_on_seven("id").alias("id"))
    with pytest.raises(Exception, match="task failure injected"):
        _writer(failing, spark_s3).save(f"s3://{bucket}/never")
    assert raw_keys(server, bucket, "never") == []

    _writer(spark.range(5).selectExpr("id"), spark_s3).save(f"s3://{bucket}/kept")
    def contents() -> dict[str, bytes]:
        return {key: get(server, f"s3://{bucket}/{key}") for key in raw_keys(server, bucket, "kept/") if key[-1] != "/"}

    before = contents()
    with pytest.raises(Exception, match="task failure injected"):
        _writer(failing, spark_s3, mode="overwrite").save(f"s3://{bucket}/kept")
    assert contents() == before and "kept/_SUCCESS" in before


@pytest.mark.spark
def test_a_tampered_s3_object_fails_the_read_naming_it(spark: Any, spark_s3: dict[str, Any]) -> None:
    bucket, server = spark_s3["bucket"], spark_s3["server"]
    data = bytearray((spark_s3["root"] / "people.csv.ppml").read_bytes())
    data[len(data) // 2] ^= 1
    put(server, f"s3://{bucket}/tampered/part-bad.csv.ppml", bytes(data))
    df = _reader(spark, spark_s3, header="true").schema("name STRING, age INT, job STRING")
    with pytest.raises(Exception) as failure:
        df.load(f"s3://{bucket}/tampered").collect()
    assert f"s3://{bucket}/tampered/part-bad.csv.ppml: cannot decrypt" in str(failure.value)


def test_s3_options_never_take_a_secret() -> None:
    from ppml.errors import UsageError
    from ppml.filesystem import S3Settings

    with pytest.raises(UsageError, match="never the secret"):
        S3Settings.from_options({"s3.secretKey": "x"})


