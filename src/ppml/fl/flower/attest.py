"""The SuperLink proves its TEE; a SuperNode checks that before it connects.

Flower has no attestation, so ppml puts it beside the SuperLink (design: docs/fl.md, "Horizontal FL
on Flower"). ``ppml fl flower-superlink``, started behind the TEE gate, makes the SuperLink's TLS key
and certificate in the TEE (:func:`superlink_certificate`), starts ``flower-superlink`` with them,
and serves ppml's ``Attest`` on a second port from an attest-only
:class:`~ppml.fl.service.server.Coordinator` that presents the **same** certificate, so the
coordinator statement (``nonce || SHA-256(certificate)``, signed by the TEE key the token names)
binds the attestation to the SuperLink's certificate. A SuperNode's wrapper
(:func:`verify_superlink`) fetches the certificate the SuperLink presents, requires the attest
endpoint to present the same one, verifies the token, policy and signature for its own nonce with
:class:`~ppml.fl.service.attest.CoordinatorVerifier`, and only then hands ``flower-supernode``
exactly that certificate as its only root (``--root-certificates``): the SuperNode will talk to no
other server, RA-TLS style.
"""

from __future__ import annotations

import os
import socket
import ssl

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ppml.attestation.tokens import AttestationToken
from ppml.errors import CoordinatorNotAttested, ServiceUnavailable
from ppml.fl.service import fl_pb2, fl_pb2_grpc
from ppml.fl.service.attest import NONCE_BYTES, CoordinatorVerifier
from ppml.fl.service.client import fetch_certificate
from ppml.fl.service.identity import COORDINATOR_NAME, CoordinatorCertificate, PartyIdentity

__all__ = ["server_certificate", "superlink_certificate", "verify_superlink"]

_TIMEOUT = 15.0


def superlink_certificate(*, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> CoordinatorCertificate:
    """A fresh TLS key and self-signed certificate for the SuperLink, made in this (attested) process."""
    return CoordinatorCertificate.generate(hosts=hosts)


def server_certificate(address: str, *, timeout: float = _TIMEOUT) -> bytes:
    """The DER certificate the TLS server at ``HOST:PORT`` presents (not trusted by itself)."""
    host, _, port = address.rpartition(":")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host.strip("[]")) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ServiceUnavailable("the Flower SuperLink", f"cannot reach {address}: {exc}") from None
    if not der:
        raise CoordinatorNotAttested("the SuperLink presented no certificate")
    return der


def verify_superlink(superlink: str, attest: str, *, identity: PartyIdentity,
                     verifier: CoordinatorVerifier) -> tuple[bytes, AttestationToken]:
    """Check the SuperLink at ``superlink`` through its attest endpoint ``attest``; returns the
    SuperLink's certificate (PEM, to pin) and the verified token.

    Raises:
        CoordinatorNotAttested: no valid attestation for the policy, or one bound to another
            certificate than the SuperLink's.
        ServiceUnavailable: the SuperLink or its attest endpoint does not answer (or refused this
            party's certificate).
    """
    superlink_der = server_certificate(superlink)
    endpoint_der = fetch_certificate(attest, identity)
    if endpoint_der != superlink_der:
        raise CoordinatorNotAttested("its attest endpoint presents another certificate than the SuperLink")
    pem = x509.load_der_x509_certificate(superlink_der).public_bytes(serialization.Encoding.PEM)
    credentials = grpc.ssl_channel_credentials(root_certificates=pem, private_key=identity.private_key_pem,
                                               certificate_chain=identity.certificate_pem)
    channel = grpc.secure_channel(attest, credentials, options=[("grpc.ssl_target_name_override", COORDINATOR_NAME)])
    nonce = os.urandom(NONCE_BYTES)
    try:
        answer = fl_pb2_grpc.CoordinatorStub(channel).Attest(fl_pb2.AttestRequest(nonce=nonce), timeout=_TIMEOUT)
    except grpc.RpcError as exc:
        raise ServiceUnavailable("the SuperLink's attest endpoint",
                                 f"{attest} did not answer Attest ({exc.code().name})") from None
    finally:
        channel.close()
    token = verifier.verify(token=answer.token, certificate_sha256=answer.certificate_sha256,
                            signature=answer.signature, nonce=nonce, certificate_der=superlink_der)
    return pem, token
