"""Gramine manifests for ppml applications, and their measurement and signature.

:func:`build_manifest` lists every file the application loads (the Python interpreter, the
``sys.path`` directories, the application, Spark's jars) as ``sgx.trusted_files`` with their
SHA-256, so the manifest, and through it ``mr_enclave``, commits to all of them. The manifest is
strict on purpose:

* ``sgx.file_check_policy = "strict"`` and no ``sgx.allowed_files`` unless listed explicitly;
* ``loader.argv`` and ``loader.env.*`` are fixed in the manifest (never
  ``loader.insecure__use_cmdline_argv``, ``loader.argv_src_file`` or
  ``loader.insecure__use_host_env``): the host cannot change what runs;
* ``sgx.debug = false`` unless asked for (a debug enclave's memory is readable by the host).

:func:`measure` returns ``mr_enclave``/``mr_signer``: from ``gramine-sgx-sign`` when it is on the
``PATH``, otherwise from ppml's documented simulated measurement
(:func:`ppml.core.measurement.measure_manifest`). :func:`sign` writes the matching SIGSTRUCT.

The package has one module per job::

    manifest  the manifest model, its TOML (written and read back), the settings that measure it
    build     collecting and hashing the trusted files, build_manifest
    signing   measure and sign: gramine-sgx-sign when installed, else ppml's measurement
"""

from __future__ import annotations

from ppml.tee.gramine.build import build_manifest, default_python_paths
from ppml.tee.gramine.manifest import (
    DEFAULT_LIBOS_URI,
    GRAMINE_MANIFEST_KEYS,
    MANIFEST_FORMAT,
    Manifest,
    Mount,
    TrustedFile,
    check_manifest_keys,
    parse_size,
)
from ppml.tee.gramine.signing import (
    GRAMINE_SGX_SIGN,
    SOURCE_GRAMINE,
    SOURCE_SIMULATED,
    Measurement,
    find_gramine_sgx_sign,
    measure,
    sign,
)

__all__ = [
    "DEFAULT_LIBOS_URI",
    "GRAMINE_MANIFEST_KEYS",
    "GRAMINE_SGX_SIGN",
    "MANIFEST_FORMAT",
    "SOURCE_GRAMINE",
    "SOURCE_SIMULATED",
    "Manifest",
    "Measurement",
    "Mount",
    "TrustedFile",
    "build_manifest",
    "check_manifest_keys",
    "default_python_paths",
    "find_gramine_sgx_sign",
    "measure",
    "parse_size",
    "sign",
]
