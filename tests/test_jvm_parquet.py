"""Spark's own Parquet reader and writer doing PME with ppml's JVM ``KmsClient`` (through the key
agent), on the shared local[2] session (request ``spark`` by name): files written by PyArrow and by
``format("ppml")`` read through ``spark.read.parquet`` and the other way round, the key material
interoperates directly, and damaged, refused, plaintext-substituted or agent-less reads fail clearly.

The shared session has the library on its class path but no PME settings, so each read and write
passes :func:`ppml.spark.jvm.native_session_conf`'s Hadoop settings as DataFrame options (Spark merges
them into the Hadoop configuration of that read or write).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ppml.kms.local import LocalKeyStore
from ppml.spark import jvm
from ppml.spark.launch import spark_home
from ppml.tabular.parquet import PpmlKmsClient, read_encrypted_table, write_encrypted_table
from ppml.tee.agent import AGENT_ENV, KeyAgent

pytestmark = pytest.mark.spark

ROWS = 3_000
ROW_GROUP = 500


@dataclass
class Env:
    root: Path
    store: LocalKeyStore
    key_id: str
    table: pa.Table
    pyarrow_dir: Path  # one file written by write_encrypted_table

    @property
    def kms(self) -> str:
        return self.store.uri


def people(rows: int) -> pa.Table:
    jobs = ["Developer", "Engineer", "Researcher"]
    return pa.table({"name": [f"person-{i}" for i in range(rows)], "age": [18 + i % 50 for i in range(rows)],
                     "job": [jobs[i % 3] for i in range(rows)]})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    root = tmp_path_factory.mktemp("jvm-parquet")
    store = LocalKeyStore(root / "keys")
    key_id = store.create_primary_key(description="jvm parquet tests").key_id
    table = people(ROWS)
    pyarrow_dir = root / "pyarrow"
    pyarrow_dir.mkdir()
    write_encrypted_table(table, pyarrow_dir / "people.parquet", kms=store, footer_key=key_id,
                          row_group_size=ROW_GROUP)
    return Env(root, store, key_id, table, pyarrow_dir)


def pme_options(kms: str | None) -> dict[str, str]:
    prefix = "spark.hadoop."
    return {k[len(prefix):]: v for k, v in jvm.native_session_conf(kms).items() if k.startswith(prefix)}


def native_read(spark: Any, kms: str | None, **options: str) -> Any:
    read = spark.read
    for name, value in {**pme_options(kms), **options}.items():
        read = read.option(name, value)
    return read


def native_write(df: Any, kms: str, **options: str) -> Any:
    write = df.write.mode("overwrite")
    for name, value in {**pme_options(kms), **options}.items():
        write = write.option(name, value)
    return write


def rows(df: Any) -> list[tuple[Any, ...]]:
    return sorted(tuple(row) for row in df.collect())


def table_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return sorted(tuple(row.values()) for row in table.to_pylist())


def parquet_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.parquet"))


def error_text(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    return str(excinfo.value)


# -- PyArrow / format("ppml") -> spark.read.parquet -----------------------------------------------


def test_pyarrow_written_pme_reads_through_spark_read_parquet(spark: Any, env: Env) -> None:
    df = native_read(spark, env.kms).parquet(str(env.pyarrow_dir))
    assert rows(df) == table_rows(env.table)
    assert df.filter("job = 'Developer' AND age >= 20 AND age <= 40").count() == sum(
        1 for r in env.table.to_pylist() if r["job"] == "Developer" and 20 <= r["age"] <= 40)


def test_format_ppml_written_pme_reads_through_spark_read_parquet(spark: Any, env: Env) -> None:
    target = env.root / "from-source"
    df = spark.createDataFrame(env.table.to_pandas())
    (df.write.format("ppml").option("format", "parquet").option("kms", env.kms).option("key", env.key_id)
     .mode("overwrite").save(str(target)))
    assert rows(native_read(spark, env.kms).parquet(str(target))) == table_rows(env.table)


# -- spark.write.parquet -> PyArrow / format("ppml") ----------------------------------------------


def test_spark_written_pme_reads_in_python_and_through_the_source(spark: Any, env: Env) -> None:
    target = env.root / "from-spark"
    df = spark.createDataFrame(env.table.to_pandas()).repartition(2)
    native_write(df, env.kms, **{"parquet.encryption.footer.key": env.key_id}).parquet(str(target))
    files = parquet_files(target)
    assert len(files) == 2
    for path in files:
        data = path.read_bytes()
        assert data[:4] == data[-4:] == b"PARE"  # encrypted footer, as ppml writes
        assert b"Developer" not in data and b"person-1" not in data  # every column encrypted
    assert table_rows(read_encrypted_table(target, kms=env.store)) == table_rows(env.table)
    source = spark.read.format("ppml").option("format", "parquet").option("kms", env.kms).load(str(target))
    assert rows(source) == table_rows(env.table)


def test_spark_written_column_keys_read_in_python(spark: Any, env: Env) -> None:
    name_key = env.store.create_primary_key(description="names").key_id
    target = env.root / "column-keys"
    df = spark.createDataFrame(env.table.to_pandas()).coalesce(1)
    native_write(df, env.kms, **{"parquet.encryption.footer.key": env.key_id,
                                 "parquet.encryption.column.keys": f"{name_key}:name"}).parquet(str(target))
    assert table_rows(read_encrypted_table(target, kms=env.store)) == table_rows(env.table)
    # The columns the job did not name are encrypted too (under the footer key): no value shows.
    (path,) = parquet_files(target)
    assert b"Developer" not in path.read_bytes() and b"person-1" not in path.read_bytes()
    # The name column is under its own key: without it the other columns still read, the name does not.
    (env.store.directory / f"{name_key}.key").unlink()
    ages = native_read(spark, env.kms).parquet(str(target)).select("age", "job")
    assert rows(ages) == sorted(zip(env.table.column("age").to_pylist(), env.table.column("job").to_pylist()))
    with pytest.raises(Exception) as excinfo:
        native_read(spark, env.kms).parquet(str(target)).select("name").collect()
    assert "ppml: KeyNotFound" in error_text(excinfo), error_text(excinfo)


# -- the key material itself, without Spark -------------------------------------------------------


def java(main: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    classpath = os.pathsep.join([str(jvm.library_jar()), str(spark_home() / "jars" / "*")])
    return subprocess.run(["java", "-cp", classpath, main, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture()
def agent(env: Env) -> Iterator[KeyAgent]:
    with KeyAgent(lambda uri: env.store, tee="none") as running:
        yield running


def test_java_and_python_unwrap_each_others_wrapped_keys(env: Env, agent: KeyAgent) -> None:
    child_env = {**os.environ, **agent.environment()}
    key = os.urandom(32)
    wrapped = java("org.ppml.parquet.KeyWrapCli", "wrap", env.kms, env.key_id, key.hex(), env=child_env)
    assert wrapped.returncode == 0, wrapped.stdout + wrapped.stderr
    python_client = PpmlKmsClient(env.store)
    assert python_client.unwrap_key(wrapped.stdout.strip(), env.key_id) == key

    from_python = python_client.wrap_key(key, env.key_id)
    malformed = ["not base64!", "e30=", "A" * 5000,  # e30= is {}
                 base64.b64encode(b'{"v":2,"wdk":"AA==","n":"AA==","c":"AA=="}').decode()]
    result = java("org.ppml.parquet.KeyWrapCli", "unwrap-digest", env.kms, env.key_id, from_python, *malformed,
                  env=child_env)
    assert result.returncode == 1
    digest, *refused = result.stdout.splitlines()
    assert digest == "ok " + hashlib.sha256(key).hexdigest()
    assert len(refused) == len(malformed)
    for line in refused:
        assert line.startswith("error ppml: InvalidCiphertext") and "Exception" not in line, line
    # Bound to the master key id (the GCM associated data).
    other = env.store.create_primary_key().key_id
    moved = java("org.ppml.parquet.KeyWrapCli", "unwrap-digest", env.kms, other, from_python, env=child_env)
    assert moved.returncode == 1 and moved.stdout.startswith("error ppml: "), moved.stdout + moved.stderr


def test_a_jvm_without_the_agent_says_to_run_under_ppml_submit(env: Env) -> None:
    child_env = {k: v for k, v in os.environ.items() if k != AGENT_ENV}
    result = java("org.ppml.parquet.KeyWrapCli", "wrap", env.kms, env.key_id, "00" * 32, env=child_env)
    assert result.returncode == 1
    assert "no key agent" in result.stdout and "ppml submit" in result.stdout, result.stdout + result.stderr


# -- which KMS ------------------------------------------------------------------------------------


def test_the_kms_comes_from_the_configuration_never_from_the_file(spark: Any, env: Env) -> None:
    # A file whose key material names another KMS instance (as an altered footer could).
    import pyarrow.parquet.encryption as pe

    from ppml.tabular.parquet import crypto_factory

    directory = env.root / "names-another-kms"
    directory.mkdir()
    properties = crypto_factory(env.store).file_encryption_properties(
        pe.KmsConnectionConfig(kms_instance_id="ppml+https://attacker.invalid:8443"),
        pe.EncryptionConfiguration(footer_key=env.key_id, uniform_encryption=True, data_key_length_bits=256))
    pq.write_table(env.table, directory / "people.parquet", encryption_properties=properties)
    # The configured KMS is the one asked (here one without the key), not the file's.
    elsewhere = LocalKeyStore(env.root / "elsewhere")
    elsewhere.create_primary_key()
    with pytest.raises(Exception) as excinfo:
        native_read(spark, elsewhere.uri).parquet(str(directory)).collect()
    assert "ppml: KeyNotFound" in error_text(excinfo) and elsewhere.uri in error_text(excinfo)
    assert "attacker" not in error_text(excinfo)
    # With none configured, parquet-mr would take the file's; ppml's client refuses to start.
    with pytest.raises(Exception) as excinfo:
        native_read(spark, None).parquet(str(directory)).collect()
    assert "no KMS configured" in error_text(excinfo)
    assert rows(native_read(spark, env.kms).parquet(str(directory))) == table_rows(env.table)


# -- bad input ------------------------------------------------------------------------------------


def damaged_copy(env: Env, name: str, change: Any) -> Path:
    directory = env.root / name
    directory.mkdir()
    source = parquet_files(env.pyarrow_dir)[0]
    data = bytearray(source.read_bytes())
    (directory / source.name).write_bytes(bytes(change(data)))
    return directory


def flip(offset_from: str) -> Any:
    def change(data: bytearray) -> bytearray:
        footer_length = int.from_bytes(data[-8:-4], "little")
        position = len(data) // 3 if offset_from == "column" else len(data) - 8 - footer_length // 2
        data[position] ^= 0x01
        return data
    return change


@pytest.mark.parametrize("where", ["column", "footer"])
def test_a_tampered_file_fails_the_read_with_no_rows(spark: Any, env: Env, where: str) -> None:
    directory = damaged_copy(env, f"tampered-{where}", flip(where))
    with pytest.raises(Exception) as excinfo:
        native_read(spark, env.kms).parquet(str(directory)).collect()
    text = error_text(excinfo)
    assert "tag check failed" in text.lower() or "InvalidCiphertext" in text, text


def test_a_truncated_file_fails_the_read_with_no_rows(spark: Any, env: Env) -> None:
    directory = damaged_copy(env, "truncated", lambda data: data[: len(data) // 2])
    with pytest.raises(Exception) as excinfo:
        native_read(spark, env.kms, **{jvm.ENCRYPTION_REQUIRED: "true"}).parquet(str(directory)).collect()
    assert "ppml: InvalidCiphertext" in error_text(excinfo)
    with pytest.raises(Exception) as excinfo:  # without the requirement: parquet-mr's own refusal
        native_read(spark, env.kms).parquet(str(directory)).collect()
    assert str(directory) in error_text(excinfo), error_text(excinfo)


def test_a_key_the_kms_refuses_fails_before_any_task_reads_data(spark: Any, env: Env) -> None:
    gone = env.store.create_primary_key().key_id
    directory = env.root / "refused"
    directory.mkdir()
    write_encrypted_table(env.table, directory / "people.parquet", kms=env.store, footer_key=gone)
    (env.store.directory / f"{gone}.key").unlink()
    # Spark reads the footer to learn the schema when the DataFrame is made: it fails there.
    with pytest.raises(Exception) as excinfo:
        native_read(spark, env.kms).parquet(str(directory))
    assert "ppml: KeyNotFound" in error_text(excinfo), error_text(excinfo)


# -- plaintext where encrypted data was expected --------------------------------------------------


def test_a_plaintext_file_is_refused_where_the_read_requires_encryption(spark: Any, env: Env) -> None:
    directory = env.root / "plaintext"
    directory.mkdir()
    pq.write_table(env.table, directory / "people.parquet")
    assert b"Developer" in (directory / "people.parquet").read_bytes()  # what the checks above look for
    plaintext_footer = env.root / "plaintext-footer"
    native_write(spark.createDataFrame(env.table.to_pandas()).coalesce(1), env.kms,
                 **{"parquet.encryption.footer.key": env.key_id,
                    "parquet.encryption.plaintext.footer": "true"}).parquet(str(plaintext_footer))
    assert parquet_files(plaintext_footer)[0].read_bytes()[-4:] == b"PAR1"
    for path in (directory, plaintext_footer):
        for required in ({jvm.ENCRYPTION_REQUIRED: "true"}, {"parquet.encryption.footer.key": env.key_id}):
            with pytest.raises(Exception) as excinfo:
                native_read(spark, env.kms, **required).parquet(str(path)).collect()
            assert "ppml: InvalidCiphertext" in error_text(excinfo) and "is not PME Parquet" in error_text(excinfo)
    # In the same session, reads that do not require encryption take plaintext Parquet as before,
    # and the encrypted files still read when encryption is required.
    assert rows(native_read(spark, env.kms).parquet(str(directory))) == table_rows(env.table)
    assert rows(spark.read.parquet(str(directory))) == table_rows(env.table)
    required = native_read(spark, env.kms, **{"parquet.encryption.footer.key": env.key_id})
    assert required.parquet(str(env.pyarrow_dir)).count() == ROWS
