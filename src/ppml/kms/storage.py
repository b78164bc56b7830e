"""The KMS's tables (in the database of :class:`ppml.store.Storage`).

Schema (version 1)::

    apps          appid PK, apikey_sealed, role, created, enabled
    keys          key_id PK, owner → apps, keyspec, origin, description, state,
                  deletion_time, current_version, created, release_policy (JSON, for attestation)
    key_versions  (key_id, version) PK, material_sealed, created
    audit         seq PK, time, appid, operation, key_id, key_version, outcome, request_id,
                  claims (JSON), prev_mac, mac
    audit_head    id PK (= 1), seq, mac                 the chain's end, updated with each append
    replay        (appid, stamp) PK, expires            used request timestamps/nonces

The audit chain stays linear because appends are serialised: SQLite serialises all writers, and
on PostgreSQL each append locks the ``audit_head`` row.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from ppml.store import Storage, meta

__all__ = ["MIGRATIONS", "Storage", "meta", "migrate"]

metadata = MetaData()

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



def _migrate_to_1(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)
    if conn.execute(audit_head.select().where(audit_head.c.id == 1)).first() is None:
        conn.execute(audit_head.insert().values(id=1, seq=0, mac=b"\0" * 32))


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _migrate_to_1}


def migrate(storage: Storage) -> int:
    return storage.migrate("kms", MIGRATIONS)

__all__ += ["apps", "audit", "audit_head", "key_versions", "keys", "replay"]
