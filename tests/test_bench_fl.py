"""bench/fl.py's PSI harness at a tiny size, without the openmined-psi baseline (its own venv):
both ppml runs find the expected intersection, and the report has no timing assertions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_psi_section_runs_both_modes_and_checks_the_intersection() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fl.py"), "--ids", "200", "--workers", "2", "--no-baseline"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("intersection of 100 ids OK") == 4
    assert "load average" in result.stdout
