"""ppml.store: SQLite WAL checkpoints off the request path (``ppml serve``)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import text

from ppml.store import Storage


def _write(storage: Storage, rows: int) -> None:
    for n in range(rows):
        with storage.transaction(durable=False) as conn:
            conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": b"x" * 3000 + n.to_bytes(4, "big")})


def test_the_server_storage_checkpoints_in_a_background_thread(tmp_path: Path) -> None:
    storage = Storage.sqlite_in(tmp_path)
    try:
        with storage.transaction() as conn:
            conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"))
        storage.checkpoint_in_background(interval=0.05)
        storage.checkpoint_in_background(interval=0.05)  # twice: still one thread
        with storage.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        # 1,500 rows of a page each: past the 1,000 WAL pages at which a commit would copy the
        # WAL itself, and a copy made then would leave the file below 1,000 pages.
        _write(storage, 1500)
        database = tmp_path / "kms.db"
        deadline = time.monotonic() + 10
        while database.stat().st_size < 1500 * 4096 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert database.stat().st_size >= 1500 * 4096, "the thread copied every row into the database file"
        with sqlite3.connect(database) as probe:
            assert probe.execute("SELECT count(*) FROM t").fetchone()[0] == 1500
    finally:
        storage.dispose()
    assert storage._checkpointer is None


def test_without_the_server_sqlite_checkpoints_as_usual(tmp_path: Path) -> None:
    storage = Storage.sqlite_in(tmp_path)
    try:
        with storage.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    finally:
        storage.dispose()


def test_background_checkpoints_do_not_apply_to_memory_databases() -> None:
    storage = Storage("sqlite:///:memory:")
    try:
        storage.checkpoint_in_background()
        assert storage._checkpointer is None
    finally:
        storage.dispose()
