"""The coordinator: a gRPC server that relays one round between its parties and runs its own roles.

One coordinator process serves one round (``round_id``, ``job``) for a fixed list of remote
parties, named by their certificates, and optionally runs roles of its own (vertical LR's arbiter)
in threads that see the same :class:`~ppml.fl.channel.Channel` as a remote party. It is started
behind the TEE gate (``ppml tee run … -- ppml fl server …``) and answers ``Attest`` with the
session it inherited.

Rules it enforces on every inbound frame (a violation aborts the round for everyone, with the
reason): the stream's first frame is ``Join`` for this round and job, from a certificate whose
common name is one of the round's parties, connected once; an envelope names a participant, a
valid kind and the next sequence number for (sender, recipient); its payload is within
``max_message``; nobody disconnects before sending ``Done``. Sender names are taken from the
certificate, never from the frame. Parties that have not all joined within ``join_timeout`` abort
the round too.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import grpc

from ppml.errors import PpmlError, RoundAborted, UsageError
from ppml.fl.channel import DEFAULT_MAX_MESSAGE, DEFAULT_RECEIVE_TIMEOUT, Channel, Mailbox, Message, check_kind
from ppml.fl.service import fl_pb2, fl_pb2_grpc
from ppml.fl.service.attest import CoordinatorAttestation
from ppml.fl.service.identity import CoordinatorCertificate

__all__ = ["Coordinator", "RoundSpec", "grpc_options"]

_FRAME_OVERHEAD: Final = 4096


def grpc_options(max_message: int) -> list[tuple[str, Any]]:
    """Channel/server options both sides use: bounded messages, keepalive so a vanished peer is
    noticed in seconds rather than at the next write."""
    limit = max_message + _FRAME_OVERHEAD
    return [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
            ("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.max_pings_without_data", 0), ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000)]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RoundSpec:
    """What one coordinator serves: the round, its job, the remote parties (certificate common
    names) and the names of the coordinator's own roles."""

    round_id: str
    job: str
    parties: tuple[str, ...]
    local_parties: tuple[str, ...] = ()
    max_message: int = DEFAULT_MAX_MESSAGE
    join_timeout: float = 120.0
    receive_timeout: float = DEFAULT_RECEIVE_TIMEOUT

    def __post_init__(self) -> None:
        everyone = self.parties + self.local_parties
        if not self.round_id or not self.job or len(set(everyone)) != len(everyone) or len(everyone) < 2:
            raise UsageError("a round needs an id, a job and at least two distinct participants")

    @property
    def participants(self) -> tuple[str, ...]:
        return self.parties + self.local_parties


class _LocalChannel:
    """A coordinator role's channel: sends go through the router, receives from a mailbox."""

    def __init__(self, coordinator: Coordinator, party: str) -> None:
        self._coordinator = coordinator
        self._party = party
        self._sent: dict[str, int] = {}

    @property
    def party(self) -> str:
        return self._party

    @property
    def parties(self) -> tuple[str, ...]:
        return self._coordinator.spec.participants

    def send(self, to: str, kind: str, payload: bytes) -> None:
        self._sent[to] = self._sent.get(to, 0) + 1
        self._coordinator._route(self._party, to, kind, self._sent[to], payload)

    def receive(self, sender: str, kind: str) -> bytes:
        return self._coordinator._mailboxes[self._party].take(sender, kind)


