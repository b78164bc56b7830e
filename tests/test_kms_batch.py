"""Group commit: data-key operations that share one transaction keep their own outcomes.

``KmsService.run_data_key_batch`` is what the server's batcher calls with whatever requests arrived
together, so every mix is tested here directly, on SQLite and on PostgreSQL: an unknown or foreign
key, a disabled key, wrong associated data, a garbled ciphertext and a release-policy key beside
successful requests, each failure audited with its outcome; a storage fault failing the whole
batch with nothing written. Replay stamps are spent in batches too, when requests are
authenticated (``KmsService.spend_replay_stamps``): a stamp already in the database or repeated
within a batch is a replay, and a storage fault spends none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy import exc as sa_exc

from ppml.errors import (
    InvalidCiphertext,
    KeyDisabled,
    KeyNotFound,
    PermissionDenied,
    ServiceUnavailable,
)
from ppml.kms import storage as db
from ppml.kms.service import KmsService
from ppml.kms.types import DataKeyRequest, RequestContext
from server_fixtures import new_database
from servers import PostgresCluster


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KmsService]:
    url = None
    if request.param == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
        url = new_database(cluster, "batch")
    kms, _ = KmsService.open(data_dir=tmp_path / "kms", db_url=url)
    yield kms
    kms.close()


def ctx(appid: str, stamp: str | None = None) -> RequestContext:
    return RequestContext(appid=appid, request_id=uuid.uuid4().hex,
                          replay_stamp=f"n:{stamp or os.urandom(16).hex()}", replay_expires=int(time.time()) + 1200)


@contextlib.contextmanager
def connection_drops_at(service: KmsService, marker: str) -> Iterator[None]:
    """The database connection drops at the first statement containing ``marker``."""

    def drop(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if marker in statement:
            raise sa_exc.OperationalError(statement, parameters, ConnectionError("server closed the connection"))

    engines = {service.storage.engine, service.storage._relaxed_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", drop)
    try:
        yield
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", drop)


def audit_outcomes(kms: KmsService, request_ids: list[str]) -> dict[str, tuple[str, str]]:
    records = kms.audit_records(limit=1000)
    return {r["request_id"]: (r["operation"], r["outcome"]) for r in records if r["request_id"] in request_ids}


def test_each_request_in_a_batch_keeps_its_own_outcome(service: KmsService) -> None:
    alice, bob = service.enroll().appid, service.enroll().appid
    key = service.create_key(RequestContext(appid=alice)).key_id
    disabled = service.create_key(RequestContext(appid=alice)).key_id
    service.set_enabled(RequestContext(appid=alice), disabled, False)
    gated = service.create_key(RequestContext(appid=alice), release_policy={"policy_ids": ["p"]}).key_id
    bobs = service.create_key(RequestContext(appid=bob)).key_id
    _, wrapped = service.generate_data_key(ctx(alice), key, aad=b"right", with_plaintext=False)
    _, gated_wrapped = service.generate_data_key(ctx(alice), gated, with_plaintext=False)
    requests = [
        DataKeyRequest.generate(ctx(alice), key, with_plaintext=False),       # ok
        DataKeyRequest.generate(ctx(alice), key),                             # ok
        DataKeyRequest.generate(ctx(alice), bobs),                            # another tenant's key
        DataKeyRequest.generate(ctx(alice), str(uuid.uuid4())),               # unknown key
        DataKeyRequest.encrypt(ctx(alice), disabled, b"secret"),              # disabled
        DataKeyRequest.decrypt(ctx(alice), key, wrapped, b"wrong"),           # wrong aad
        DataKeyRequest.decrypt(ctx(alice), key, wrapped[:-1] + bytes([wrapped[-1] ^ 1]), b"right"),  # garbled
        DataKeyRequest.decrypt(ctx(alice), gated, gated_wrapped),             # needs attestation
        DataKeyRequest.decrypt(ctx(alice), key, wrapped, b"right"),           # ok
        DataKeyRequest.encrypt(ctx(bob), bobs, b"bob's"),                     # ok, other app
    ]
    results = service.run_data_key_batch(requests)
    kinds = [type(r) if isinstance(r, Exception) else bytes for r in results]
    assert kinds == [bytes, bytes, KeyNotFound, KeyNotFound, KeyDisabled,
                     InvalidCiphertext, InvalidCiphertext, PermissionDenied, bytes, bytes]
    # The results are the requests' own: the decrypt returns the key wrapped earlier, the
    # wrapped keys unwrap to what each request generated.
    unwrapped = results[8]
    assert isinstance(unwrapped, bytes) and len(unwrapped) == 32
    for index in (0, 1):
        result = results[index]
        assert isinstance(result, bytes)
        assert service.decrypt(ctx(alice), key, result) == requests[index].data
    assert service.decrypt(ctx(bob), bobs, results[9]) == b"bob's"  # type: ignore[arg-type]

    # Every request has an audit record with its outcome.
    outcomes = audit_outcomes(service, [r.ctx.request_id for r in requests])
    expected = {
        0: ("GenerateDataKeyWithoutPlaintext", "ok"), 1: ("GenerateDataKey", "ok"),
        2: ("GenerateDataKey", "KeyNotFound"), 3: ("GenerateDataKey", "KeyNotFound"),
        4: ("Encrypt", "KeyDisabled"), 5: ("Decrypt", "InvalidCiphertext"), 6: ("Decrypt", "InvalidCiphertext"),
        7: ("Decrypt", "PermissionDenied"), 8: ("Decrypt", "ok"), 9: ("Encrypt", "ok"),
    }
    assert outcomes == {requests[i].ctx.request_id: v for i, v in expected.items()}
    assert service.verify_audit().ok


def test_replay_stamps_are_spent_once_in_a_batch(service: KmsService) -> None:
    alice, bob = service.enroll().appid, service.enroll().appid
    spent = ctx(alice)
    assert service.spend_replay_stamps([spent]) == [True]  # its stamp is now in the database
    twice = os.urandom(16).hex()
    contexts = [
        ctx(alice),                                               # fresh
        dataclasses.replace(spent, request_id="replayed"),        # replay (database)
        ctx(alice, twice),                                        # fresh
        ctx(alice, twice),                                        # replay (same batch)
        ctx(bob, twice),                                          # fresh: stamps are per app
        RequestContext(appid=alice, request_id="in-process"),     # no stamp: nothing to check
    ]
    assert service.spend_replay_stamps(contexts) == [True, False, True, False, True, True]
    # Spent stamps stay spent, whatever happened to their requests afterwards.
    assert service.spend_replay_stamps(contexts[:5]) == [False] * 5
    assert service.spend_replay_stamps([]) == []


def test_a_storage_fault_spends_no_stamp(service: KmsService) -> None:
    appid = service.enroll().appid
    contexts = [ctx(appid) for _ in range(3)]

    with connection_drops_at(service, "INSERT INTO replay"), \
            pytest.raises(ServiceUnavailable, match="storage unavailable"):
        service.spend_replay_stamps(contexts)
    assert service.spend_replay_stamps(contexts) == [True] * 3


def test_an_empty_and_a_large_batch(service: KmsService) -> None:
    appid = service.enroll().appid
    key = service.create_key(RequestContext(appid=appid)).key_id
    assert service.run_data_key_batch([]) == []
    requests = [DataKeyRequest.generate(ctx(appid), key, aad=str(i).encode()) for i in range(300)]
    results = service.run_data_key_batch(requests)
    assert all(isinstance(r, bytes) for r in results)
    for request, wrapped in list(zip(requests, results))[::37]:
        assert service.decrypt(ctx(appid), key, wrapped, request.aad) == request.data  # type: ignore[arg-type]
    report = service.verify_audit()
    assert report.ok and report.records >= 300


def test_a_storage_fault_fails_the_whole_batch_and_writes_nothing(service: KmsService) -> None:
    appid = service.enroll().appid
    key = service.create_key(RequestContext(appid=appid)).key_id
    with service.storage.transaction() as conn:
        before = conn.execute(select(func.count()).select_from(db.audit)).scalar_one()
    requests = [DataKeyRequest.generate(ctx(appid), key) for _ in range(3)]

    # The connection drops at the batch's last statement, the audit append.
    with connection_drops_at(service, "INSERT INTO audit"):
        results = service.run_data_key_batch(requests)
    assert all(isinstance(r, ServiceUnavailable) and r.service == "storage" for r in results), results
    with service.storage.transaction() as conn:
        assert conn.execute(select(func.count()).select_from(db.audit)).scalar_one() == before
    # Nothing was written: the same requests go through once storage is back.
    assert all(isinstance(r, bytes) for r in service.run_data_key_batch(requests))
    assert service.verify_audit().ok


def test_a_batch_with_no_well_formed_key_id(service: KmsService) -> None:
    appid = service.enroll().appid
    results = service.run_data_key_batch([DataKeyRequest.generate(ctx(appid), "k" * 65),
                                          DataKeyRequest.generate(ctx(appid), "")])
    assert [type(r) for r in results] == [KeyNotFound, KeyNotFound]
    assert service.verify_audit().ok
