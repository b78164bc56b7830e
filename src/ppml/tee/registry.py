"""TEE backend selection: each backend's name, the factory that opens it, and ``open_backend``.

Wiring code (the CLI, ``ppml submit``, the key agent's session) resolves a backend here once, by
the name users give it (``--tee``, ``--backend``), and passes the backend on; library code takes a
:class:`~ppml.tee.interface.TeeBackend` and never looks one up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final

from ppml.errors import UsageError
from ppml.tee.hardware import SgxGramine, TdxConfigfsTsm
from ppml.tee.interface import TeeBackend
from ppml.tee.simulated import simulated_from_enclave

__all__ = ["BACKENDS", "BACKEND_FACTORIES", "open_backend"]

#: Every backend by name; a factory takes that backend's keyword options (``simulated`` needs
#: ``manifest`` and ``sigstruct``, see :func:`~ppml.tee.simulated.simulated_from_enclave`).
BACKEND_FACTORIES: Final[Mapping[str, Callable[..., TeeBackend]]] = MappingProxyType({
    "sgx-gramine": SgxGramine,
    "tdx": TdxConfigfsTsm,
    "simulated": simulated_from_enclave,
})
#: The backend names, in the order they are offered.
BACKENDS: Final = tuple(BACKEND_FACTORIES)


def open_backend(name: str, **options: object) -> TeeBackend:
    """Resolve a backend by name (wiring code only). ``simulated`` needs ``enclave``/key options.

    Raises:
        UsageError: no backend has that name.
    """
    factory = BACKEND_FACTORIES.get(name)
    if factory is None:
        raise UsageError(f"unknown TEE backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return factory(**options)
