"""The TEE backends in one import: the interface, the three backends, and opening one by name.

Given 64 bytes of report data, a backend produces evidence that binds them::

    sgx-gramine  SgxGramine       Gramine's /dev/attestation pseudo-files       ppml.tee.hardware
    tdx          TdxConfigfsTsm   the TDX guest's configfs-tsm reports          ppml.tee.hardware
    simulated    SimulatedTee     SIMULATED, no hardware: a software key signs  ppml.tee.simulated

The interface is :class:`~ppml.tee.interface.TeeBackend`; :func:`~ppml.tee.registry.open_backend`
resolves a name to a backend. This module only gathers them: each lives in the module named above.
"""

from __future__ import annotations

from ppml.tee.hardware import SgxGramine, TdxConfigfsTsm
from ppml.tee.interface import TeeBackend
from ppml.tee.registry import BACKENDS, open_backend
from ppml.tee.simulated import SimulatedTee, default_platform_key_path, load_or_create_platform_key

__all__ = [
    "BACKENDS",
    "SgxGramine",
    "SimulatedTee",
    "TdxConfigfsTsm",
    "TeeBackend",
    "default_platform_key_path",
    "load_or_create_platform_key",
    "open_backend",
]
