"""Development TLS: a private CA and a server certificate for one host, made once per data dir.

``DIR/tls/ca.pem`` is what clients verify against (``PPML_KMS_CA`` or ``?ca=``); the CA's private
key and the server key are written 0600. Nothing here disables verification anywhere: a client
that does not trust ``ca.pem`` fails the handshake.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ppml.core._files import write_private
from ppml.transport import client_context

__all__ = ["DevTls", "client_context", "ensure_dev_tls"]


@dataclasses.dataclass(frozen=True, slots=True)
class DevTls:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    created: bool


def _write(path: Path, data: bytes, mode: int) -> None:
    write_private(path, data, mode=mode)


def _san(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                     x509.IPAddress(ipaddress.ip_address("::1"))]
    try:
        address = ipaddress.ip_address(host)
        if x509.IPAddress(address) not in names:
            names.append(x509.IPAddress(address))
    except ValueError:
        if host and host != "localhost":
            names.append(x509.DNSName(host))
    return names


def ensure_dev_tls(directory: Path, host: str, *, now: datetime | None = None) -> DevTls:
    """Create (once) a CA and a server certificate valid for ``host``, localhost and loopback."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_cert, ca_key_path = directory / "ca.pem", directory / "ca-key.pem"
    server_cert, server_key = directory / "server.pem", directory / "server-key.pem"
    if all(p.exists() for p in (ca_cert, ca_key_path, server_cert, server_key)):
        existing = x509.load_pem_x509_certificate(server_cert.read_bytes())
        sans = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if all(name in sans for name in _san(host)):
            return DevTls(ca_cert, server_cert, server_key, created=False)
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _ca_certificate(ca_key, now or datetime.now(UTC))
        _write(ca_key_path, ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()), 0o600)
        _write(ca_cert, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    start = (now or datetime.now(UTC)) - timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(_san(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(server_key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), 0o600)
    _write(server_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return DevTls(ca_cert, server_cert, server_key, created=True)


def _ca_certificate(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ppml development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "ppml development CA")])
    start = now - timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
