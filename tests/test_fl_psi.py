"""DH-PSI with X25519 (ppml.fl.psi): agreement with set intersection, cardinality and alignment modes,
what crosses the wire, commutativity on curve25519 and its twist, refused inputs, the frozen v2 format."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml.errors import InvalidPeerMessage
from ppml.fl import psi
from ppml.fl.psi import PsiSession, align, hash_to_group

nacl = pytest.importorskip("nacl.bindings")

P = 2**255 - 19
VECTORS = Path(__file__).parent / "vectors" / "fl-psi"
# The canonical u-coordinates of small order (Bernstein's list for curve25519 and its twist).
SMALL_ORDER = [
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P - 1,
]


def u_bytes(value: int) -> bytes:
    return value.to_bytes(32, "little")


def on_curve(u: int) -> bool:
    """True if u is the u-coordinate of a point of curve25519, False if of its twist."""
    rhs = (u * u * u + 486662 * u * u + u) % P
    return rhs == 0 or pow(rhs, (P - 1) // 2, P) == 1


def counter_random(seed: bytes):  # type: ignore[no-untyped-def]
    """A deterministic byte stream for frozen vectors: SHA-256(seed || counter) blocks."""
    counter = 0

    def random_bytes(n: int) -> bytes:
        nonlocal counter
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    return random_bytes


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
        digest = hashlib.blake2b(b"ppml-psi-v2\x00" + item, digest_size=32).digest()
        for secret in (item, digest, hash_to_group(item)):
            assert secret not in blob
    # The coordinator cannot compare the two double-blinded sets: replies are sealed end to end.
    hello_values = {wire[0][i : i + 32] for i in range(43, len(wire[0]), 32)}
    double_blinded = set(alice._peer_double or {}) | set(bob._peer_double or {})
    assert len(double_blinded) == 70  # the union: a common id has one double-blinded value
    for reply in wire[2:4]:
        assert not any(reply[i : i + 32] in hello_values | double_blinded for i in range(len(reply) - 31))


def reference_hash(item: bytes) -> bytes:
    """H(x) as the module docstring draws it, with Python integers (slow, obviously right)."""
    for counter in range(256):
        digest = hashlib.blake2b(b"ppml-psi-v2\x00" + bytes([counter]) + item, digest_size=32).digest()
        u = (int.from_bytes(digest, "little") % 2**255) % P
        if u and on_curve(u):
            return u_bytes(u)
    raise AssertionError


def test_hash_lands_on_the_curve_as_drawn() -> None:
    items: list[bytes | str] = [b"", b"a", "ü", b"x" * 1000] + [f"id-{i}".encode() for i in range(300)]
    for item in items:
        raw = item.encode() if isinstance(item, str) else item
        assert hash_to_group(item) == reference_hash(raw)
    # About half the first candidates miss the curve, so the retry path is exercised.
    first = [hashlib.blake2b(b"ppml-psi-v2\x00\x00" + f"id-{i}".encode(), digest_size=32).digest()
             for i in range(300)]
    misses = sum(not on_curve((int.from_bytes(d, "little") % 2**255) % P) for d in first)
    assert 100 < misses < 200


def test_hello_values_all_lie_on_the_curve() -> None:
    """No value says on which curve H(x) lies (a twist value would leak one bit per id)."""
    hello = PsiSession([f"id-{i}" for i in range(300)]).hello()
    values = [int.from_bytes(hello[i : i + 32], "little") for i in range(43, len(hello), 32)]
    assert len(values) == 300 and all(on_curve(u) for u in values)


def test_blinding_commutes_on_the_curve_and_its_twist() -> None:
    rng = random.Random(14)
    scalars = [psi._random_scalar(rng.randbytes) for _ in range(2)]
    a, b = scalars
    seen = {True: 0, False: 0}
    for _ in range(300):
        u = rng.randrange(2, P - 1)
        seen[on_curve(u)] += 1
        value = u_bytes(u)
        once_a, once_b = nacl.crypto_scalarmult(a, value), nacl.crypto_scalarmult(b, value)
        assert nacl.crypto_scalarmult(b, once_a) == nacl.crypto_scalarmult(a, once_b)
        assert int.from_bytes(once_a, "little") < P  # blinded values are canonical on the wire
    assert seen[True] > 100 and seen[False] > 100  # both the curve and the twist were exercised
    # The digest fed to X25519 unreduced (bit 255 set or >= p) gives what its canonical u gives.
    aliases = [(u, u + 2**255) for u in [rng.randrange(2, P - 1) for _ in range(50)]]
    aliases += [(u, alias) for u in range(2, 19) for alias in (u + P, u + P + 2**255)]
    for u, alias in aliases:
        assert nacl.crypto_scalarmult(a, u_bytes(alias)) == nacl.crypto_scalarmult(a, u_bytes(u))
    items = [f"twist-{i}".encode() for i in range(200)]
    once = psi._hash_blind(items, a, 1)
    assert psi._exponentiate(once, b, 1) == psi._exponentiate(psi._hash_blind(items, b, 1), a, 1)


def test_scalars_are_clamped() -> None:
    scalar = psi._random_scalar(lambda n: b"\xff" * n)
    assert scalar[0] % 8 == 0 and scalar[31] == 0x7F
    assert psi._random_scalar(lambda n: bytes(n))[31] == 0x40


def test_non_canonical_and_small_order_values_are_refused() -> None:
    alice, bob = PsiSession(["a", "b"]), PsiSession(["b"])
    hello = bytearray(bob.hello())
    non_canonical = [u_bytes(P), u_bytes(P + 1), u_bytes(2**255 - 1), u_bytes(2**255 + 9), b"\xff" * 32]
    for bad in non_canonical:
        for forged in (bytes(hello[:-32]) + bad, bytes(hello[:7]) + bad + bytes(hello[39:])):
            with pytest.raises(InvalidPeerMessage, match="not canonical"):
                PsiSession(["a"]).reply(forged)
    for small in SMALL_ORDER:
        forged = bytes(hello[:-32]) + u_bytes(small)
        with pytest.raises(InvalidPeerMessage, match="small order"):
            PsiSession(["a"]).reply(forged)
        with pytest.raises(InvalidPeerMessage, match="small order"):
            psi._exponentiate(bytes(hello[-64:-32]) * 5 + u_bytes(small), psi._random_scalar(bytes), 2)
        with pytest.raises(InvalidPeerMessage, match="session value is of small order"):
            alice.reply(bytes(hello[:7]) + u_bytes(small) + bytes(hello[39:]))
    for truncated in (bytes(hello[:5]), bytes(hello[:-1]), b"XXXX" + bytes(hello[4:]), bytes(hello[:20])):
        with pytest.raises(InvalidPeerMessage):
            PsiSession(["a"]).reply(truncated)
    old_version = bytes(hello[:4]) + b"\x01" + bytes(hello[5:])
    with pytest.raises(InvalidPeerMessage, match="version"):
        PsiSession(["a"]).reply(old_version)


def test_tampered_reply_is_refused() -> None:
    alice, bob = PsiSession(["a", "b"]), PsiSession(["b"])
    alice.reply(bob.hello())
    reply = bytearray(bob.reply(alice.hello()))
    reply[-1] ^= 1
    with pytest.raises(InvalidPeerMessage, match="authenticate"):
        alice.finish(bytes(reply))


def test_process_pool_equals_sequential() -> None:
    items = [f"row{i}".encode() for i in range(300)]
    scalar = psi._random_scalar(lambda n: bytes(range(n)))
    blob = psi._hash_blind(items, scalar, 1)
    assert psi._hash_blind(items, scalar, 2) == blob
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


def frozen_transcript() -> dict[str, str]:
    alice = PsiSession(["a", "b", "c", "ü"], random_bytes=counter_random(b"alice"))
    bob = PsiSession([b"c", "ü", "d"], random_bytes=counter_random(b"bob"))
    hello_a, hello_b = alice.hello(), bob.hello()
    return {
        "hello_alice": hello_a.hex(),
        "hello_bob": hello_b.hex(),
        "reply_alice": alice.reply(hello_b).hex(),
        "reply_bob": bob.reply(hello_a).hex(),
    }


def test_frozen_v2_vector() -> None:
    """Known randomness gives these exact bytes forever; a format change needs a new version."""
    vector = json.loads((VECTORS / "v2-transcript.json").read_text())
    assert frozen_transcript() == vector["messages"]
    alice = PsiSession(["a", "b", "c", "ü"], random_bytes=counter_random(b"alice"))
    alice.reply(bytes.fromhex(vector["messages"]["hello_bob"]))
    assert alice.finish(bytes.fromhex(vector["messages"]["reply_bob"])).intersection == ["c", "ü"]


def test_alignment_mode_sorts_only_the_leaders_reply() -> None:
    a, b = [f"id{i}" for i in range(40)], [f"id{i}" for i in range(20, 70)]
    leader, member = PsiSession(a, align_as="leader"), PsiSession(b, align_as="member")
    leader_reply, member_reply = leader.reply(member.hello()), member.reply(leader.hello())
    assert leader.finish(member_reply).intersection == sorted(set(a) & set(b))
    assert member.finish(leader_reply).intersection is None
    sorted_values = psi._split(psi._parse_counted(member._open(leader_reply, psi._REPLY), 32))
    assert sorted_values == sorted(sorted_values)
    in_leader_order = psi._split(psi._parse_counted(leader._open(member_reply, psi._REPLY), 32))
    assert in_leader_order != sorted(in_leader_order)  # 40 pseudorandom values: sorted with odds 1/40!
    ordered, messages = align([leader])
    assert member.aligned_ids(messages[0]) == ordered == sorted(set(a) & set(b))