class Coordinator(fl_pb2_grpc.CoordinatorServicer):
    """Serve one round; :meth:`run` blocks until it completes and returns the local roles' results."""

    def __init__(self, spec: RoundSpec, *, attestation: CoordinatorAttestation | None,
                 local_roles: Mapping[str, Callable[[Channel], Any]] | None = None,
                 recorder: Callable[[Message], None] | None = None,
                 certificate: CoordinatorCertificate | None = None) -> None:
        roles = dict(local_roles or {})
        if set(roles) != set(spec.local_parties):
            raise UsageError("give exactly one role for each of the coordinator's own parties")
        self.spec = spec
        self._attestation = attestation
        self._roles = roles
        self._recorder = recorder
        self._lock = threading.Lock()
        self._outboxes: dict[str, queue.Queue[fl_pb2.Frame | None]] = {p: queue.Queue() for p in spec.parties}
        self._mailboxes = {p: Mailbox(p, spec.participants, timeout=spec.receive_timeout, on_refusal=self.abort)
                           for p in spec.local_parties}
        self._joined: set[str] = set()
        self._done: set[str] = set()
        self._expected_seq: dict[tuple[str, str], int] = {}
        self._aborted: str | None = None
        self._finished = threading.Event()
        self._all_joined = threading.Event()
        self._results: dict[str, Any] = {}
        # ``certificate``: one the TEE made for a server it shares with this coordinator (the Flower
        # SuperLink's, whose attestation this coordinator answers); by default a fresh one.
        self.certificate = certificate or CoordinatorCertificate.generate()
        self._server: grpc.Server | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self, *, host: str, port: int, client_ca_pem: bytes) -> int:
        """Listen on ``host:port`` (0: any free port) with TLS, client certificates required;
        returns the port."""
        server = grpc.server(ThreadPoolExecutor(max_workers=2 * len(self.spec.parties) + 4),
                             options=grpc_options(self.spec.max_message))
        fl_pb2_grpc.add_CoordinatorServicer_to_server(self, server)
        credentials = grpc.ssl_server_credentials(
            [(self.certificate.private_key_pem, self.certificate.certificate_pem)],
            root_certificates=client_ca_pem, require_client_auth=True)
        bound = server.add_secure_port(f"{host}:{port}", credentials)
        if bound == 0:
            raise UsageError(f"cannot listen on {host}:{port}")
        server.start()
        self._server = server
        threading.Thread(target=self._watch_joins, name="fl-join-timeout", daemon=True).start()
        return bound

    def run(self) -> dict[str, Any]:
        """Wait for the round to end; stop the server. Raises RoundAborted with the reason."""
        self._finished.wait()
        if self._server is not None:
            self._server.stop(grace=2).wait()
        if self._aborted is not None:
            raise RoundAborted(self._aborted)
        return dict(self._results)

    def stop(self) -> None:
        """Stop serving (an attest-only coordinator, which never runs a round, ends this way)."""
        if self._server is not None:
            self._server.stop(grace=1).wait()

    def abort(self, reason: str) -> None:
        with self._lock:
            if self._aborted is not None or self._finished.is_set():
                return
            self._aborted = reason
            outboxes = list(self._outboxes.values())
        for outbox in outboxes:
            outbox.put(fl_pb2.Frame(abort=fl_pb2.Abort(reason=reason)))
            outbox.put(None)
        for mailbox in self._mailboxes.values():
            mailbox.abort(reason)
        self._finished.set()

    def _watch_joins(self) -> None:
        if not self._all_joined.wait(self.spec.join_timeout):
            missing = sorted(set(self.spec.parties) - self._joined)
            self.abort(f"parties {missing} did not join within {self.spec.join_timeout:.0f} s")

    def _maybe_finish(self) -> None:
        with self._lock:
            complete = (self._aborted is None and self._done == set(self.spec.parties)
                        and set(self._results) == set(self._roles))
            if not complete or self._finished.is_set():
                return
            outboxes = list(self._outboxes.values())
        for outbox in outboxes:
            outbox.put(None)
        self._finished.set()

    def _start_local_roles(self) -> None:
        for party, role in self._roles.items():
            threading.Thread(target=self._run_role, args=(party, role), name=f"fl-role-{party}", daemon=True).start()

    def _run_role(self, party: str, role: Callable[[Channel], Any]) -> None:
        try:
            result = role(_LocalChannel(self, party))
        except RoundAborted:
            return
        except Exception as exc:  # a role's failure ends the round, with its reason
            detail = exc.diagnostics() if isinstance(exc, PpmlError) else f"{type(exc).__name__}: {exc}"
            self.abort(f"{party} failed: {detail}")
            return
        with self._lock:
            self._results[party] = result
        self._maybe_finish()

    # -- routing -------------------------------------------------------------------------------------

    def _route(self, sender: str, recipient: str, kind: str, seq: int, payload: bytes) -> None:
        if self._aborted is not None:
            raise RoundAborted(self._aborted)
        problem = None
        try:
            check_kind(kind)
        except UsageError as exc:
            problem = str(exc)
        if recipient not in self.spec.participants or recipient == sender:
            problem = f"{sender} addressed {recipient!r}, not another party of this round"
        elif len(payload) > self.spec.max_message:
            problem = f"{sender} sent {len(payload)} bytes, over the {self.spec.max_message}-byte limit"
        with self._lock:
            expected = self._expected_seq.get((sender, recipient), 0) + 1
            if problem is None and seq != expected:
                problem = (f"message {seq} from {sender} to {recipient} is replayed or out of order "
                           f"(expected {expected})")
            if problem is None and recipient in self._done:
                problem = f"{sender} wrote to {recipient}, which has finished"
            if problem is None:
                self._expected_seq[(sender, recipient)] = expected
        if problem is not None:
            self.abort(problem)
            raise RoundAborted(problem)
        message = Message(sender=sender, recipient=recipient, kind=kind, seq=seq, payload=payload)
        if self._recorder is not None:
            self._recorder(message)
        if recipient in self._mailboxes:
            self._mailboxes[recipient].deliver(message)
        else:
            self._outboxes[recipient].put(fl_pb2.Frame(envelope=fl_pb2.Envelope(
                sender=sender, recipient=recipient, kind=kind, seq=seq, payload=payload)))

    # -- gRPC ----------------------------------------------------------------------------------------

    def Attest(self, request: fl_pb2.AttestRequest, context: grpc.ServicerContext) -> fl_pb2.AttestResponse:  # noqa: N802
        if self._attestation is None:
            return fl_pb2.AttestResponse()
        try:
            token, digest, signature = self._attestation.answer(request.nonce, self.certificate.certificate_der)
        except UsageError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return fl_pb2.AttestResponse(token=token, certificate_sha256=digest, signature=signature)

    def Round(self, request_iterator: Iterator[fl_pb2.Frame],  # noqa: N802
              context: grpc.ServicerContext) -> Iterator[fl_pb2.Frame]:
        party = _common_name(context)
        if party not in self.spec.parties:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{party!r} is not a party of this round")
        try:
            first = next(request_iterator)
        except (StopIteration, grpc.RpcError):
            return
        if first.WhichOneof("body") != "join" or first.join.round_id != self.spec.round_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"expected Join for round {self.spec.round_id!r}")
        if first.join.job != self.spec.job:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"this round runs {self.spec.job!r}, not {first.join.job!r}")
        with self._lock:
            if party in self._joined:
                already = True
            else:
                already = False
                self._joined.add(party)
                everyone = self._joined == set(self.spec.parties)
        if already:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{party} is already connected")
        if self._aborted is not None:
            yield fl_pb2.Frame(abort=fl_pb2.Abort(reason=self._aborted))
            return
        if everyone:
            welcome = fl_pb2.Frame(welcome=fl_pb2.Welcome(round_id=self.spec.round_id,
                                                          parties=list(self.spec.participants)))
            for outbox in self._outboxes.values():
                outbox.put(welcome)
            self._all_joined.set()
            self._start_local_roles()
        threading.Thread(target=self._read, args=(party, request_iterator), name=f"fl-read-{party}",
                         daemon=True).start()
        outbox = self._outboxes[party]
        while True:
            frame = outbox.get()
            if frame is None:
                return
            yield frame

    def _read(self, party: str, frames: Iterator[fl_pb2.Frame]) -> None:
        try:
            for frame in frames:
                body = frame.WhichOneof("body")
                if body == "envelope":
                    envelope = frame.envelope
                    try:
                        self._route(party, envelope.recipient, envelope.kind, envelope.seq, envelope.payload)
                    except RoundAborted:
                        return
                elif body == "done":
                    with self._lock:
                        self._done.add(party)
                    self._maybe_finish()
                    return
                elif body == "abort":
                    self.abort(f"{party} aborted: {frame.abort.reason[:500]}")
                    return
                else:
                    self.abort(f"{party} sent an unexpected {body} frame")
                    return
        except grpc.RpcError:
            pass
        if party not in self._done:
            self.abort(f"{party} disconnected mid-protocol")


def _common_name(context: grpc.ServicerContext) -> str:
    names = context.auth_context().get("x509_common_name") or []
    return names[0].decode("utf-8", "replace") if names else ""
