"""Measuring and signing a manifest: ``mr_enclave``/``mr_signer`` and the SIGSTRUCT.

:func:`measure` and :func:`sign` use ``gramine-sgx-sign`` when it is on the ``PATH`` (its
ENCLAVEHASH is the MRENCLAVE SGX hardware reports); otherwise ppml's documented simulated
measurement (:func:`ppml.core.measurement.measure_manifest`) and its own SIGSTRUCT signing.
Every result says which of the two computed it.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final, Literal

from ppml.core.measurement import (
    SIGSTRUCT_SIZE,
    Sigstruct,
    enclave_attributes,
    load_enclave_key,
    measure_manifest,
    mr_signer,
    sign_sigstruct,
    verify_sigstruct,
)
from ppml.errors import AttestationFailed, OutputExists, UsageError
from ppml.tee.gramine.manifest import _write_atomically, manifest_settings, read_manifest_bytes

__all__ = [
    "GRAMINE_SGX_SIGN",
    "SOURCE_GRAMINE",
    "SOURCE_SIMULATED",
    "Measurement",
    "find_gramine_sgx_sign",
    "measure",
    "sign",
]

GRAMINE_SGX_SIGN: Final = "gramine-sgx-sign"
SOURCE_GRAMINE: Final = "gramine-sgx-sign"
SOURCE_SIMULATED: Final = "ppml-simulated-measurement"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """What an operator registers with the attestation service for this enclave."""

    mr_enclave: bytes
    mr_signer: bytes
    #: :data:`SOURCE_GRAMINE` or :data:`SOURCE_SIMULATED`: who computed ``mr_enclave``.
    source: str


Tool = Path | str | None | Literal["auto"]


def find_gramine_sgx_sign(search_path: str | None = None) -> Path | None:
    """``gramine-sgx-sign`` on ``search_path`` (default ``$PATH``), or None."""
    found = shutil.which(GRAMINE_SGX_SIGN, path=search_path)
    return Path(found) if found else None


def _resolve_tool(tool: Tool) -> Path | None:
    if tool == "auto":
        return find_gramine_sgx_sign()
    return None if tool is None else Path(tool)


def _gramine_sigstruct(tool: Path, manifest_path: Path, key_path: Path,
                       keep_manifest_sgx: Path | None = None) -> Sigstruct:
    """Run ``gramine-sgx-sign`` into a temporary directory and return the SIGSTRUCT it wrote
    (and copy the ``.manifest.sgx`` it wrote to ``keep_manifest_sgx``, if given)."""
    with tempfile.TemporaryDirectory(prefix="ppml-gramine-sign-") as tmp:
        sig_path = Path(tmp, "enclave.sig")
        command = [
            str(tool), "--manifest", str(manifest_path), "--key", str(key_path),
            "--output", str(Path(tmp, "enclave.manifest.sgx")), "--sigfile", str(sig_path),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=3600)
        except OSError as exc:
            raise UsageError(f"cannot run {tool}: {exc.strerror or exc}") from exc
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            raise UsageError(f"{tool} failed with exit code {result.returncode}: " + " | ".join(tail))
        try:
            raw = sig_path.read_bytes()
            manifest_sgx = Path(tmp, "enclave.manifest.sgx").read_bytes() if keep_manifest_sgx else b""
        except FileNotFoundError as exc:
            raise UsageError(f"{tool} succeeded but did not write {exc.filename}") from None
    sig = Sigstruct.from_bytes(raw)
    verify_sigstruct(sig)
    if keep_manifest_sgx is not None:
        _write_atomically(keep_manifest_sgx, manifest_sgx, overwrite=False)
    return sig


def measure(manifest_path: Path | str, key_path: Path | str, *, tool: Tool = "auto") -> Measurement:
    """``mr_enclave`` and ``mr_signer`` of the enclave this manifest describes, signed by this key.

    With ``gramine-sgx-sign`` (``tool="auto"`` finds it on ``$PATH``; a path uses that
    executable), its SIGSTRUCT's ENCLAVEHASH is the real SGX MRENCLAVE and ``source`` is
    :data:`SOURCE_GRAMINE`. Without it (or with ``tool=None``), ``mr_enclave`` is
    :func:`ppml.core.measurement.measure_manifest` of the manifest file's exact bytes and
    ``source`` is :data:`SOURCE_SIMULATED`.

    Raises:
        InputNotFound: no such manifest or key.
        UsageError: a bad key (see :func:`~ppml.core.measurement.load_enclave_key`) or manifest,
            or ``gramine-sgx-sign`` failed.
        AttestationFailed: ``gramine-sgx-sign`` wrote a SIGSTRUCT that does not verify or was
            signed by another key.
    """
    manifest_path, key_path = Path(manifest_path), Path(key_path)
    manifest_bytes = read_manifest_bytes(manifest_path)
    settings = manifest_settings(manifest_bytes, manifest_path)
    signer = mr_signer(load_enclave_key(key_path))
    gramine = _resolve_tool(tool)
    if gramine is not None:
        sig = _gramine_sigstruct(gramine, manifest_path, key_path)
        if sig.mr_signer != signer:
            raise AttestationFailed(f"{gramine} signed with another key than {key_path}")
        return Measurement(mr_enclave=sig.enclave_hash, mr_signer=signer, source=SOURCE_GRAMINE)
    mr_enclave = measure_manifest(
        manifest_bytes, enclave_size=settings.enclave_size, max_threads=settings.max_threads
    )
    return Measurement(mr_enclave=mr_enclave, mr_signer=signer, source=SOURCE_SIMULATED)


def sign(
    manifest_path: Path | str,
    key_path: Path | str,
    out_sig: Path | str,
    *,
    date: datetime.date | None = None,
    overwrite: bool = False,
    tool: Tool = "auto",
    out_manifest_sgx: Path | str | None = None,
) -> tuple[Sigstruct, Measurement]:
    """Write the 1808-byte SIGSTRUCT for this manifest's measurement to ``out_sig``.

    With ``gramine-sgx-sign`` the SIGSTRUCT is the one it produced, and the ``.manifest.sgx`` it
    wrote (what ``gramine-sgx`` loads) is kept at ``out_manifest_sgx`` if given. Otherwise ppml signs
    ENCLAVEHASH = the simulated ``mr_enclave`` with ATTRIBUTES = MODE64BIT (+ DEBUG if the manifest
    says ``sgx.debug = true``), XFRM = x87|SSE, Gramine's default masks, ISVPRODID/ISVSVN from the
    manifest and ``date`` (default: today, UTC).

    Raises:
        OutputExists: ``out_sig`` exists and ``overwrite`` is false.
        (and everything :func:`measure` raises)
    """
    manifest_path, key_path, out_path = Path(manifest_path), Path(key_path), Path(out_sig)
    if out_path.exists() and not overwrite:
        raise OutputExists(out_path)
    manifest_bytes = read_manifest_bytes(manifest_path)
    settings = manifest_settings(manifest_bytes, manifest_path)
    key = load_enclave_key(key_path)
    gramine = _resolve_tool(tool)
    if gramine is not None:
        sig = _gramine_sigstruct(gramine, manifest_path, key_path,
                                 Path(out_manifest_sgx) if out_manifest_sgx is not None else None)
        if sig.mr_signer != mr_signer(key):
            raise AttestationFailed(f"{gramine} signed with another key than {key_path}")
        source = SOURCE_GRAMINE
    else:
        sig = sign_sigstruct(
            key,
            enclave_hash=measure_manifest(
                manifest_bytes, enclave_size=settings.enclave_size, max_threads=settings.max_threads
            ),
            isv_prod_id=settings.isv_prod_id,
            isv_svn=settings.isv_svn,
            attributes=enclave_attributes(debug=settings.debug),
            date=date or datetime.datetime.now(datetime.UTC).date(),
        )
        source = SOURCE_SIMULATED
    raw = sig.to_bytes()
    assert len(raw) == SIGSTRUCT_SIZE
    _write_atomically(out_path, raw, overwrite=overwrite)
    return sig, Measurement(mr_enclave=sig.enclave_hash, mr_signer=sig.mr_signer, source=source)
