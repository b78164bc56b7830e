"""The message channel every FL protocol is written against, and its in-process implementation.

A protocol role (a PSI party, the label party of vertical LR, the arbiter) is a function of a
:class:`Channel`: it sends byte payloads to named parties and receives them *in protocol order*,
naming the sender and the kind of message it expects next. Two implementations share that shape:
:class:`LocalHub` here (threads in one process: unit tests, benchmarks) and the gRPC client of
:mod:`ppml.fl.service` (parties in their own processes, over TLS, relayed by the attested
coordinator). Payloads are bytes in formats their protocol documents (:mod:`ppml.fl.wire`): no pickle.

Ordering rules, enforced by both implementations: messages from one sender to one recipient carry
consecutive sequence numbers starting at 1; a recipient that expects kind K from S and finds
another kind, a repeated or a skipped number refuses it (:class:`~ppml.errors.InvalidPeerMessage`)
and the whole round aborts: every party's next ``receive`` raises
:class:`~ppml.errors.FederatedLearningError` naming the reason, so no party goes on to write output.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final, Protocol, TypeVar

from ppml.errors import InvalidPeerMessage, RoundAborted, UsageError

__all__ = ["DEFAULT_MAX_MESSAGE", "Channel", "LocalHub", "Mailbox", "Message", "RoundAborted", "run_parties"]

DEFAULT_MAX_MESSAGE: Final = 64 << 20
DEFAULT_RECEIVE_TIMEOUT: Final = 300.0
_KIND_MAX: Final = 64

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One relayed message, as a recipient (or a recorder) sees it."""

    sender: str
    recipient: str
    kind: str
    seq: int
    payload: bytes = dataclasses.field(repr=False)


class Channel(Protocol):
    """One party's end of a federated round."""

    @property
    def party(self) -> str:
        """This party's name (for a remote party: its certificate's common name)."""
        ...

    @property
    def parties(self) -> tuple[str, ...]:
        """Every participant of the round, this one included, in a fixed order."""
        ...

    def send(self, to: str, kind: str, payload: bytes) -> None:
        """Send ``payload`` to party ``to``.

        Raises:
            RoundAborted: the round was aborted.
            UsageError: ``to`` is not a participant, or the payload exceeds the size limit.
        """
        ...

    def receive(self, sender: str, kind: str) -> bytes:
        """The next message from ``sender``, which must be of ``kind``.

        Raises:
            InvalidPeerMessage: the next message is of another kind or out of sequence (the round
                is aborted as well).
            RoundAborted: the round was aborted, or nothing came within the timeout.
        """
        ...


def check_kind(kind: str) -> None:
    if not kind or len(kind) > _KIND_MAX or not kind.isascii() or not kind.isprintable():
        raise UsageError(f"a message kind is 1-{_KIND_MAX} printable ASCII characters, not {kind!r}")


class LocalHub:
    """Parties as threads of one process, every message recorded (``messages``) for inspection.

    ``max_message`` bounds every payload; ``timeout`` bounds every wait, so a party that stops
    answering aborts the round instead of hanging it.
    """

    def __init__(self, parties: Sequence[str], *, max_message: int = DEFAULT_MAX_MESSAGE,
                 timeout: float = DEFAULT_RECEIVE_TIMEOUT) -> None:
        if len(set(parties)) != len(parties) or len(parties) < 2:
            raise UsageError("a round needs at least two distinct parties")
        self.parties = tuple(parties)
        self.max_message = max_message
        self.timeout = timeout
        self._lock = threading.Lock()
        self._queues = {(recipient, sender): queue.Queue[Message]()
                        for recipient in parties for sender in parties if sender != recipient}
        self._sent_seq = dict.fromkeys(self._queues, 0)
        self._received_seq = dict.fromkeys(self._queues, 0)
        self._aborted: str | None = None
        self._abort_event = threading.Event()
        self.messages: list[Message] = []

    def channel(self, party: str) -> LocalChannel:
        if party not in self.parties:
            raise UsageError(f"{party!r} is not a party of this round")
        return LocalChannel(self, party)

    def abort(self, reason: str) -> None:
        """Stop the round; the first reason sticks."""
        with self._lock:
            if self._aborted is None:
                self._aborted = reason
        self._abort_event.set()

    @property
    def aborted(self) -> str | None:
        return self._aborted

    def received_by(self, party: str) -> list[Message]:
        """Every message recorded as sent to ``party``, in sending order."""
        with self._lock:
            return [message for message in self.messages if message.recipient == party]

    def _check_open(self) -> None:
        if self._aborted is not None:
            raise RoundAborted(self._aborted)

    def _send(self, sender: str, to: str, kind: str, payload: bytes) -> None:
        self._check_open()
        check_kind(kind)
        if to not in self.parties or to == sender:
            raise UsageError(f"{to!r} is not another party of this round")
        if len(payload) > self.max_message:
            raise UsageError(f"a {len(payload)}-byte message exceeds the {self.max_message}-byte limit")
        with self._lock:
            self._sent_seq[(to, sender)] += 1
            message = Message(sender=sender, recipient=to, kind=kind, seq=self._sent_seq[(to, sender)],
                              payload=bytes(payload))
            self.messages.append(message)
        self._queues[(to, sender)].put(message)

    def _receive(self, party: str, sender: str, kind: str) -> bytes:
        check_kind(kind)
        if sender not in self.parties or sender == party:
            raise UsageError(f"{sender!r} is not another party of this round")
        source = self._queues[(party, sender)]
        waited = 0.0
        while True:
            self._check_open()
            try:
                message = source.get(timeout=0.05)
                break
            except queue.Empty:
                waited += 0.05
                if waited >= self.timeout:
                    self.abort(f"{party} waited {self.timeout:.0f} s for {kind!r} from {sender}")
        return accept(self, party, message, sender=sender, kind=kind, seen=self._received_seq)


