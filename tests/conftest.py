"""Fixtures shared by the test suite: a local key store with one primary key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

from ppml.kms.local import LocalKeyStore

# No example database on disk (tests leave no files in the checkout); a failing example is
# printed with a blob that reproduces it (@reproduce_failure).
settings.register_profile("ppml", database=None, deadline=None, print_blob=True)
settings.load_profile("ppml")


@pytest.fixture
def key_store(tmp_path: Path) -> LocalKeyStore:
    """A ``local:`` key store in ``tmp_path/keys`` holding exactly one primary key."""
    store = LocalKeyStore(tmp_path / "keys")
    store.create_primary_key(description="test primary key")
    return store


@pytest.fixture
def key_id(key_store: LocalKeyStore) -> str:
    """The id of the one primary key in :func:`key_store`."""
    (info,) = key_store.list_keys()
    return info.key_id

# Session fixtures for real servers and Spark, declared once so each starts once per session.
pytest_plugins = ["server_fixtures", "spark_fixtures", "process_watch"]
