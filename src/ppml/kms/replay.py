"""Replay stamps: how a signed request's timestamp/nonce becomes a row that can be inserted once."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from ppml.kms.types import RequestContext

__all__ = ["stamp_rows"]


def stamp_rows(
    contexts: Sequence[RequestContext],
) -> tuple[list[bool], dict[tuple[str, str], int], list[dict[str, Any]]]:
    """(fresh so far, {(appid, hashed stamp): index}, insert parameters); a stamp repeated within
    ``contexts`` is a replay already."""
    fresh = [True] * len(contexts)
    rows: dict[tuple[str, str], int] = {}
    params = []
    for index, ctx in enumerate(contexts):
        if ctx.replay_stamp is None:
            continue
        # Stamps are hashed to a fixed width: they embed client-chosen nonces of any length.
        row = (ctx.appid[:64], hashlib.sha256(ctx.replay_stamp.encode()).hexdigest())
        if row in rows:
            fresh[index] = False
            continue
        rows[row] = index
        params.append({"appid": row[0], "stamp": row[1], "expires": ctx.replay_expires})
    return fresh, rows, params
