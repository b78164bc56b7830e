"""Who is who on the FL service: the federation's CA and party certificates, and the coordinator's
own TLS certificate, made inside its TEE.

Parties authenticate with **client certificates** issued by the federation's CA (``ppml fl certs``):
gRPC checks them in the TLS handshake, before a byte of the protocol is read, and the certificate's
common name is the party's name in every round. Certificates rather than ppml app credentials
because a party is an organisation, not a KMS tenant: the federation's operator issues and revokes
them without an account at any party's KMS, and no secret ever crosses the wire (an apikey would).

The coordinator does **not** hold a CA-issued certificate: it makes a fresh P-256 key and a
self-signed certificate when it starts, inside its TEE, and proves both with its attestation
(:mod:`ppml.fl.service.attest`). A party pins exactly that certificate for the connection, so a
party's certificate, which the same CA signed, can never stand in for the coordinator.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ppml.errors import InputNotFound, UsageError

__all__ = ["COORDINATOR_NAME", "CoordinatorCertificate", "PartyIdentity", "issue_federation"]

COORDINATOR_NAME: Final = "ppml-fl-coordinator"
_VALIDITY: Final = datetime.timedelta(days=365)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _check_party_name(name: str) -> None:
    if (not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name)
            or name == COORDINATOR_NAME):
        raise UsageError(f"a party name is 1-64 letters, digits, '-', '_' or '.' (and not "
                         f"{COORDINATOR_NAME!r}), not {name!r}")


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=False)
    path.write_bytes(data)


def issue_federation(out: Path, parties: Sequence[str], *, now: datetime.datetime | None = None) -> None:
    """Write a federation CA (``ca.pem``, ``ca.key``) and, per party, ``NAME.pem`` and ``NAME.key``
    (mode 0600) into ``out``. ``ca.key`` stays with the federation's operator; each party gets its
    own pair and ``ca.pem``; the coordinator gets ``ca.pem`` only.

    Raises:
        UsageError: a party name is invalid or repeated, or a file already exists.
    """
    for party in parties:
        _check_party_name(party)
    if len(set(parties)) != len(parties) or not parties:
        raise UsageError("name each party once")
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / "ca.pem", out / "ca.key"] + [out / f"{p}.{ext}" for p in parties for ext in ("pem", "key")]
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise UsageError(f"refusing to overwrite {', '.join(existing)}")
    moment = now or datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ppml federation CA")
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(moment - datetime.timedelta(minutes=5)).not_valid_after(moment + _VALIDITY)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=True, crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    _write_private(out / "ca.key", _private_pem(ca_key))
    (out / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for party in parties:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(party)).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(moment - datetime.timedelta(minutes=5)).not_valid_after(moment + _VALIDITY)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(party)]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        _write_private(out / f"{party}.key", _private_pem(key))
        (out / f"{party}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PartyIdentity:
    """A party's certificate and key (PEM) and the federation CA, read from files; ``repr`` shows
    the name only."""

    name: str
    certificate_pem: bytes = dataclasses.field(repr=False)
    private_key_pem: bytes = dataclasses.field(repr=False)
    ca_pem: bytes = dataclasses.field(repr=False)

    @classmethod
    def from_files(cls, *, certificate: Path, private_key: Path, ca: Path) -> PartyIdentity:
        """Raises InputNotFound for a missing file, UsageError for a certificate without a usable name."""
        for path in (certificate, private_key, ca):
            if not path.is_file():
                raise InputNotFound(str(path))
        cert_pem = certificate.read_bytes()
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise UsageError(f"{certificate} is not a PEM certificate") from exc
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(names[0].value) if names else ""
        _check_party_name(name)
        return cls(name=name, certificate_pem=cert_pem, private_key_pem=private_key.read_bytes(),
                   ca_pem=ca.read_bytes())


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorCertificate:
    """The coordinator's TLS key and self-signed certificate, made in memory at start."""

    certificate_pem: bytes
    certificate_der: bytes
    private_key_pem: bytes = dataclasses.field(repr=False)

    @classmethod
    def generate(cls, *, hosts: Sequence[str] = ("127.0.0.1", "localhost"),
                 now: datetime.datetime | None = None) -> CoordinatorCertificate:
        moment = now or datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        alternative: list[x509.GeneralName] = [x509.DNSName(COORDINATOR_NAME)]
        for host in hosts:
            try:
                alternative.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alternative.append(x509.DNSName(host))
        cert = (x509.CertificateBuilder().subject_name(_name(COORDINATOR_NAME)).issuer_name(_name(COORDINATOR_NAME))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(moment - datetime.timedelta(minutes=5))
                .not_valid_after(moment + datetime.timedelta(days=7))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
                   certificate_der=cert.public_bytes(serialization.Encoding.DER),
                   private_key_pem=_private_pem(key))
