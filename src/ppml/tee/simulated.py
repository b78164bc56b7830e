"""The SIMULATED TEE: Gramine's load-time checks done in software, and reports a software key signs.

No hardware protects anything here; the backend says so (``SimulatedTee``) and warns every time it
produces evidence. Loading an enclave into it (:func:`simulated_from_enclave`) first does what
Gramine checks at enclave load:

1. verifies the SIGSTRUCT's RSA-3072 signature (its key's hash is ``mr_signer``);
2. measures the manifest (ppml's documented measurement) and requires it to equal the
   SIGSTRUCT's ENCLAVEHASH, so the manifest is the one that was signed;
3. re-hashes every trusted file the manifest lists, as Gramine does on open, and refuses to
   start if any changed.

Its reports then carry that ``mr_enclave``/``mr_signer``, ISV product id/SVN and the DEBUG flag:
an SGX-shaped report (:mod:`ppml.core.simulated`) signed by the simulated platform's P-256 key
(PEM, 0600, created on first use under ``$PPML_HOME`` or ``~/.ppml``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ppml.core._files import create_private
from ppml.core.evidence import TEE_SIMULATED, Evidence
from ppml.core.measurement import SGX_FLAGS_DEBUG, Sigstruct, measure_manifest, verify_sigstruct
from ppml.core.simulated import SimulatedReport, sign_report
from ppml.errors import AttestationFailed, InputNotFound, UnsafeWarning, UsageError
from ppml.tee.gramine.manifest import Manifest, manifest_settings, read_manifest_bytes
from ppml.tee.interface import _check_report_data

__all__ = [
    "SimulatedTee",
    "default_platform_key_path",
    "load_or_create_platform_key",
    "simulated_from_enclave",
]


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


def simulated_from_enclave(*, manifest: Path, sigstruct: Path, platform_key_path: Path | None = None) -> SimulatedTee:
    """Load a signed enclave into the simulated TEE (see the module docstring)."""
    manifest, sigstruct = Path(manifest), Path(sigstruct)
    try:
        sig = Sigstruct.from_bytes(sigstruct.read_bytes())
    except FileNotFoundError:
        raise InputNotFound(sigstruct) from None
    mr_signer = verify_sigstruct(sig)
    manifest_bytes = read_manifest_bytes(manifest)
    settings = manifest_settings(manifest_bytes, manifest)
    measured = measure_manifest(manifest_bytes, enclave_size=settings.enclave_size, max_threads=settings.max_threads)
    if measured != sig.enclave_hash:
        raise AttestationFailed(f"{manifest} is not the manifest {sigstruct} signed (measurement differs)")
    Manifest.load(manifest).verify_trusted_files()
    return SimulatedTee(
        mr_enclave=sig.enclave_hash, mr_signer=mr_signer,
        platform_key=load_or_create_platform_key(platform_key_path or default_platform_key_path()),
        isv_prod_id=sig.isv_prod_id, isv_svn=sig.isv_svn, debug=bool(sig.attributes.flags & SGX_FLAGS_DEBUG),
    )
