"""KMS storage through SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL for replicas.

Schema (version 1)::

    meta          name PK, value                      schema_version, root-key salt and check
    apps          appid PK, apikey_sealed, role, created, enabled
    keys          key_id PK, owner → apps, keyspec, origin, description, state,
                  deletion_time, current_version, created, release_policy (JSON, for attestation)
    key_versions  (key_id, version) PK, material_sealed, created
    audit         seq PK, time, appid, operation, key_id, key_version, outcome, request_id,
                  claims (JSON), prev_mac, mac
    audit_head    id PK (= 1), seq, mac                 the chain's end, updated with each append
    replay        (appid, stamp) PK, expires            used request timestamps/nonces

Migrations run forward on start, each in its own transaction; the schema version is in ``meta``.
Write transactions are serialised (``BEGIN IMMEDIATE`` on SQLite; a row lock on ``audit_head`` on
PostgreSQL), which is what keeps the audit chain linear across threads and replicas.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
)
from sqlalchemy import exc as sa_exc

from ppml.errors import KmsUnavailable, UsageError

__all__ = ["Storage", "SCHEMA_VERSION"]

metadata = MetaData()

meta = Table("meta", metadata, Column("name", String(64), primary_key=True), Column("value", LargeBinary, nullable=False))
apps = Table(
    "apps",
    metadata,
    Column("appid", String(64), primary_key=True),
    Column("apikey_sealed", LargeBinary, nullable=False),
    Column("role", String(16), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
)
keys = Table(
    "keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("owner", String(64), ForeignKey("apps.appid"), nullable=False, index=True),
    Column("keyspec", String(32), nullable=False),
    Column("origin", String(32), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("state", String(24), nullable=False),
    Column("deletion_time", DateTime(timezone=True), nullable=True),
    Column("current_version", Integer, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("release_policy", Text, nullable=True),
)
key_versions = Table(
    "key_versions",
    metadata,
    Column("key_id", String(64), ForeignKey("keys.key_id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("material_sealed", LargeBinary, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)
audit = Table(
    "audit",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("appid", String(64), nullable=True),
    Column("operation", String(48), nullable=False),
    Column("key_id", String(64), nullable=True),
    Column("key_version", Integer, nullable=True),
    Column("outcome", String(48), nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("claims", Text, nullable=True),
    Column("prev_mac", LargeBinary, nullable=False),
    Column("mac", LargeBinary, nullable=False),
)
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("mac", LargeBinary, nullable=False),
)
replay = Table(
    "replay",
    metadata,
    Column("appid", String(64), primary_key=True),
    Column("stamp", String(64), primary_key=True),
    Column("expires", BigInteger, nullable=False, index=True),
)

SCHEMA_VERSION = 1


def _migrate_to_1(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)
    conn.execute(audit_head.insert().values(id=1, seq=0, mac=b"\0" * 32))


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _migrate_to_1}


class Storage:
    """An engine plus the schema; hands out transactions and maps database faults to ppml errors."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._writer_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        )
        try:
            if self.is_sqlite:
                self.engine: Engine = create_engine(
                    url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8
                )
                event.listen(self.engine, "connect", _sqlite_on_connect)
                event.listen(self.engine, "begin", _sqlite_on_begin)
            elif url.startswith("postgresql"):
                if url.startswith("postgresql://"):
                    url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
                self.engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
            else:
                raise UsageError(f"unsupported database URL {_redact(url)!r}: use sqlite:/// or postgresql://")
        except ModuleNotFoundError as exc:
            raise UsageError(f"{exc.name} is not installed: pip install 'ppml[postgres]'") from None

    @classmethod
    def sqlite_in(cls, directory: Path) -> Storage:
        return cls(f"sqlite:///{directory / 'kms.db'}")

    @property
    def display_url(self) -> str:
        return _redact(self.url)

    def migrate(self) -> int:
        """Bring the schema forward; returns the version now in place."""
        with self.transaction() as conn:
            if not self.engine.dialect.has_table(conn, "meta"):
                current = 0
            else:
                row = conn.execute(select(meta.c.value).where(meta.c.name == "schema_version")).first()
                current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise UsageError(
                    f"the database has schema version {current}, newer than this ppml ({SCHEMA_VERSION})"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version](conn)
                self._set_meta(conn, "schema_version", str(version).encode())
            return SCHEMA_VERSION

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
        """A read-write transaction; database faults become ``KmsUnavailable`` (HTTP 503).

        ``durable=False`` lets SQLite commit without waiting for fsync (WAL, synchronous=NORMAL):
        the commit survives a killed process but may be lost with the machine's power. Used for
        data-key operations, whose loss loses no key; keys and apps are always durable.
        PostgreSQL commits are always durable.
        """
        try:
            # SQLite serialises writers anyway; queueing threads on a lock here wakes them at
            # once, where SQLite's busy handler would sleep and retry (p99 of tens of ms).
            with self._writer_lock, self.engine.connect() as conn:
                if self.is_sqlite:
                    raw = conn.connection.dbapi_connection
                    assert raw is not None
                    raw.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
                with conn.begin():
                    yield conn
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            raise KmsUnavailable("storage", _describe(exc)) from None

    def dispose(self) -> None:
        self.engine.dispose()


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


__all__ += ["apps", "audit", "audit_head", "key_versions", "keys", "meta", "replay"]
