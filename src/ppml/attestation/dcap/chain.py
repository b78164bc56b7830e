"""Certificate chains to the pinned root, and the CRLs that revoke certificates on them.

Intel's PKI: "SGX PCK Certificate" ← "SGX PCK Platform CA" or "SGX PCK Processor CA" ← Intel SGX
Root CA for the platform's key; "SGX TCB Signing" ← Intel SGX Root CA for the collateral. The root
is pinned (:func:`ppml.attestation.intel_root.intel_sgx_root_ca` unless a test or a private PKI
replaces it); CRLs are the Root CA's and the PCK CAs', PEM or DER.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

from ppml.attestation.dcap._common import _bounded_add, _bounded_put, _common_name, _fail
from ppml.errors import AttestationFailed, UsageError

__all__ = ["CertificateChain", "load_crls"]

_MAX_CRL_SIZE = 16 << 20
_MAX_CHAIN_LENGTH = 4


CertificateChain = Sequence[x509.Certificate] | bytes | str


def _load_chain(chain: CertificateChain, what: str) -> tuple[x509.Certificate, ...]:
    if isinstance(chain, (bytes, str)):
        pem = chain.encode() if isinstance(chain, str) else chain
        try:
            certificates = x509.load_pem_x509_certificates(pem.rstrip(b"\0"))
        except ValueError as exc:
            raise AttestationFailed(f"{what}: not a PEM certificate chain") from exc
    else:
        certificates = list(chain)
    if not certificates:
        _fail(f"{what}: empty certificate chain")
    if len(certificates) > _MAX_CHAIN_LENGTH:
        _fail(f"{what}: certificate chain of {len(certificates)} is too long")
    return tuple(certificates)


def _fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex()


@dataclasses.dataclass(frozen=True, slots=True)
class _CheckedChain:
    """A chain that passed every check that does not depend on the time: what is left to check
    at each ``now`` is the validity of its certificates and of the CRLs consulted."""

    certificates: tuple[x509.Certificate, ...]
    crls: tuple[tuple[str, x509.CertificateRevocationList], ...]

    def check_time(self, now: datetime, what: str) -> None:
        for certificate in self.certificates:
            if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
                _fail(f"{what}: {_common_name(certificate.subject)!r} is not valid at "
                      f"{now.isoformat()} (valid {certificate.not_valid_before_utc.isoformat()} "
                      f"to {certificate.not_valid_after_utc.isoformat()})")
        for issuer_name, crl in self.crls:
            next_update = crl.next_update_utc
            if crl.last_update_utc > now or (next_update is not None and next_update < now):
                _fail(f"{what}: the CRL of {issuer_name!r} is not valid at {now.isoformat()} "
                      f"(lastUpdate {crl.last_update_utc.isoformat()}, nextUpdate "
                      f"{next_update.isoformat() if next_update else 'none'})")


class _ChainVerifier:
    """Verifies certificate chains (leaf first) to one pinned root, with optional CRLs.

    A chain must end at the root (which is appended if the chain stops short of a root); every
    issuer must be a CA (basic constraints, keyCertSign, path length) that signed the certificate
    below it; the leaf must be no CA; names must be what Intel issues. With CRLs configured, every
    certificate below the root must be covered by a CRL from its issuer that the issuer signed and
    that does not list it: a missing CRL fails closed instead of skipping the check.

    Chains that pass the time-independent checks are remembered by their exact certificates, so
    the shared intermediates and the collateral chains are verified once, not once per quote; only
    successes are remembered, and the memory is emptied when it reaches its bound.
    """

    def __init__(self, trusted_root: x509.Certificate,
                 crls: Sequence[x509.CertificateRevocationList] | None) -> None:
        self.trusted_root = trusted_root
        self._crls: dict[x509.Name, list[tuple[int, x509.CertificateRevocationList]]] | None = None
        if crls is not None:
            self._crls = {}
            for index, crl in enumerate(crls):
                self._crls.setdefault(crl.issuer, []).append((index, crl))
        self._checked: dict[tuple[Any, ...], _CheckedChain] = {}
        #: (certificate, issuer) and (CRL index, issuer) pairs whose signature verified
        self._signed: set[tuple[Any, ...]] = set()

    def verify(self, chain: Sequence[x509.Certificate], *, now: datetime, what: str,
               leaf_phrase: str, ca_phrases: tuple[str, ...]) -> tuple[x509.Certificate, ...]:
        """Check ``chain`` at ``now``; return it with the root. Raises AttestationFailed."""
        key = (what, tuple(chain))
        checked = self._checked.get(key)
        if checked is None:
            checked = self._check_static(chain, what, leaf_phrase, ca_phrases)
            _bounded_put(self._checked, key, checked)
        checked.check_time(now, what)
        return checked.certificates

    def _check_static(self, chain: Sequence[x509.Certificate], what: str, leaf_phrase: str,
                      ca_phrases: tuple[str, ...]) -> _CheckedChain:
        certificates = list(chain)
        last = certificates[-1]
        if last != self.trusted_root:
            if last.subject == last.issuer:
                _fail(f"{what}: the chain ends at {_common_name(last.subject)!r} (SHA-256 "
                      f"{_fingerprint(last)}), not at the pinned root (SHA-256 "
                      f"{_fingerprint(self.trusted_root)})")
            certificates.append(self.trusted_root)
        if len(certificates) < 2 or len(certificates) > _MAX_CHAIN_LENGTH:
            _fail(f"{what}: a chain of {len(certificates)} certificates")
        leaf = certificates[0]
        if leaf_phrase not in _common_name(leaf.subject):
            _fail(f"{what}: leaf {_common_name(leaf.subject)!r} is not an {leaf_phrase!r} "
                  f"certificate")
        for certificate in certificates[1:-1]:
            if not any(phrase in _common_name(certificate.subject) for phrase in ca_phrases):
                _fail(f"{what}: unexpected intermediate {_common_name(certificate.subject)!r}")
        try:
            if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                _fail(f"{what}: the leaf {_common_name(leaf.subject)!r} is a CA")
        except x509.ExtensionNotFound:
            pass
        except ValueError as exc:
            raise AttestationFailed(f"{what}: unreadable leaf extensions ({exc})") from exc
        crls_used: list[tuple[str, x509.CertificateRevocationList]] = []
        for depth, (child, issuer) in enumerate(itertools.pairwise(certificates)):
            issuer_name = _common_name(issuer.subject)
            try:
                constraints = issuer.extensions.get_extension_for_class(
                    x509.BasicConstraints).value
                usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
            except x509.ExtensionNotFound:
                _fail(f"{what}: issuer {issuer_name!r} lacks basic constraints or key usage")
            except ValueError as exc:
                raise AttestationFailed(
                    f"{what}: unreadable extensions of {issuer_name!r}") from exc
            if not constraints.ca or not usage.key_cert_sign:
                _fail(f"{what}: issuer {issuer_name!r} is not a CA")
            # ``depth`` intermediate CAs lie between this issuer and the leaf
            if constraints.path_length is not None and depth > constraints.path_length:
                _fail(f"{what}: path length of {issuer_name!r} exceeded")
            if (child, issuer) not in self._signed:
                try:
                    child.verify_directly_issued_by(issuer)
                except (ValueError, TypeError, InvalidSignature):
                    _fail(f"{what}: {_common_name(child.subject)!r} is not signed by "
                          f"{issuer_name!r}")
                _bounded_add(self._signed, (child, issuer))
        # revocation only once the whole path is authentic, so a foreign chain is reported as such
        if self._crls is not None:
            for child, issuer in itertools.pairwise(certificates):
                crls_used.extend(self._check_revocation(child, issuer, what))
        return _CheckedChain(tuple(certificates), tuple(crls_used))

    def _check_revocation(self, certificate: x509.Certificate, issuer: x509.Certificate,
                          what: str) -> list[tuple[str, x509.CertificateRevocationList]]:
        assert self._crls is not None
        issuer_name = _common_name(issuer.subject)
        crls = self._crls.get(certificate.issuer)
        if not crls:
            _fail(f"{what}: no CRL from {issuer_name!r} to check "
                  f"{_common_name(certificate.subject)!r} against")
        for index, crl in crls:
            if (index, issuer) not in self._signed:
                try:
                    valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
                except (ValueError, TypeError):
                    valid = False
                if not valid:
                    _fail(f"{what}: the CRL of {issuer_name!r} is not signed by it")
                _bounded_add(self._signed, (index, issuer))
            if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
                _fail(f"{what}: {_common_name(certificate.subject)!r} (serial "
                      f"{certificate.serial_number:x}) is revoked by the CRL of {issuer_name!r}")
        return [(issuer_name, crl) for _, crl in crls]


def load_crls(paths: Iterable[Path]) -> list[x509.CertificateRevocationList]:
    """Read CRLs (the Intel SGX Root CA CRL, the PCK CA CRLs) from files, PEM or DER.

    Raises:
        UsageError: a file that is no CRL, or larger than 16 MiB.
    """
    crls = []
    for path in paths:
        with open(path, "rb") as file:
            data = file.read(_MAX_CRL_SIZE + 1)
        if len(data) > _MAX_CRL_SIZE:
            raise UsageError(f"{path}: larger than {_MAX_CRL_SIZE >> 20} MiB, not a CRL")
        try:
            crls.append(x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
                        else x509.load_der_x509_crl(data))
        except ValueError as exc:
            raise UsageError(f"{path}: not a CRL (PEM or DER)") from exc
    return crls
