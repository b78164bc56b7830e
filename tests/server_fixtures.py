"""Session fixtures for real servers (loaded by conftest.py's ``pytest_plugins``: request them
by name; do not import them, which would start a second instance)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from servers import MotoS3Server, PostgresCluster

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole session (about a second to start)."""
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


def new_database(cluster: PostgresCluster, prefix: str = "kms") -> str:
    """A fresh, empty database on the session cluster; returns its URL."""
    return cluster.create_database(f"{prefix}_{next(_names)}")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3Server]:
    """One S3-compatible server (moto's, as a process on loopback) for the whole session."""
    server = MotoS3Server()
    try:
        yield server
    finally:
        server.stop()
