"""TEE backends: given 64 bytes of report data, produce evidence. One interface, three backends:

``sgx-gramine``  Gramine's pseudo-files (root ``/dev/attestation``): write ``user_report_data``
                 (64 bytes), read ``quote`` (an SGX DCAP quote binding them).
``tdx``          Linux configfs-tsm (root ``/sys/kernel/config/tsm/report``): make a report entry
                 ``<root>/<name>/``, read ``generation``, write ``inblob`` (64 bytes), read
                 ``outblob`` (the TD quote) and ``generation`` again; a generation that moved by
                 more than one write means another process wrote the same entry concurrently, so
                 the quote may not bind our data: retry. ``provider`` must be ``tdx_guest``.
``simulated``    SIMULATED TEE, no hardware: an SGX-shaped report signed by a software platform
                 key (``ppml.core.simulated``). Warns every time it runs.

The roots are injectable so tests drive the hardware backends against directories that imitate
those files.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import warnings
from pathlib import Path
from typing import Final, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ppml.core._files import create_private
from ppml.core.evidence import REPORT_DATA_SIZE, TEE_SGX, TEE_SIMULATED, TEE_TDX, Evidence
from ppml.core.simulated import SimulatedReport, sign_report
from ppml.errors import AttestationFailed, UnsafeWarning, UsageError

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

MAX_QUOTE: Final = 64 << 10


class TeeBackend(Protocol):
    name: str

    def get_evidence(self, report_data: bytes) -> Evidence: ...


def _check_report_data(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_SIZE:
        raise ValueError(f"report data has {REPORT_DATA_SIZE} bytes, got {len(report_data)}")


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


def default_platform_key_path() -> Path:
    home = os.environ.get("PPML_HOME")
    return (Path(home) if home else Path.home() / ".ppml") / "simulated-tee" / "platform-key.pem"


def load_or_create_platform_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The simulated platform's P-256 key (PEM, 0600), created on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError(f"{path}: not an EC private key")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    create_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    pub = path.with_name("platform-public.pem")
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return key


class SimulatedTee:
    """SIMULATED TEE: no hardware protection. Reports the identity of the enclave it 'loaded'."""

    name = "simulated"

    def __init__(self, *, mr_enclave: bytes, mr_signer: bytes, platform_key: ec.EllipticCurvePrivateKey,
                 isv_prod_id: int = 0, isv_svn: int = 0, debug: bool = False) -> None:
        self.mr_enclave = mr_enclave
        self.mr_signer = mr_signer
        self.platform_key = platform_key
        self.isv_prod_id = isv_prod_id
        self.isv_svn = isv_svn
        self.debug = debug

    def get_evidence(self, report_data: bytes) -> Evidence:
        _check_report_data(report_data)
        warnings.warn("SIMULATED TEE: this evidence proves nothing about hardware; data in use is not "
                      "protected", UnsafeWarning, stacklevel=2)
        report = SimulatedReport(mr_enclave=self.mr_enclave, mr_signer=self.mr_signer, report_data=report_data,
                                 isv_prod_id=self.isv_prod_id, isv_svn=self.isv_svn, debug=self.debug)
        return Evidence(tee=TEE_SIMULATED, data=sign_report(report, self.platform_key))


BACKENDS: Final = ("sgx-gramine", "tdx", "simulated")


def open_backend(name: str, **options: object) -> TeeBackend:
    """Resolve a backend by name (wiring code only). ``simulated`` needs ``enclave``/key options."""
    if name == "sgx-gramine":
        return SgxGramine(**options)  # type: ignore[arg-type]
    if name == "tdx":
        return TdxConfigfsTsm(**options)  # type: ignore[arg-type]
    if name == "simulated":
        from ppml.tee.simulated_loader import simulated_from_enclave

        return simulated_from_enclave(**options)  # type: ignore[arg-type]
    raise UsageError(f"unknown TEE backend {name!r}; choose one of {', '.join(BACKENDS)}")
