"""Storage for ppml's services through SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL
for replicas. Shared by the KMS and the attestation service, which each own their tables and
migrations; this module owns the engine, transactions and the ``meta`` table::

    meta    name PK, value     schema_version:<component>, root-key salt and check, ...

Migrations run forward on start, one transaction per version. Write transactions are serialised
(``BEGIN IMMEDIATE`` plus a thread lock and, across ``ppml serve --workers`` processes, a file lock
on SQLite; row locks where needed on PostgreSQL).
Database faults become the neutral ``ServiceUnavailable`` (HTTP 503) at this boundary: the store is
shared by the KMS and the attestation service.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Engine, LargeBinary, MetaData, String, Table, create_engine, event, select
from sqlalchemy import exc as sa_exc

from ppml.core.rootkey import RootKey, from_passphrase_file, load_or_create_key_file
from ppml.errors import InvalidCiphertext, RequestRejected, RootKeyMismatch, ServiceUnavailable, UsageError

__all__ = ["Storage", "meta", "open_database"]

meta_metadata = MetaData()
meta = Table("meta", meta_metadata, Column("name", String(64), primary_key=True),
             Column("value", LargeBinary, nullable=False))


class Storage:
    """An engine plus the schema; hands out transactions and maps database faults to ppml errors."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._writer_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        )
        # SQLite file: writers in other processes (ppml serve --workers N) queue on a file lock.
        database = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
        self._lock_path = Path(database + ".writer-lock") if database and database != ":memory:" else None
        self._lock_file: tuple[int, int] | None = None  # (pid, fd): a lock file is per process
        self._database = Path(database) if self._lock_path is not None else None
        self._checkpointer: _Checkpointer | None = None
        try:
            if self.is_sqlite:
                self.engine: Engine = create_engine(
                    url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8
                )
                event.listen(self.engine, "connect", self._sqlite_on_connect)
                event.listen(self.engine, "begin", _sqlite_on_begin)
                self._relaxed_engine = self.engine  # SQLite: synchronous is set per transaction
            elif url.startswith("postgresql"):
                if url.startswith("postgresql://"):
                    url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
                self.engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
                # Data-key transactions: sessions that do not wait for the commit on disk (the
                # setting per session saves a round trip per transaction over SET LOCAL), and no
                # ping before each transaction (another round trip): after a database restart the
                # first transaction on a stale connection fails (503) and SQLAlchemy recycles the
                # whole pool, so one batch pays instead of every one.
                self._relaxed_engine = create_engine(
                    url, pool_size=4, max_overflow=8, pool_pre_ping=False,
                    connect_args={"options": "-c synchronous_commit=off"},
                )
            else:
                raise UsageError(f"unsupported database URL {_redact(url)!r}: use sqlite:/// or postgresql://")
        except ModuleNotFoundError as exc:
            raise UsageError(f"{exc.name} is not installed: pip install 'ppml[postgres]'") from None

    @property
    def dialect_name(self) -> str:
        """The database's SQLAlchemy dialect: ``sqlite`` or ``postgresql``."""
        return str(self.engine.dialect.name)

    @classmethod
    def sqlite_in(cls, directory: Path) -> Storage:
        return cls(f"sqlite:///{directory / 'kms.db'}")

    @property
    def display_url(self) -> str:
        return _redact(self.url)

    def create_meta(self) -> None:
        """Create the ``meta`` table (schema versions, sealed service secrets) if it is missing."""
        meta_metadata.create_all(self.engine, checkfirst=True)

    def migrate(self, component: str, migrations: Mapping[int, Callable[[Connection], None]]) -> int:
        """Bring ``component``'s schema forward (versions 1..max of ``migrations``, each in its
        own transaction); returns the version now in place."""
        target = max(migrations)
        self.create_meta()
        name = f"schema_version:{component}"
        while True:
            with self.transaction() as conn:
                row = conn.execute(select(meta.c.value).where(meta.c.name == name)).first()
                current = int(row[0]) if row else 0
                if current > target:
                    raise UsageError(
                        f"the database has {component} schema version {current}, newer than this ppml ({target})"
                    )
                if current == target:
                    return target
                migrations[current + 1](conn)
                self._set_meta(conn, name, str(current + 1).encode())

    @staticmethod
    def _set_meta(conn: Connection, name: str, value: bytes) -> None:
        updated = conn.execute(meta.update().where(meta.c.name == name).values(value=value)).rowcount
        if not updated:
            conn.execute(meta.insert().values(name=name, value=value))

    def get_meta(self, conn: Connection, name: str) -> bytes | None:
        row = conn.execute(select(meta.c.value).where(meta.c.name == name)).first()
        return bytes(row[0]) if row else None

    def set_meta(self, conn: Connection, name: str, value: bytes) -> None:
        self._set_meta(conn, name, value)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Connection]:
        """A read-write transaction; database faults become ``ServiceUnavailable`` (HTTP 503).

        ``durable=False`` commits without waiting for the disk (SQLite WAL synchronous=NORMAL,
        PostgreSQL synchronous_commit=off): the commit survives a killed server process but may be
        lost with the machine's power (PostgreSQL: with a crash of the database server). Used for
        data-key operations, whose loss loses no key; keys and apps are always durable.
        """
        with self._connection(durable=durable, autocommit=False) as conn:
            yield conn

    @contextmanager
    def statements(self) -> Iterator[Connection]:
        """Statements that are each atomic on their own, without waiting for the disk: on
        PostgreSQL in autocommit (no BEGIN/COMMIT round trips around a single statement), on
        SQLite in a ``durable=False`` transaction. Faults map as in :meth:`transaction`."""
        with self._connection(durable=False, autocommit=not self.is_sqlite) as conn:
            yield conn

    @contextmanager
    def _connection(self, *, durable: bool, autocommit: bool) -> Iterator[Connection]:
        try:
            # SQLite serialises writers anyway; queueing threads on a lock here wakes them at
            # once, where SQLite's busy handler would sleep and retry (p99 of tens of ms).
            engine = self.engine if durable else self._relaxed_engine
            with self._writer_lock, self._process_lock(), engine.connect() as conn:
                if self.is_sqlite:
                    # Set only when it changes: a statement per transaction otherwise.
                    synchronous = "FULL" if durable else "NORMAL"
                    if conn.connection.info.get("synchronous") != synchronous:
                        raw = conn.connection.dbapi_connection
                        assert raw is not None
                        raw.execute(f"PRAGMA synchronous={synchronous}")
                        conn.connection.info["synchronous"] = synchronous
                if autocommit:
                    yield conn.execution_options(isolation_level="AUTOCOMMIT")
                else:
                    with conn.begin():
                        yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            raise ServiceUnavailable("storage", _describe(exc)) from None
        except sa_exc.DataError as exc:
            raise RequestRejected(f"a value does not fit the database: {_describe(exc)}") from None

    @contextmanager
    def _process_lock(self) -> Iterator[None]:
        """Serialise SQLite writers across processes: a blocked ``flock`` wakes as soon as the
        lock is free, where SQLite's busy handler sleeps and retries (milliseconds each)."""
        if self._lock_path is None:
            yield
            return
        if self._lock_file is None or self._lock_file[0] != os.getpid():
            # Opened per process: flock locks belong to the open file, which a fork would share.
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._lock_file = (os.getpid(), fd)
        fd = self._lock_file[1]
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def checkpoint_in_background(self, interval: float = 0.5) -> None:
        """SQLite: move WAL checkpoints off the request path (for the server).

        By default the transaction that commits the 1000th WAL page copies the WAL into the
        database and syncs it, holding up that writer (and, with batches on the event loop,
        every request in flight) for the length of an fsync: measured as the p99 of the KMS
        benchmark. Here this process's connections stop checkpointing and a thread with its own
        connection runs a PASSIVE checkpoint (it blocks no reader or writer) every ``interval``
        seconds, with the GIL released while SQLite works. Durability is unchanged: a commit is
        in the WAL before it is acknowledged, whoever copies it on. No-op for PostgreSQL and
        in-memory databases; safe to call twice.
        """
        if self._database is None or self._checkpointer is not None:
            return
        self._checkpointer = _Checkpointer(self._database, interval)
        # Connections already in the pool keep their setting until they are replaced.
        self.engine.dispose()

    def _sqlite_on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        _sqlite_on_connect(dbapi_connection, _record)
        if self._checkpointer is not None:
            dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.engine.dispose()
        self._relaxed_engine.dispose()
        if self._lock_file is not None and self._lock_file[0] == os.getpid():
            os.close(self._lock_file[1])
        self._lock_file = None


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of pysqlite's own BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: an acknowledged key survives power loss, not just a killed process.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class _Checkpointer:
    """A daemon thread running ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection."""

    def __init__(self, database: Path, interval: float) -> None:
        self._database = database
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ppml-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import logging
        import sqlite3

        log = logging.getLogger("ppml.store")
        connection: sqlite3.Connection | None = None
        while not self._stop.wait(self._interval):
            try:
                if connection is None:
                    connection = sqlite3.connect(self._database, timeout=30, check_same_thread=False,
                                                 isolation_level=None)
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # the next round retries on a fresh connection
                log.warning("ppml store: background WAL checkpoint failed: %s", exc)
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def _describe(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig or exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def open_database(*, data_dir: Path, db_url: str | None = None,
                  passphrase_file: Path | None = None) -> tuple[Storage, RootKey]:
    """The database (``db_url``, or SQLite in ``data_dir``) and the root key that seals its secrets
    (a 0600 key file in ``data_dir``, or a passphrase through scrypt), checked against each other:
    the services (KMS, attestation) then attach to both.

    Raises:
        RootKeyMismatch: the database was created under another root key.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    storage = Storage(db_url) if db_url else Storage.sqlite_in(data_dir)
    storage.create_meta()
    with storage.transaction() as conn:
        if passphrase_file is not None:
            salt = storage.get_meta(conn, "root_key_salt")
            if salt is None:
                salt = os.urandom(16)
                storage.set_meta(conn, "root_key_salt", salt)
            root = from_passphrase_file(passphrase_file, salt)
        else:
            root, _ = load_or_create_key_file(data_dir / "root.key")
        check = storage.get_meta(conn, "root_key_check")
        if check is None:
            storage.set_meta(conn, "root_key_check", root.seal(b"ppml-root-key-check", "meta", "root_key_check"))
        else:
            try:
                root.open(check, "meta", "root_key_check")
            except InvalidCiphertext:
                raise RootKeyMismatch(f"the database at {storage.display_url}") from None
    return storage, root
