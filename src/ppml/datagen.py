"""Synthetic data for the SimpleQuery workflow: people.csv with ``name,age,job``.

Rows are generated in vectorised chunks (fixed-width byte rows, then padding dropped), so ten
million rows take a few seconds. Same seed, same file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ppml.core._files import require_output_directory

__all__ = ["JOBS", "PeopleSummary", "generate_people", "write_people"]

JOBS = ("Developer", "Engineer", "Researcher")
_NAME_MIN, _NAME_MAX = 3, 7
_AGE_MIN, _AGE_MAX = 18, 60
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class PeopleSummary:
    rows: int
    developers_20_40: int
    """Rows with job Developer and 20 <= age <= 40: SimpleQuery's answer."""


def _chunk_bytes(rng: np.random.Generator, n: int) -> tuple[bytes, int]:
    name_len = rng.integers(_NAME_MIN, _NAME_MAX + 1, size=n)
    letters = rng.integers(ord("a"), ord("z") + 1, size=(n, _NAME_MAX), dtype=np.uint8)
    age = rng.integers(_AGE_MIN, _AGE_MAX + 1, size=n)
    job = rng.integers(0, len(JOBS), size=n)

    job_width = max(map(len, JOBS))
    job_table = np.zeros((len(JOBS), job_width), dtype=np.uint8)
    for i, name in enumerate(JOBS):
        job_table[i, : len(name)] = np.frombuffer(name.encode(), dtype=np.uint8)
    job_len = np.array([len(j) for j in JOBS])[job]

    # name(7) , age(2) , job(10) \n  -> 22 fixed columns, then mask the unused ones away
    width = _NAME_MAX + 1 + 2 + 1 + job_width + 1
    rows = np.empty((n, width), dtype=np.uint8)
    keep = np.ones((n, width), dtype=bool)
    rows[:, :_NAME_MAX] = letters
    keep[:, :_NAME_MAX] = np.arange(_NAME_MAX) < name_len[:, None]
    col = _NAME_MAX
    rows[:, col] = ord(",")
    rows[:, col + 1] = ord("0") + age // 10
    rows[:, col + 2] = ord("0") + age % 10
    rows[:, col + 3] = ord(",")
    col += 4
    rows[:, col : col + job_width] = job_table[job]
    keep[:, col : col + job_width] = np.arange(job_width) < job_len[:, None]
    rows[:, -1] = ord("\n")
    developers = int(np.count_nonzero((job == 0) & (age >= 20) & (age <= 40)))
    return rows[keep].tobytes(), developers


def write_people(out: BinaryIO, rows: int, *, seed: int | None = None) -> PeopleSummary:
    """Write ``rows`` people (plus the header) as CSV to ``out``."""
    if rows < 0:
        raise ValueError("rows must be non-negative")
    rng = np.random.default_rng(seed)
    out.write(b"name,age,job\n")
    developers = 0
    done = 0
    while done < rows:
        n = min(_CHUNK, rows - done)
        data, count = _chunk_bytes(rng, n)
        out.write(data)
        developers += count
        done += n
    return PeopleSummary(rows=rows, developers_20_40=developers)


def generate_people(path: Path | str, rows: int, *, seed: int | None = None) -> PeopleSummary:
    """Write people.csv to ``path``; returns the row count and SimpleQuery's expected answer."""
    require_output_directory(Path(path))
    with open(path, "wb") as f:
        return write_people(f, rows, seed=seed)
