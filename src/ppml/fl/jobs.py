"""FL jobs on a party's encrypted table: read, run the role, and hand back what to write.

The table is a ppml-encrypted CSV (``ppml.tabular.tables``), decrypted in memory with keys from
the party's KMS (through its attested session). A job returns its output as an Arrow table and
the caller writes it encrypted **after** the round has ended cleanly, so an aborted round leaves
no output at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from ppml.core.keys import DataKeyProvider
from ppml.errors import UsageError
from ppml.fl.alignment import align_role, psi_role
from ppml.fl.channel import Channel
from ppml.tabular.tables import read_csv_table

__all__ = ["id_column_of", "read_party_table", "run_alignment", "run_psi"]


def read_party_table(path: Path | str, *, kms: DataKeyProvider, id_column: str) -> pa.Table:
    """The party's table, with ``id_column`` read as strings (ids are compared as UTF-8 bytes)."""
    table = read_csv_table(path, kms=kms, column_types={id_column: pa.string()})
    id_column_of(table, id_column)
    return table


def id_column_of(table: pa.Table, id_column: str) -> list[str]:
    if id_column not in table.column_names:
        raise UsageError(f"the table has no column {id_column!r} (columns: {', '.join(table.column_names)})")
    column = table.column(id_column)
    if column.null_count:
        raise UsageError(f"column {id_column!r} has empty ids")
    return [str(value) for value in column.to_pylist()]


def run_psi(channel: Channel, table: pa.Table, *, id_column: str, peer: str, cardinality_only: bool = False,
            workers: int = 1) -> tuple[int, pa.Table | None]:
    """``(size of the intersection, the common ids as a one-column table or None in cardinality mode)``."""
    result = psi_role(channel, id_column_of(table, id_column), peer=peer, cardinality_only=cardinality_only,
                      workers=workers)
    if result.intersection is None:
        return result.cardinality, None
    return result.cardinality, pa.table({id_column: pa.array([str(i) for i in result.intersection], pa.string())})


def run_alignment(channel: Channel, table: pa.Table, *, id_column: str, leader: str, members: Sequence[str],
                  workers: int = 1) -> pa.Table:
    """This party's rows for the ids every party holds, in the order every party gets (duplicates
    of an id keep their first row)."""
    ids = id_column_of(table, id_column)
    ordered = align_role(channel, ids, leader=leader, members=members, workers=workers)
    first_row: dict[str, int] = {}
    for row, value in enumerate(ids):
        first_row.setdefault(value, row)
    return table.take(pa.array([first_row[str(i)] for i in ordered], pa.int64()))
