"""The ML examples' synthetic data: a known signal, reproducible, and an oracle to judge models by."""

from __future__ import annotations

import io

import numpy as np
import pytest

from ppml.datagen import ranking_auc, write_tabular


def test_ranking_auc_matches_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300).astype(float)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    pairwise = wins / (len(pos) * len(neg))
    assert ranking_auc(labels, scores) == pytest.approx(pairwise)
    with pytest.raises(ValueError):
        ranking_auc(np.ones(3), np.arange(3.0))


def test_tabular_data_is_reproducible_and_carries_its_signal() -> None:
    first, second = io.BytesIO(), io.BytesIO()
    summary = write_tabular(first, 20_000, features=10, seed=5)
    write_tabular(second, 20_000, features=10, seed=5)
    assert first.getvalue() == second.getvalue()
    lines = first.getvalue().decode().splitlines()
    assert lines[0] == ",".join([*(f"f{i}" for i in range(10)), "label"]) and len(lines) == 20_001
    data = np.loadtxt(lines[1:], delimiter=",")
    assert set(np.unique(data[:, -1])) == {0.0, 1.0}
    # The informative half separates the classes; the oracle AUC is what the true probabilities reach.
    assert 0.85 < summary.oracle < 0.99
    correlation = [abs(np.corrcoef(data[:, i], data[:, -1])[0, 1]) for i in range(10)]
    assert min(correlation[:5]) > 0.05 > max(correlation[5:])
    regression = write_tabular(io.BytesIO(), 1000, task="regression", noise=0.25, seed=1)
    assert regression.oracle == 0.25
