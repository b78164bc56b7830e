"""Synthetic data: people.csv with ``name,age,job`` for the SimpleQuery workflow, and tabular
data with a known signal for the ML examples (:func:`generate_tabular`).

Rows are generated in vectorised chunks (fixed-width byte rows, then padding dropped), so ten
million rows take a few seconds. Same seed, same file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ppml.core._files import require_output_directory

__all__ = ["JOBS", "PeopleSummary", "TabularSummary", "generate_people", "generate_tabular", "ranking_auc",
           "write_people", "write_tabular"]

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


@dataclasses.dataclass(frozen=True, slots=True)
class TabularSummary:
    """What :func:`write_tabular` generated, and the best a model can do on it."""

    rows: int
    features: int
    task: str
    oracle: float
    """``classification``: the AUC of the true probabilities on these rows (no model ranks better
    in expectation); ``regression``: the noise's standard deviation (the best RMSE)."""
    signal_std: float = 0.0
    """The standard deviation of the signal ``x·w`` (``|w|``, the features being standard normal):
    for regression, the RMSE of a model that predicts the mean."""


def ranking_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney, ties averaged)."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(np.asarray(scores)[order], return_index=True, return_counts=True)
    ranks = np.empty(len(labels), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based, ties share their mean rank
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both classes")
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _tabular_chunk(rng: np.random.Generator, n: int, weights: np.ndarray, task: str,
                   noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, len(weights)))
    signal = x @ weights
    if task == "classification":
        probability = 1.0 / (1.0 + np.exp(-signal))
        label = (rng.random(n) < probability).astype(np.float64)
        return x, label, probability
    return x, signal + noise * rng.standard_normal(n), signal


def write_tabular(out: BinaryIO, rows: int, *, features: int = 20, task: str = "classification",
                  seed: int | None = None, noise: float = 0.5) -> TabularSummary:
    """Write ``rows`` rows of ``f0..f{features-1},label`` as CSV to ``out``.

    Features are standard normal; the first half carry the signal (fixed weights from the seed),
    the rest are noise. ``classification``: label ~ Bernoulli(sigmoid(x·w)); ``regression``:
    label = x·w + N(0, noise²). The summary's ``oracle`` is what a perfect model would score.
    """
    if rows < 0 or features < 2:
        raise ValueError("rows must be non-negative and features at least 2")
    if task not in ("classification", "regression"):
        raise ValueError("task is classification or regression")
    rng = np.random.default_rng(seed)
    weights = np.zeros(features)
    informative = features // 2
    weights[:informative] = rng.uniform(0.5, 1.5, informative) * rng.choice([-1.0, 1.0], informative)
    out.write((",".join([*(f"f{i}" for i in range(features)), "label"]) + "\n").encode())
    labels, truths = [], []
    done = 0
    while done < rows:
        n = min(_CHUNK // 8, rows - done)
        x, label, truth = _tabular_chunk(rng, n, weights, task, noise)
        table = np.column_stack([x, label])
        formats = ["%.6f"] * features + (["%d"] if task == "classification" else ["%.6f"])
        lines = "\n".join(",".join(f % v for f, v in zip(formats, row, strict=True)) for row in table.tolist())
        out.write(lines.encode() + b"\n")
        labels.append(label)
        truths.append(truth)
        done += n
    oracle = noise
    if task == "classification" and rows:
        oracle = ranking_auc(np.concatenate(labels), np.concatenate(truths))
    return TabularSummary(rows=rows, features=features, task=task, oracle=oracle,
                          signal_std=float(np.linalg.norm(weights)))


def generate_tabular(path: Path | str, rows: int, *, features: int = 20, task: str = "classification",
                     seed: int | None = None, noise: float = 0.5) -> TabularSummary:
    """Write a tabular CSV with a known signal to ``path`` (see :func:`write_tabular`)."""
    require_output_directory(Path(path))
    with open(path, "wb") as f:
        return write_tabular(f, rows, features=features, task=task, seed=seed, noise=noise)
