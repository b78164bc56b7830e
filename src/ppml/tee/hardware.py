"""The hardware TEE backends: Gramine's SGX pseudo-files and the TDX guest's configfs-tsm.

``sgx-gramine``  Gramine's pseudo-files (root ``/dev/attestation``): write ``user_report_data``
                 (64 bytes), read ``quote`` (an SGX DCAP quote binding them).
``tdx``          Linux configfs-tsm (root ``/sys/kernel/config/tsm/report``): make a report entry
                 ``<root>/<name>/``, read ``generation``, write ``inblob`` (64 bytes), read
                 ``outblob`` (the TD quote) and ``generation`` again; a generation that moved by
                 more than one write means another process wrote the same entry concurrently, so
                 the quote may not bind our data: retry. ``provider`` must be ``tdx_guest``.

The roots are injectable so tests drive the backends against directories that imitate those
files.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Final

from ppml.core.evidence import TEE_SGX, TEE_TDX, Evidence
from ppml.errors import AttestationFailed
from ppml.tee.interface import _check_report_data

__all__ = ["SgxGramine", "TdxConfigfsTsm"]

MAX_QUOTE: Final = 64 << 10


class SgxGramine:
    """Evidence from inside a Gramine SGX enclave, through ``/dev/attestation``."""

    name = "sgx-gramine"

    def __init__(self, root: Path = Path("/dev/attestation")) -> None:
        self.root = root

    def get_evidence(self, report_data: bytes) -> Evidence:
        _check_report_data(report_data)
        kind = self.root / "attestation_type"
        if not kind.exists():
            raise AttestationFailed(f"{self.root} not found: not running inside a Gramine SGX enclave")
        if kind.read_text().strip() != "dcap":
            raise AttestationFailed(f"Gramine attestation type is {kind.read_text().strip()!r}, need 'dcap'")
        with open(self.root / "user_report_data", "wb", buffering=0) as f:
            f.write(report_data)
        quote = (self.root / "quote").read_bytes()
        if not quote or len(quote) > MAX_QUOTE:
            raise AttestationFailed("Gramine returned an empty or oversized quote")
        return Evidence(tee=TEE_SGX, data=quote)


class TdxConfigfsTsm:
    """Evidence from a TDX guest through the kernel's configfs-tsm report interface."""

    name = "tdx"

    def __init__(self, root: Path = Path("/sys/kernel/config/tsm/report"), *, attempts: int = 3,
                 entry_name: str | None = None) -> None:
        self.root = root
        self.attempts = attempts
        #: A fixed report entry name (tests imitate configfs with a prepared entry); default: a fresh one.
        self.entry_name = entry_name

    def get_evidence(self, report_data: bytes) -> Evidence:
        _check_report_data(report_data)
        if not self.root.is_dir():
            raise AttestationFailed(f"{self.root} not found: not a TDX guest with configfs-tsm")
        entry = self.root / (self.entry_name or f"ppml-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        entry.mkdir(exist_ok=self.entry_name is not None)
        try:
            for _ in range(self.attempts):
                before = int((entry / "generation").read_text())
                (entry / "inblob").write_bytes(report_data)
                quote = (entry / "outblob").read_bytes()
                after = int((entry / "generation").read_text())
                if after == before + 1:
                    provider = (entry / "provider").read_text().strip()
                    if provider != "tdx_guest":
                        raise AttestationFailed(f"configfs-tsm provider is {provider!r}, not tdx_guest")
                    if not quote or len(quote) > MAX_QUOTE:
                        raise AttestationFailed("configfs-tsm returned an empty or oversized quote")
                    return Evidence(tee=TEE_TDX, data=quote)
            raise AttestationFailed("configfs-tsm report entry was written concurrently; gave up")
        finally:
            with contextlib.suppress(OSError):
                entry.rmdir()
