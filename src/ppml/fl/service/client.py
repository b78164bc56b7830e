"""A party's connection to the coordinator: attest it first, then a :class:`~ppml.fl.channel.Channel`.

:func:`connect` (1) makes one TLS handshake with the party's certificate to learn the coordinator's
certificate, (2) opens the gRPC channel pinned to exactly that certificate, (3) asks for the
coordinator's attestation over it with a fresh nonce and verifies it
(:class:`~ppml.fl.service.attest.CoordinatorVerifier`), and only then (4) joins the round. Nothing
of the party's data is sent before (3) succeeds; an unattested coordinator gets the nonce and no
more.
"""

from __future__ import annotations

import os
import queue
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Final

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ppml.errors import CoordinatorNotAttested, RoundAborted, ServiceUnavailable, UsageError
from ppml.fl.channel import DEFAULT_MAX_MESSAGE, DEFAULT_RECEIVE_TIMEOUT, Mailbox, Message, check_kind
from ppml.fl.service import fl_pb2, fl_pb2_grpc
from ppml.fl.service.attest import NONCE_BYTES, CoordinatorVerifier
from ppml.fl.service.identity import COORDINATOR_NAME, PartyIdentity
from ppml.fl.service.server import grpc_options

__all__ = ["RemoteChannel", "connect"]

_CONNECT_TIMEOUT: Final = 15.0


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"a coordinator address is HOST:PORT, not {address!r}")
    return host.strip("[]"), int(port)


def fetch_certificate(address: str, identity: PartyIdentity, *, timeout: float = _CONNECT_TIMEOUT) -> bytes:
    """The DER certificate the coordinator at ``address`` presents (a handshake with the party's
    certificate, since the coordinator requires one). Not trusted by itself: the attestation
    decides."""
    host, port = _split_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    with tempfile.TemporaryDirectory() as directory:
        # ssl loads a key only from a file: a private directory, gone after the load.
        cert_path, key_path = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        cert_path.write_bytes(identity.certificate_pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(identity.private_key_pem)
        context.load_cert_chain(cert_path, key_path)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=COORDINATOR_NAME) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise ServiceUnavailable("the FL coordinator", f"cannot reach {address}: {exc}") from None
    if not der:
        raise CoordinatorNotAttested("it presented no certificate")
    return der