def accept(hub: LocalHub | None, party: str, message: Message, *, sender: str, kind: str,
           seen: dict[tuple[str, str], int], abort: Callable[[str], None] | None = None) -> bytes:
    """Check a received message against what the protocol expects next; on a mismatch abort the
    round (through ``hub`` or ``abort``) and raise InvalidPeerMessage."""
    expected_seq = seen[(party, sender)] + 1
    problem = None
    if message.sender != sender:
        problem = f"expected a message from {sender}, got one from {message.sender}"
    elif message.seq != expected_seq:
        problem = (f"message {message.seq} from {sender} is replayed or out of order "
                   f"(expected {expected_seq})")
    elif message.kind != kind:
        problem = f"expected {kind!r} from {sender}, got {message.kind!r}"
    if problem is not None:
        if hub is not None:
            hub.abort(f"{party} refused a message: {problem}")
        elif abort is not None:
            abort(f"{party} refused a message: {problem}")
        raise InvalidPeerMessage(problem)
    seen[(party, sender)] = expected_seq
    return message.payload


class LocalChannel:
    """A party's end of a :class:`LocalHub`."""

    def __init__(self, hub: LocalHub, party: str) -> None:
        self._hub = hub
        self._party = party

    @property
    def party(self) -> str:
        return self._party

    @property
    def parties(self) -> tuple[str, ...]:
        return self._hub.parties

    def send(self, to: str, kind: str, payload: bytes) -> None:
        self._hub._send(self._party, to, kind, payload)

    def receive(self, sender: str, kind: str) -> bytes:
        return self._hub._receive(self._party, sender, kind)


class Mailbox:
    """What a party has received but not yet consumed, per sender, in arrival order: the receiving
    half of a remote channel (and of the coordinator's own roles). A reader thread calls
    :meth:`deliver` and :meth:`abort`; the protocol calls :meth:`take`."""

    def __init__(self, party: str, parties: Sequence[str], *, timeout: float = DEFAULT_RECEIVE_TIMEOUT,
                 on_refusal: Callable[[str], None] | None = None) -> None:
        self.party = party
        self.parties = tuple(parties)
        self.timeout = timeout
        self._on_refusal = on_refusal
        self._condition = threading.Condition()
        self._pending: dict[str, list[Message]] = {sender: [] for sender in parties if sender != party}
        self._seen = {(party, sender): 0 for sender in self._pending}
        self._aborted: str | None = None

    def deliver(self, message: Message) -> None:
        with self._condition:
            if message.sender not in self._pending:
                self._aborted = self._aborted or f"{self.party} got a message from unknown party {message.sender!r}"
            else:
                self._pending[message.sender].append(message)
            self._condition.notify_all()

    def abort(self, reason: str) -> None:
        with self._condition:
            if self._aborted is None:
                self._aborted = reason
            self._condition.notify_all()

    @property
    def aborted(self) -> str | None:
        return self._aborted

    def take(self, sender: str, kind: str) -> bytes:
        """The next message from ``sender``, checked against ``kind`` and the sequence."""
        check_kind(kind)
        if sender not in self._pending:
            raise UsageError(f"{sender!r} is not another party of this round")
        with self._condition:
            arrived = self._condition.wait_for(lambda: self._aborted is not None or self._pending[sender],
                                               timeout=self.timeout)
            if self._aborted is not None:
                raise RoundAborted(self._aborted)
            if not arrived:
                self._aborted = f"{self.party} waited {self.timeout:.0f} s for {kind!r} from {sender}"
                if self._on_refusal is not None:
                    self._on_refusal(self._aborted)
                raise RoundAborted(self._aborted)
            message = self._pending[sender].pop(0)
            return accept(None, self.party, message, sender=sender, kind=kind, seen=self._seen,
                          abort=self._abort_and_report)

    def _abort_and_report(self, reason: str) -> None:
        self._aborted = self._aborted or reason
        if self._on_refusal is not None:
            self._on_refusal(reason)


def run_parties(hub: LocalHub, roles: Mapping[str, Callable[[Channel], T]]) -> dict[str, T]:
    """Run each party's role in its own thread over ``hub``; return every role's result.

    The first role to fail aborts the round (so the others stop at their next receive) and its
    exception is raised here once every thread has ended.
    """
    errors: list[BaseException] = []

    def run(party: str, role: Callable[[Channel], T]) -> T:
        try:
            return role(hub.channel(party))
        except BaseException as exc:
            with hub._lock:
                errors.append(exc)
            hub.abort(f"{party} failed: {exc}")
            raise

    with ThreadPoolExecutor(max_workers=len(roles)) as pool:
        futures = {party: pool.submit(run, party, role) for party, role in roles.items()}
        results: dict[str, T] = {}
        for party, future in futures.items():
            try:
                results[party] = future.result()
            except BaseException:  # re-raised below as the first failure
                pass
    if errors:
        first = next((exc for exc in errors if not isinstance(exc, RoundAborted)), errors[0])
        raise first
    return results
