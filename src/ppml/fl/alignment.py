"""PSI and N-party id alignment as roles on a :class:`~ppml.fl.channel.Channel`.

Two-party PSI (:func:`psi_role`): both parties send HELLO, then REPLY, then finish, as
:mod:`ppml.fl.psi` draws it; over the FL service the coordinator relays three opaque messages each
way and learns the set sizes and message lengths only.

Alignment for vertical FL (:func:`align_role`): the leader (in ppml's examples, the label party)
runs one PSI in *alignment mode* with every other member, then sends each an INDEXES message:
every party ends with the same ordered list of the ids all parties hold. A member learns only the
size of its intersection with the leader and the final list; the leader learns each pairwise
intersection (a star of PSIs: the price of not pooling hashes anywhere); the coordinator learns
sizes only.
"""

from __future__ import annotations

from collections.abc import Sequence

from ppml.errors import UsageError
from ppml.fl.channel import Channel
from ppml.fl.psi import Id, PsiResult, PsiSession, align

__all__ = ["align_role", "psi_role"]


def _exchange(channel: Channel, session: PsiSession, peer: str) -> None:
    channel.send(peer, "psi-hello", session.hello())
    channel.send(peer, "psi-reply", session.reply(channel.receive(peer, "psi-hello")))


def psi_role(channel: Channel, ids: Sequence[Id], *, peer: str, cardinality_only: bool = False,
             workers: int = 1) -> PsiResult:
    """This party's side of a two-party PSI with ``peer``; both learn the intersection (or, with
    ``cardinality_only``, its size)."""
    session = PsiSession(ids, cardinality_only=cardinality_only, workers=workers)
    _exchange(channel, session, peer)
    return session.finish(channel.receive(peer, "psi-reply"))


def align_role(channel: Channel, ids: Sequence[Id], *, leader: str, members: Sequence[str],
               workers: int = 1) -> list[Id]:
    """The ids every party of ``[leader, *members]`` holds, in one order every party gets."""
    if leader in members or len(set(members)) != len(members) or not members:
        raise UsageError("alignment needs a leader and one or more distinct other members")
    if channel.party == leader:
        sessions = []
        for member in members:
            session = PsiSession(ids, align_as="leader", workers=workers)
            _exchange(channel, session, member)
            sessions.append(session)
        for member, session in zip(members, sessions, strict=True):
            session.finish(channel.receive(member, "psi-reply"))
        ordered, messages = align(sessions)
        for member, message in zip(members, messages, strict=True):
            channel.send(member, "psi-indexes", message)
        return ordered
    if channel.party not in members:
        raise UsageError(f"{channel.party} is neither the leader nor a member of this alignment")
    session = PsiSession(ids, align_as="member", workers=workers)
    _exchange(channel, session, leader)
    session.finish(channel.receive(leader, "psi-reply"))
    return session.aligned_ids(channel.receive(leader, "psi-indexes"))