class RemoteChannel:
    """A party's end of a round on the coordinator. Use as a context manager: a clean exit sends
    ``Done`` and waits for the round to end; an exception aborts the round with its reason."""

    def __init__(self, *, party: str, parties: tuple[str, ...], grpc_channel: grpc.Channel,
                 outgoing: queue.Queue[fl_pb2.Frame | None], responses: Iterator[fl_pb2.Frame],
                 max_message: int, timeout: float) -> None:
        self._party = party
        self._parties = parties
        self._grpc_channel = grpc_channel
        self._outgoing = outgoing
        self._responses = responses
        self._max_message = max_message
        self._sent: dict[str, int] = {}
        self._closed = False
        self.mailbox = Mailbox(party, parties, timeout=timeout, on_refusal=self._send_abort)
        self._reader = threading.Thread(target=self._read, name=f"fl-{party}-reader", daemon=True)
        self._reader.start()

    @property
    def party(self) -> str:
        return self._party

    @property
    def parties(self) -> tuple[str, ...]:
        return self._parties

    def send(self, to: str, kind: str, payload: bytes) -> None:
        if self.mailbox.aborted is not None:
            raise RoundAborted(self.mailbox.aborted)
        check_kind(kind)
        if to not in self._parties or to == self._party:
            raise UsageError(f"{to!r} is not another party of this round")
        if len(payload) > self._max_message:
            raise UsageError(f"a {len(payload)}-byte message exceeds the {self._max_message}-byte limit")
        self._sent[to] = self._sent.get(to, 0) + 1
        self._outgoing.put(fl_pb2.Frame(envelope=fl_pb2.Envelope(recipient=to, kind=kind, seq=self._sent[to],
                                                                 payload=bytes(payload))))

    def receive(self, sender: str, kind: str) -> bytes:
        return self.mailbox.take(sender, kind)

    def send_raw(self, frame: fl_pb2.Frame) -> None:
        """Put a frame on the stream as is (tests of the coordinator's checks use it)."""
        self._outgoing.put(frame)

    def _send_abort(self, reason: str) -> None:
        self._outgoing.put(fl_pb2.Frame(abort=fl_pb2.Abort(reason=reason)))
        self._outgoing.put(None)

    def _read(self) -> None:
        try:
            for frame in self._responses:
                body = frame.WhichOneof("body")
                if body == "envelope":
                    e = frame.envelope
                    self.mailbox.deliver(Message(sender=e.sender, recipient=e.recipient, kind=e.kind, seq=e.seq,
                                                 payload=e.payload))
                elif body == "abort":
                    self.mailbox.abort(frame.abort.reason)
                    return
        except grpc.RpcError as exc:
            if not self._closed:
                self.mailbox.abort(f"lost the coordinator ({exc.code().name})")
            return
        if not self._closed:
            self.mailbox.abort("the coordinator ended the round early")

    def close(self, *, timeout: float = 30.0) -> None:
        """Tell the coordinator this party is done and wait for the round to end.

        Raises:
            RoundAborted: the round was aborted meanwhile (output must not be kept).
        """
        if not self._closed:
            self._closed = True
            self._outgoing.put(fl_pb2.Frame(done=fl_pb2.Done()))
            self._outgoing.put(None)
            self._reader.join(timeout)
            self._grpc_channel.close()
        if self.mailbox.aborted is not None:
            raise RoundAborted(self.mailbox.aborted)

    def abort(self, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self.mailbox.abort(reason)
            self._send_abort(reason)
            self._reader.join(5.0)
            self._grpc_channel.close()

    def __enter__(self) -> RemoteChannel:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(f"{self._party} failed: {exc}")


def connect(address: str, *, identity: PartyIdentity, verifier: CoordinatorVerifier, round_id: str, job: str,
            max_message: int = DEFAULT_MAX_MESSAGE, timeout: float = DEFAULT_RECEIVE_TIMEOUT) -> RemoteChannel:
    """Attest the coordinator at ``address``, join ``round_id`` and wait until every party has.

    Raises:
        CoordinatorNotAttested: the coordinator did not prove its TEE and policy (nothing was sent).
        ServiceUnavailable: no coordinator answers at ``address``.
        RoundAborted: the round was aborted before it started (e.g. another party never came).
    """
    certificate_der = fetch_certificate(address, identity)
    certificate_pem = x509.load_der_x509_certificate(certificate_der).public_bytes(serialization.Encoding.PEM)
    credentials = grpc.ssl_channel_credentials(root_certificates=certificate_pem,
                                               private_key=identity.private_key_pem,
                                               certificate_chain=identity.certificate_pem)
    options = [*grpc_options(max_message), ("grpc.ssl_target_name_override", COORDINATOR_NAME)]
    grpc_channel = grpc.secure_channel(address, credentials, options=options)
    stub = fl_pb2_grpc.CoordinatorStub(grpc_channel)
    nonce = os.urandom(NONCE_BYTES)
    try:
        answer = stub.Attest(fl_pb2.AttestRequest(nonce=nonce), timeout=_CONNECT_TIMEOUT)
        verifier.verify(token=answer.token, certificate_sha256=answer.certificate_sha256,
                        signature=answer.signature, nonce=nonce, certificate_der=certificate_der)
    except grpc.RpcError as exc:
        grpc_channel.close()
        raise ServiceUnavailable("the FL coordinator", f"{address} did not answer Attest ({exc.code().name})") from None
    except BaseException:
        grpc_channel.close()
        raise
    outgoing: queue.Queue[fl_pb2.Frame | None] = queue.Queue()
    outgoing.put(fl_pb2.Frame(join=fl_pb2.Join(round_id=round_id, job=job)))

    def frames() -> Iterator[fl_pb2.Frame]:
        while True:
            frame = outgoing.get()
            if frame is None:
                return
            yield frame

    responses = stub.Round(frames())
    try:
        first = next(responses)
    except grpc.RpcError as exc:
        grpc_channel.close()
        raise RoundAborted(f"the coordinator refused {identity.name}: {exc.details()}") from None
    except StopIteration:
        grpc_channel.close()
        raise RoundAborted("the coordinator closed the round before it started") from None
    body = first.WhichOneof("body")
    if body == "abort":
        grpc_channel.close()
        raise RoundAborted(first.abort.reason)
    if body != "welcome" or first.welcome.round_id != round_id or identity.name not in first.welcome.parties:
        grpc_channel.close()
        raise RoundAborted(f"the coordinator answered Join with {body}")
    return RemoteChannel(party=identity.name, parties=tuple(first.welcome.parties), grpc_channel=grpc_channel,
                         outgoing=outgoing, responses=responses, max_message=max_message, timeout=timeout)
