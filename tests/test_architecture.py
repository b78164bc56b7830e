"""The layering of DESIGN.md, enforced: ppml.core imports nothing from higher layers."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert f"Contracts: {len(contracts)} kept, 0 broken" in result.stdout, result.stdout


def test_core_imports_no_framework() -> None:
    """ppml.core may use the stdlib and cryptography only: no network or framework modules."""
    code = (
        "import sys, ppml.core, ppml.core.envelope, ppml.core.keys;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'pyspark','pyarrow','httpx','requests','fastapi','sqlalchemy','numpy','tqdm','urllib3'});"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_mypy_is_clean_on_the_package() -> None:
    """STYLE.md 14: the package type-checks (configuration in pyproject.toml)."""
    mypy = Path(sys.executable).with_name("mypy")
    result = subprocess.run([str(mypy), "src/ppml", "--no-incremental"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:]


def test_ruff_is_clean() -> None:
    """STYLE.md 21: the lint rules of [tool.ruff] hold over the package, tests, benchmarks and examples."""
    ruff = Path(sys.executable).with_name("ruff")
    result = subprocess.run([str(ruff), "check", "--no-cache", "src", "tests", "bench", "examples"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
