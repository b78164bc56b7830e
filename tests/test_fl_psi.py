"""ECDH-PSI (ppml.fl.psi): agreement with set intersection, cardinality mode, what crosses the wire."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml.errors import InvalidPeerMessage
from ppml.fl import psi
from ppml.fl.psi import PsiSession, align, hash_to_group

nacl = pytest.importorskip("nacl.bindings")


def run(a: list, b: list, **kwargs: object) -> tuple[psi.PsiResult, psi.PsiResult, list[bytes]]:
    alice, bob = PsiSession(a, **kwargs), PsiSession(b, **kwargs)  # type: ignore[arg-type]
    wire = [alice.hello(), bob.hello()]
    wire += [alice.reply(wire[1]), bob.reply(wire[0])]
    return alice.finish(wire[3]), bob.finish(wire[2]), wire


ids = st.lists(st.binary(min_size=0, max_size=6), max_size=25)


@settings(max_examples=40, deadline=None)
@given(a=ids, b=ids)
def test_agrees_with_set_intersection(a: list[bytes], b: list[bytes]) -> None:
    ra, rb, _ = run(a + a[:3], b + b[:2])
    expected = sorted(set(a) & set(b))
    assert ra.intersection == expected and rb.intersection == expected
    assert ra.cardinality == rb.cardinality == len(expected)
    assert ra.peer_size == len(set(b)) and rb.peer_size == len(set(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [([], []), (["x"], []), ([], ["y"]), (["a", "b"], ["c", "d"]), (["a", "b", "b"], ["b", "a", "a"])],
    ids=["empty", "left-empty", "right-empty", "disjoint", "identical-with-duplicates"],
)
def test_edge_cases(a: list[str], b: list[str]) -> None:
    ra, rb, _ = run(a, b)
    assert ra.intersection == rb.intersection == sorted(set(a) & set(b))


def test_str_ids_come_back_as_given() -> None:
    ra, rb, _ = run(["ü1", "x"], ["x", "ü1", "z"])
    assert ra.intersection == rb.intersection == ["x", "ü1"]


def test_cardinality_only_gives_only_the_count() -> None:
    a, b = [f"id{i}" for i in range(50)], [f"id{i}" for i in range(30, 90)]
    ra, rb, _ = run(a, b, cardinality_only=True)
    assert ra.cardinality == rb.cardinality == 20
    assert ra.intersection is None and rb.intersection is None


def test_mode_mismatch_is_refused() -> None:
    alice, bob = PsiSession(["a"]), PsiSession(["a"], cardinality_only=True)
    with pytest.raises(InvalidPeerMessage, match="mode"):
        alice.reply(bob.hello())


def test_no_id_hash_or_plain_point_crosses_the_wire() -> None:
    a = [f"user-{i:04d}".encode() for i in range(40)]
    b = [f"user-{i:04d}".encode() for i in range(20, 70)]
    alice, bob = PsiSession(a), PsiSession(b)
    wire = [alice.hello(), bob.hello()]
    wire += [alice.reply(wire[1]), bob.reply(wire[0])]
    alice.finish(wire[3])
    bob.finish(wire[2])
    leader_ids, indexes = align([alice])
    assert bob.aligned_ids(indexes[0]) == leader_ids
    wire += indexes
    blob = b"".join(wire)
    for item in set(a) | set(b):
        digest = hashlib.sha512(b"ppml-psi-v1\x00" + item).digest()
        for secret in (item, digest[:32], digest[32:], hash_to_group(item)):
            assert secret not in blob
    # The coordinator cannot compare the two double-blinded sets: replies are sealed end to end.
    hello_points = {wire[0][i : i + 32] for i in range(43, len(wire[0]), 32)}
    for reply in wire[2:4]:
        assert not any(reply[i : i + 32] in hello_points for i in range(len(reply) - 31))


def test_invalid_points_are_refused() -> None:
    alice, bob = PsiSession(["a", "b"]), PsiSession(["b"])
    hello = bytearray(bob.hello())
    off_curve = bytes([2]) + bytes(31)  # y = 2 is not on edwards25519
    small_order = bytes(32)  # y = 0: a point of order 4
    for bad in (off_curve, small_order, b"\xff" * 32):
        forged = bytes(hello[:-32]) + bad
        with pytest.raises(InvalidPeerMessage, match="prime-order"):
            PsiSession(["a"]).reply(forged)
    forged_session = bytes(hello[:7]) + small_order + bytes(hello[39:])
    with pytest.raises(InvalidPeerMessage, match="session point"):
        alice.reply(forged_session)
    for truncated in (bytes(hello[:5]), bytes(hello[:-1]), b"XXXX" + bytes(hello[4:])):
        with pytest.raises(InvalidPeerMessage):
            PsiSession(["a"]).reply(truncated)


def test_tampered_reply_is_refused() -> None:
    alice, bob = PsiSession(["a", "b"]), PsiSession(["b"])
    alice.reply(bob.hello())
    reply = bytearray(bob.reply(alice.hello()))
    reply[-1] ^= 1
    with pytest.raises(InvalidPeerMessage, match="authenticate"):
        alice.finish(bytes(reply))


def test_process_pool_equals_sequential() -> None:
    items = [f"row{i}".encode() for i in range(300)]
    scalar = nacl.crypto_core_ed25519_scalar_reduce(bytes(range(64)))
    sequential = psi._hash_blind(items, scalar, 1)
    assert psi._hash_blind(items, scalar, 2) == sequential
    blob = b"".join(sequential)
    assert psi._exponentiate(blob, scalar, 2) == psi._exponentiate(blob, scalar, 1)
    ra, rb, _ = run(items[:200], items[100:], workers=2)
    assert ra.intersection == rb.intersection == sorted(items[100:200])


def test_n_party_alignment() -> None:
    parties = [
        [f"p{i}" for i in range(0, 60)] + ["dup", "dup"],
        [f"p{i}" for i in range(10, 80)] + ["dup"],
        [f"p{i}" for i in range(5, 50, 2)] + ["dup", "only-here"],
        [f"p{i}" for i in range(0, 100, 3)] + ["dup"],
    ]
    leader, others = parties[0], parties[1:]
    leader_sessions, peer_sessions = [], []
    for ids_ in others:
        mine, theirs = PsiSession(leader), PsiSession(ids_)
        mine_hello, theirs_hello = mine.hello(), theirs.hello()
        mine_reply, theirs_reply = mine.reply(theirs_hello), theirs.reply(mine_hello)
        mine.finish(theirs_reply)
        theirs.finish(mine_reply)
        leader_sessions.append(mine)
        peer_sessions.append(theirs)
    ordered, messages = align(leader_sessions)
    expected = set(leader)
    for ids_ in others:
        expected &= set(ids_)
    assert ordered == sorted(expected, key=str.encode) and ordered
    for session, message in zip(peer_sessions, messages, strict=True):
        assert session.aligned_ids(message) == ordered
