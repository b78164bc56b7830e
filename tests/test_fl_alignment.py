"""PSI and N-party alignment as channel roles (ppml.fl.alignment): results, and what the relay sees."""

from __future__ import annotations

import random

import pytest

from ppml.fl.alignment import align_role, psi_role
from ppml.fl.channel import LocalHub, run_parties
from ppml.fl.psi import PsiSession, hash_to_group

pytest.importorskip("nacl")


def assert_nothing_readable(hub: LocalHub, ids: set[str]) -> None:
    """No id and no unblinded hash-to-group point of any id appears in any relayed payload."""
    payloads = b"".join(message.payload for message in hub.messages)
    for item in ids:
        assert item.encode() not in payloads
        assert hash_to_group(item) not in payloads


def test_two_party_psi_over_a_channel_agrees_with_set_intersection() -> None:
    rng = random.Random(5)
    a = [f"user-{rng.randrange(400):06d}" for _ in range(200)]
    b = [f"user-{rng.randrange(400):06d}" for _ in range(150)]
    hub = LocalHub(["a", "b", "coordinator"])
    results = run_parties(hub, {"a": lambda ch: psi_role(ch, a, peer="b"), "b": lambda ch: psi_role(ch, b, peer="a")})
    expected = sorted(set(a) & set(b))
    assert results["a"].intersection == results["b"].intersection == expected
    assert [m.kind for m in hub.received_by("b")] == ["psi-hello", "psi-reply"]
    assert_nothing_readable(hub, set(a) | set(b))


@pytest.mark.parametrize(("a", "b"), [([], ["x"]), (["x", "y"], ["z"]), (["x", "x", "y"], ["y", "y"])])
def test_edge_cases(a: list[str], b: list[str]) -> None:
    hub = LocalHub(["a", "b"])
    results = run_parties(hub, {"a": lambda ch: psi_role(ch, a, peer="b", cardinality_only=True),
                                "b": lambda ch: psi_role(ch, b, peer="a", cardinality_only=True)})
    assert results["a"].cardinality == results["b"].cardinality == len(set(a) & set(b))
    assert results["a"].intersection is None


def test_three_parties_end_with_the_same_ordered_common_ids() -> None:
    rng = random.Random(9)
    sets = {name: [f"person-{rng.randrange(300):06d}" for _ in range(160)] for name in ("label", "h1", "h2")}
    hub = LocalHub(["label", "h1", "h2", "coordinator"])
    roles = {name: (lambda ch, ids=ids: align_role(ch, ids, leader="label", members=["h1", "h2"]))
             for name, ids in sets.items()}
    results = run_parties(hub, roles)
    expected = set(sets["label"]) & set(sets["h1"]) & set(sets["h2"])
    assert results["label"] == results["h1"] == results["h2"]
    assert set(results["label"]) == expected and len(results["label"]) == len(expected)
    assert_nothing_readable(hub, set().union(*map(set, sets.values())))
    # The members never talk to each other: a star around the leader.
    assert {(m.sender, m.recipient) for m in hub.messages} <= {
        ("label", "h1"), ("h1", "label"), ("label", "h2"), ("h2", "label")}


def test_an_alignment_member_learns_only_the_size_of_its_intersection_with_the_leader() -> None:
    leader = PsiSession(["a", "b", "c"], align_as="leader")
    member = PsiSession(["b", "c", "d"], align_as="member")
    leader_reply, member_reply = leader.reply(member.hello()), member.reply(leader.hello())
    member_result = member.finish(leader_reply)
    assert member_result.cardinality == 2 and member_result.intersection is None
    assert leader.finish(member_reply).intersection == ["b", "c"]
