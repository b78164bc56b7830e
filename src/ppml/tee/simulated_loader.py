"""The SIMULATED TEE's loader: what Gramine checks at enclave load, done in software.

Before it reports anything, the simulated TEE

1. verifies the SIGSTRUCT's RSA-3072 signature (its key's hash is ``mr_signer``);
2. measures the manifest (ppml's documented measurement) and requires it to equal the
   SIGSTRUCT's ENCLAVEHASH, so the manifest is the one that was signed;
3. re-hashes every trusted file the manifest lists, as Gramine does on open, and refuses to
   start if any changed.

Its reports then carry that ``mr_enclave``/``mr_signer``, ISV product id/SVN and the DEBUG flag.
None of this protects data in use: there is no hardware.
"""

from __future__ import annotations

from pathlib import Path

from ppml.core.measurement import SGX_FLAGS_DEBUG, Sigstruct, measure_manifest, verify_sigstruct
from ppml.errors import AttestationFailed, InputNotFound
from ppml.tee.backends import SimulatedTee, default_platform_key_path, load_or_create_platform_key
from ppml.tee.gramine.manifest import Manifest, manifest_settings, read_manifest_bytes

__all__ = ["simulated_from_enclave"]


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
