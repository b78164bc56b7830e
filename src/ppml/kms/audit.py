"""The audit chain: every key operation's record, MAC-chained under a key derived from the root key.

Record MAC (a chain keyed by the root key, so nobody without it can rewrite history)::

    mac(n) = HMAC-SHA256(audit key, mac(n-1) ‖ canonical(seq, time, appid, operation, key id,
                                                          key version, outcome, request id, claims))

Known limit: someone with write access to the database can roll back the tail of the chain and
its head together; detecting that needs an anchor outside the database.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from ppml.core.rootkey import canonical
from ppml.kms.types import AuditReport, RequestContext, utc

__all__ = ["FIELDS", "AuditEntry", "chain", "record_bytes", "verify_chain"]

#: The fields a record's MAC covers, in order.
FIELDS: Final = ("seq", "time", "appid", "operation", "key_id", "key_version", "outcome", "request_id", "claims")
#: (who, operation, key id, key version, outcome) of one audited operation.
AuditEntry = tuple[RequestContext, str, str | None, int | None, str]
_GENESIS: Final = b"\0" * 32


def record_bytes(record: dict[str, Any]) -> bytes:
    when: datetime = record["time"]
    return canonical(
        record["seq"], when.astimezone(UTC).isoformat(timespec="microseconds"), record["appid"] or "",
        record["operation"], record["key_id"] or "", record["key_version"] or 0, record["outcome"],
        record["request_id"] or "", record["claims"] or "",
    )


def chain(entries: Sequence[AuditEntry], head: tuple[int, bytes], *, when: datetime,
          mac: Callable[[bytes], bytes]) -> tuple[list[dict[str, Any]], tuple[int, bytes]]:
    """The rows for ``entries`` appended after ``head``, and the new head."""
    seq, prev = head
    records = []
    for ctx, operation, key_id, key_version, outcome in entries:
        seq += 1
        claims = json.dumps(ctx.claims, sort_keys=True) if ctx.claims else None
        # Values are cut to their column widths: ids arrive from clients and may be any length.
        record = dict(
            seq=seq, time=when, appid=(ctx.appid or "")[:64] or None, operation=operation[:48],
            key_id=key_id[:64] if key_id else None, key_version=key_version, outcome=outcome[:48],
            request_id=(ctx.request_id or "")[:64] or None, claims=claims,
        )
        record_mac = mac(prev + record_bytes(record))
        records.append({**record, "prev_mac": prev, "mac": record_mac})
        prev = record_mac
    return records, (seq, prev)


def verify_chain(rows: Iterable[Any], head: tuple[int, bytes], *, mac: Callable[[bytes], bytes]) -> AuditReport:
    """Walk the records in sequence order: any altered, deleted, inserted or reordered record (or a
    head that does not match the last one) breaks the chain."""
    prev = _GENESIS
    expected_seq = 1
    count = 0
    for row in rows:
        record = {k: getattr(row, k) for k in FIELDS}
        record["time"] = utc(record["time"])
        if row.seq != expected_seq:
            return AuditReport(count, False, f"record {expected_seq} is missing or out of order", expected_seq)
        if bytes(row.prev_mac) != prev or bytes(row.mac) != mac(prev + record_bytes(record)):
            return AuditReport(count, False, f"record {row.seq} was altered", row.seq)
        prev = bytes(row.mac)
        expected_seq += 1
        count += 1
    if head[0] != count or head[1] != prev:
        return AuditReport(count, False, "records after the last one were deleted", count + 1)
    return AuditReport(count, True)
