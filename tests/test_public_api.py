"""Every public module imports, and every name its ``__all__`` lists exists (STYLE rule 14)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import ppml

# The Flower apps import flwr, which lives only in the Flower venv (its pins conflict with ppml's:
# docs/fl.md); they are checked there (tests/test_fl_flower.py imports them through `ppml fl
# flower-env`'s check) and skipped here only when flwr is absent.
FLOWER_ONLY = ("ppml.fl.flower.server_app", "ppml.fl.flower.client_app")

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(ppml.__path__, prefix="ppml.")
    if not any(part.startswith("_") for part in info.name.split(".")[1:])
)


def test_every_module_is_found() -> None:
    assert "ppml.core.envelope" in MODULES and "ppml.kms.service" in MODULES and len(MODULES) > 40


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_only_names_that_exist(name: str) -> None:
    if name in FLOWER_ONLY:
        pytest.importorskip("flwr", reason="a Flower app: imported only in the Flower venv")
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        assert module.__file__ is not None and (
            module.__file__.endswith("__init__.py") or name.endswith("__main__")
            or "examples" in name
            or name.endswith(("_pb2", "_pb2_grpc"))), f"{name} has no __all__"  # protoc's output: the schema's names
        return
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"
