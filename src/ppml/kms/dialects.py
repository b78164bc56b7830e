"""What differs between SQLite and PostgreSQL for the KMS's hot statements, chosen once at open.

The KMS service speaks to its database through SQLAlchemy everywhere, except in the few
statements of the data-key path whose round trips set its throughput. There each backend has its
own implementation of :class:`KmsDialect` (Flower's link-state factory is the model): SQLite runs
plain statements on the event loop; PostgreSQL folds work into single statements (CTEs) because
every statement is a network round trip. :func:`dialect_for` picks one from the storage URL; the
service and the HTTP layer never ask which they got.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ppml.errors import ServiceUnavailable, UsageError
from ppml.kms import storage as db
from ppml.store import Storage

__all__ = ["DIALECTS", "KmsDialect", "PostgresDialect", "SqliteDialect", "dialect_for"]

#: Audit head: (sequence number, MAC of the last record).
Head = tuple[int, bytes]
_AUDIT_COLUMNS: Final = ("seq", "time", "appid", "operation", "key_id", "key_version", "outcome",
                          "request_id", "claims", "prev_mac", "mac")
# Statements built once: building SQLAlchemy constructs per call cost more than the SQL itself.
_SELECT_KEYS = select(db.keys).where(db.keys.c.key_id.in_(bindparam("key_ids", expanding=True)))
_SELECT_HEAD = select(db.audit_head.c.seq, db.audit_head.c.mac).where(db.audit_head.c.id == 1).with_for_update()
_INSERT_AUDIT = insert(db.audit)
_UPDATE_HEAD = (
    update(db.audit_head).where(db.audit_head.c.id == 1)
    .values(seq=bindparam("new_seq"), mac=bindparam("new_mac"))
)


class KmsDialect(Protocol):
    """The backend-specific statements of the KMS."""

    #: Run short database work on the event loop (SQLite: serialised and fast) instead of a thread.
    runs_inline: bool

    def insert_stamps(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
        """Insert replay stamps, skipping ones already there; returns the (appid, stamp) inserted."""
        ...

    def begin_batch(self, conn: Connection, key_ids: Sequence[str]) -> tuple[dict[str, Any], Head | None]:
        """Load the well-formed ``key_ids``' rows by id; the audit head too where that saves a round
        trip (else None: :meth:`read_head` reads it when a record is appended)."""
        ...

    def read_head(self, conn: Connection) -> Head:
        """The audit head, locked for this transaction."""
        ...

    def append_audit(self, conn: Connection, records: Sequence[Mapping[str, Any]], head: Head) -> None:
        """Insert audit ``records`` and move the head to ``head``."""
        ...


class _Dialect:
    """What both dialects share: the stamp insert differs only by the dialect's INSERT construct."""

    def __init__(self, dialect_insert: Any) -> None:
        self._insert_stamps = dialect_insert(db.replay).on_conflict_do_nothing().returning(
            db.replay.c.appid, db.replay.c.stamp)

    def insert_stamps(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> set[tuple[str, str]]:
        return {(r[0], r[1]) for r in conn.execute(self._insert_stamps, list(params))}

    def read_head(self, conn: Connection) -> Head:
        row = conn.execute(_SELECT_HEAD).one()
        return int(row.seq), bytes(row.mac)


class SqliteDialect(_Dialect):
    """SQLite: plain statements (each is a function call, not a round trip)."""

    runs_inline = True

    def __init__(self) -> None:
        super().__init__(sqlite_insert)

    def begin_batch(self, conn: Connection, key_ids: Sequence[str]) -> tuple[dict[str, Any], Head | None]:
        if not key_ids:
            return {}, None
        return {row.key_id: row for row in conn.execute(_SELECT_KEYS, {"key_ids": list(key_ids)})}, None

    def append_audit(self, conn: Connection, records: Sequence[Mapping[str, Any]], head: Head) -> None:
        conn.execute(_INSERT_AUDIT, list(records))
        conn.execute(_UPDATE_HEAD, {"new_seq": head[0], "new_mac": head[1]})


#: Lock and read the audit head and read the keys ``= ANY(%s)``: one PostgreSQL statement, rows
#: tagged h / k.
_PG_BEGIN_SQL: Final = (
    "WITH head AS (SELECT seq, mac FROM audit_head WHERE id = 1 FOR UPDATE) "
    "SELECT 'h' AS kind, head.seq, head.mac, NULL::json AS key FROM head "
    "UNION ALL SELECT 'k', NULL, NULL, row_to_json(keys) FROM keys WHERE key_id = ANY(%s)"
)


class PostgresDialect(_Dialect):
    """PostgreSQL: a batch's keys and audit head in one statement, its audit records and the new
    head in another (data-modifying CTEs), where separate statements would each cost a round trip."""

    runs_inline = False

    def __init__(self) -> None:
        super().__init__(pg_insert)

    def begin_batch(self, conn: Connection, key_ids: Sequence[str]) -> tuple[dict[str, Any], Head | None]:
        keys: dict[str, Any] = {}
        head: Head | None = None
        for kind, seq, mac, key in conn.exec_driver_sql(_PG_BEGIN_SQL, (list(key_ids),)):
            if kind == "h":
                head = (int(seq), bytes(mac))
            else:
                keys[key["key_id"]] = _key_row(key)
        if head is None:
            raise ServiceUnavailable("storage", "the audit head row is missing")
        return keys, head

    def append_audit(self, conn: Connection, records: Sequence[Mapping[str, Any]], head: Head) -> None:
        conn.exec_driver_sql(_pg_append_sql(len(records)), tuple(
            [value for record in records for value in (record[c] for c in _AUDIT_COLUMNS)] + [head[0], head[1]]
        ))


def _key_row(key: dict[str, Any]) -> Any:
    """A ``keys`` row from its ``row_to_json`` (timestamps arrive as ISO 8601 text)."""
    row = dict(key)
    for name in ("created", "deletion_time"):
        if row[name] is not None:
            row[name] = datetime.fromisoformat(row[name])
    return types.SimpleNamespace(**row)


@functools.lru_cache(maxsize=256)
def _pg_append_sql(rows: int) -> str:
    """``rows`` audit records and the head update in one PostgreSQL statement (psycopg's %s)."""
    row = "(" + ", ".join(["%s"] * len(_AUDIT_COLUMNS)) + ")"
    return (
        f"WITH appended AS (INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) VALUES "
        + ", ".join([row] * rows)
        + ") UPDATE audit_head SET seq = %s, mac = %s WHERE id = 1"
    )


DIALECTS: Final[Mapping[str, Callable[[], KmsDialect]]] = {"sqlite": SqliteDialect, "postgresql": PostgresDialect}


def dialect_for(storage: Storage) -> KmsDialect:
    """The KMS dialect for ``storage``'s database (chosen once, when the service opens)."""
    factory = DIALECTS.get(storage.dialect_name)
    if factory is None:
        raise UsageError(f"no KMS dialect for {storage.dialect_name!r} databases")
    return factory()
