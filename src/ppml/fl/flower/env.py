"""The Flower virtual environment: Flower's pinned packages first, then ppml and the main venv's.

Flower 1.42 pins protobuf < 7, cryptography 50 and FastAPI 0.138, below what ppml's core needs
(protobuf >= 7.35.1 for ppml's own gRPC stubs, a newer cryptography and FastAPI), so ppml never
pins them down for Flower: Flower gets ``python -m venv DIR`` + ``pip install 'flwr==1.42.*'``, and
one ``.pth`` file, sorted after every other, appends ppml's source directory and the main venv's
site-packages to that venv's path. Torch, numpy and pyarrow are then found without being
installed twice, while Flower's own pins (protobuf, cryptography, FastAPI) shadow the main venv's
newer ones inside it.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Final

import ppml
from ppml.errors import UsageError

__all__ = ["FLOWER_REQUIREMENT", "create", "default_path", "executable", "is_ready"]

FLOWER_REQUIREMENT: Final = "flwr==1.42.*"
_PTH: Final = "zzz-ppml-main-venv.pth"
_STAMP: Final = ".ppml-flower-ready"
_CHECK: Final = ("import flwr, torch, numpy, cryptography, google.protobuf as pb; "
                 "import ppml.fl.flower.server_app, ppml.fl.flower.client_app, ppml.core.envelope, "
                 "ppml.tabular.tables, ppml.torch.checkpoint; "
                 "print('flwr', flwr.__version__, 'torch', torch.__version__, 'cryptography', "
                 "cryptography.__version__, 'protobuf', pb.__version__)")


def default_path() -> Path:
    """``$PPML_FLOWER_VENV``, else ``.venv-flower`` beside the venv ppml runs in."""
    if configured := os.environ.get("PPML_FLOWER_VENV"):
        return Path(configured)
    return Path(sys.prefix).parent / ".venv-flower"


def executable(env: Path, name: str = "python") -> Path:
    """A program of the Flower venv (``python``, ``flower-superlink``, ``flwr``…)."""
    return env / "bin" / name


def is_ready(env: Path) -> bool:
    return (env / _STAMP).exists() and executable(env).exists()


def _main_paths() -> list[str]:
    source = str(Path(ppml.__file__).resolve().parent.parent)
    paths = [source]
    for directory in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]:
        if directory not in paths and Path(directory).is_dir():
            paths.append(directory)
    return paths


def create(env: Path | None = None, *, force: bool = False, quiet: bool = True) -> Path:
    """Create (or reuse) the Flower venv at ``env`` and check that Flower, torch and ppml's pieces
    import there; returns its path.

    Raises:
        UsageError: pip could not install Flower, or the check failed (the output says why).
    """
    env = (env or default_path()).absolute()
    if is_ready(env) and not force:
        _write_pth(env)
        return env
    python = executable(env)
    if not python.exists():
        _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(env)], "create the Flower venv")
    _run([str(python), "-m", "pip", "install", *(["--quiet"] if quiet else []), FLOWER_REQUIREMENT],
         f"pip install {FLOWER_REQUIREMENT}")
    _write_pth(env)
    check = subprocess.run([str(python), "-c", _CHECK], capture_output=True, text=True, cwd=env)
    if check.returncode:
        raise UsageError(f"the Flower venv at {env} cannot import Flower with ppml: {check.stderr[-2000:]}")
    (env / _STAMP).write_text(check.stdout)
    return env


def _write_pth(env: Path) -> None:
    purelib = subprocess.run([str(executable(env)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # Sorted last among the .pth files: Flower's own packages come first on sys.path.
    (Path(purelib) / _PTH).write_text("\n".join(_main_paths()) + "\n")


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        raise UsageError(f"could not {what}: {(result.stderr or result.stdout)[-2000:]}")
