"""Private set intersection: semi-honest ECDH-PSI over the prime-order subgroup of edwards25519.

Construction (two parties A and B, each holding a set of ids; all group operations in libsodium)::

    H(x)  = from_uniform(d[:32]) + from_uniform(d[32:]),  d = SHA-512("ppml-psi-v1\\0" || x)

Two Elligator2 maps with cofactor clearing, added, as in RFC 9380's random-oracle ``hash_to_curve``
(same shape, not byte-compatible with its suite): ``H`` lands in the prime-order subgroup of order
``L`` and is modelled as a random oracle. Each party draws a secret scalar (``a`` and ``b``, uniform
mod ``L``) and an ephemeral session scalar, then::

    1. A -> B  HELLO(A) = pub_A, sorted { H(x)^a : x in A }     B -> A  HELLO(B), likewise with b
    2. A -> B  REPLY(A) = AEAD_k( [ P^a for P in HELLO(B) ] )   in B's order (sorted in
       B -> A  REPLY(B) = AEAD_k( [ P^b for P in HELLO(A) ] )   cardinality-only mode)
    3. A computes { H(y)^ba } from HELLO(B) itself and receives { H(x)^ab } in its own order:
       equal values are common ids, and the order tells A which of its ids they are. B likewise.

``k`` is an AEAD key from an ephemeral Diffie-Hellman between ``pub_A`` and ``pub_B`` bound to both
hellos, so a relaying coordinator never sees double-blinded values: it could otherwise compare
REPLY(A) with REPLY(B) and learn |A ∩ B| and which positions match.

Security argument (semi-honest parties and coordinator, random-oracle ``H``): under DDH in the
prime-order group, ``(H(x)^a)`` for ``x`` in A is indistinguishable from random points to anyone
without ``a``, and ``H(y)^ab`` for ``y`` not in A is pseudorandom to A (the classic
Huberman-Franklin-Hogg / Meadows DH-PSI argument; see also Ion et al., "On deploying secure
computing", EuroS&P 2020). Hence:

* each party learns ``A ∩ B`` (or only ``|A ∩ B|`` in cardinality-only mode, where the replies are
  sorted and no longer in the receiver's order) and the size of the other's set;
* nothing about the other's non-intersecting ids, which it sees only as pseudorandom points;
* a coordinator that relays the messages learns the two set sizes and the message lengths only.

Ids are deduplicated first (set semantics): a set with duplicates behaves as its set, so the
message sizes are the numbers of *distinct* ids. ``str`` ids are UTF-8 encoded, so ``"a"`` and
``b"a"`` are the same id. A malicious party could send points for guessed ids or a wrong reply;
this protocol does not defend against it (semi-honest only, as the design asks). Incoming points are
checked to be canonical, in the main subgroup and not of small order before they are
exponentiated, so a malformed message can never make a party multiply its secret by a bad point.

Messages (all integers big-endian; every length checked before slicing)::

    header   magic "PPSI" (4) | version 0x01 (1) | kind (1) | mode (1: 0 = intersection, 1 = count,
             2 = alignment: the leader's reply is sorted, the member's is in the leader's order)
    HELLO    header(kind 1) | session point (32) | count u32 | count x point (32), ascending
    REPLY    header(kind 2) | nonce (24) | XChaCha20-Poly1305( count u32 | count x point (32) )
    INDEXES  header(kind 3) | nonce (24) | XChaCha20-Poly1305( count u32 | count x index u32 )

The AEAD's associated data is the header followed by the BLAKE2b-256 digest of the sender's HELLO.
INDEXES carries N-party alignment (see :func:`align`). No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from ppml.errors import InvalidPeerMessage, UsageError

__all__ = [
    "PsiResult",
    "PsiSession",
    "align",
    "hash_to_group",
]

_DOMAIN = b"ppml-psi-v1\x00"
_MAGIC = b"PPSI"
_VERSION = 1
_HELLO, _REPLY, _INDEXES = 1, 2, 3
_HEADER = struct.Struct(">4sBBB")
_COUNT = struct.Struct(">I")
_POINT = 32
_NONCE = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_MAX_COUNT = 1 << 28

Id = bytes | str


def _id_bytes(item: Id) -> bytes:
    return item.encode("utf-8") if isinstance(item, str) else bytes(item)


def hash_to_group(item: Id) -> bytes:
    """The point ``H(item)`` of the prime-order subgroup (see the module docstring)."""
    digest = hashlib.sha512(_DOMAIN + _id_bytes(item)).digest()
    return sodium.crypto_core_ed25519_add(
        sodium.crypto_core_ed25519_from_uniform(digest[:32]),
        sodium.crypto_core_ed25519_from_uniform(digest[32:]),
    )


def _hash_blind_chunk(args: tuple[list[bytes], bytes]) -> bytes:
    ids, scalar = args
    return b"".join(sodium.crypto_scalarmult_ed25519_noclamp(scalar, hash_to_group(i)) for i in ids)


def _exponentiate_chunk(args: tuple[bytes, bytes]) -> bytes:
    points, scalar = args
    out = []
    for offset in range(0, len(points), _POINT):
        point = points[offset : offset + _POINT]
        if not sodium.crypto_core_ed25519_is_valid_point(point):
            raise InvalidPeerMessage("a point is not in the prime-order subgroup")
        out.append(sodium.crypto_scalarmult_ed25519_noclamp(scalar, point))
    return b"".join(out)


def _chunks(count: int, workers: int) -> list[tuple[int, int]]:
    size = max(1, -(-count // (workers * 4)))
    return [(start, min(count, start + size)) for start in range(0, count, size)]


def _hash_blind(ids: Sequence[bytes], scalar: bytes, workers: int) -> list[bytes]:
    if workers <= 1 or len(ids) < 2:
        blob = _hash_blind_chunk((list(ids), scalar))
    else:
        jobs = [(list(ids[s:e]), scalar) for s, e in _chunks(len(ids), workers)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            blob = b"".join(pool.map(_hash_blind_chunk, jobs))
    return [blob[i : i + _POINT] for i in range(0, len(blob), _POINT)]


def _exponentiate(points: bytes, scalar: bytes, workers: int) -> bytes:
    count = len(points) // _POINT
    if workers <= 1 or count < 2:
        return _exponentiate_chunk((points, scalar))
    jobs = [(points[s * _POINT : e * _POINT], scalar) for s, e in _chunks(count, workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return b"".join(pool.map(_exponentiate_chunk, jobs))


def _random_scalar(random_bytes: Callable[[int], bytes]) -> bytes:
    while True:
        scalar = sodium.crypto_core_ed25519_scalar_reduce(random_bytes(64))
        if scalar != bytes(32):
            return scalar


def _parse_header(message: bytes, kind: int) -> int:
    if len(message) < _HEADER.size:
        raise InvalidPeerMessage("message too short")
    magic, version, got_kind, mode = _HEADER.unpack_from(message)
    if magic != _MAGIC or version != _VERSION:
        raise InvalidPeerMessage("not a ppml PSI message (bad magic or version)")
    if got_kind != kind:
        raise InvalidPeerMessage(f"expected message kind {kind}, got {got_kind}")
    if mode not in (0, 1, 2):
        raise InvalidPeerMessage(f"unknown mode {mode}")
    return int(mode)


def _parse_counted(body: bytes, item: int) -> bytes:
    if len(body) < _COUNT.size:
        raise InvalidPeerMessage("truncated count")
    (count,) = _COUNT.unpack_from(body)
    if count > _MAX_COUNT or len(body) != _COUNT.size + count * item:
        raise InvalidPeerMessage("length does not match the count")
    return body[_COUNT.size :]


@dataclass(frozen=True, kw_only=True)
class PsiResult:
    """What one party learns: the common ids (``None`` in cardinality-only mode) and their count."""

    cardinality: int
    intersection: list[Id] | None
    peer_size: int


class PsiSession:
    """One party's side of one two-party PSI run. Not reusable: make a new session per peer.

    >>> alice, bob = PsiSession(["x", "y"]), PsiSession(["y", "z"])
    >>> ha, hb = alice.hello(), bob.hello()
    >>> ra, rb = alice.reply(hb), bob.reply(ha)
    >>> alice.finish(rb).intersection, bob.finish(ra).intersection
    (['y'], ['y'])

    ``workers`` > 1 hashes and exponentiates in a process pool (results equal the sequential path;
    the secret scalars are handed to the local worker processes). ``random_bytes`` is injectable for
    tests; it must be a cryptographic source in use.

    Raises:
        InvalidPeerMessage: a malformed, off-curve, mis-authenticated or mode-mismatched message.
    """

    def __init__(
        self,
        ids: Iterable[Id],
        *,
        cardinality_only: bool = False,
        align_as: str | None = None,
        workers: int = 1,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        if align_as not in (None, "leader", "member") or (align_as and cardinality_only):
            raise UsageError("align_as is 'leader' or 'member' (and excludes cardinality_only)")
        originals: dict[bytes, Id] = {}
        for item in ids:
            originals.setdefault(_id_bytes(item), item)
        self._originals = originals
        self._mode = 2 if align_as else 1 if cardinality_only else 0
        self._leader = align_as == "leader"
        self._workers = workers
        self._random_bytes = random_bytes
        self._scalar = _random_scalar(random_bytes)
        self._session_scalar = _random_scalar(random_bytes)
        own = list(originals)
        blinded = _hash_blind(own, self._scalar, workers)
        order = sorted(range(len(own)), key=blinded.__getitem__)
        # Sorting the pseudorandom blinded points is a uniformly random shuffle of the ids.
        self._own_ids = [own[i] for i in order]
        self._hello = self._header(_HELLO) + b"".join(
            [sodium.crypto_scalarmult_ed25519_base_noclamp(self._session_scalar), _COUNT.pack(len(own))]
            + [blinded[i] for i in order]
        )
        self._key: bytes | None = None
        self._peer_digest = b""
        self._peer_points = b""
        self._peer_double: dict[bytes, int] | None = None
        self._matches: dict[bytes, int] = {}

    def _header(self, kind: int) -> bytes:
        return _HEADER.pack(_MAGIC, _VERSION, kind, self._mode)

    @property
    def size(self) -> int:
        """The number of distinct ids this party holds."""
        return len(self._own_ids)

    def hello(self) -> bytes:
        """Message 1: this party's session point and blinded ids, sorted (reveals only the count)."""
        return self._hello

    def reply(self, peer_hello: bytes) -> bytes:
        """Message 2: the peer's blinded points raised to this party's secret, encrypted to the peer.

        In the peer's order, or sorted in cardinality-only mode.
        """
        if self._mode != _parse_header(peer_hello, _HELLO):
            raise InvalidPeerMessage("the peer runs another mode (intersection, cardinality or alignment)")
        body = peer_hello[_HEADER.size :]
        if len(body) < _POINT:
            raise InvalidPeerMessage("truncated session point")
        session_point, points = body[:_POINT], _parse_counted(body[_POINT:], _POINT)
        if not sodium.crypto_core_ed25519_is_valid_point(session_point):
            raise InvalidPeerMessage("the session point is not in the prime-order subgroup")
        shared = sodium.crypto_scalarmult_ed25519_noclamp(self._session_scalar, session_point)
        own_digest = hashlib.blake2b(self._hello, digest_size=32).digest()
        self._peer_digest = hashlib.blake2b(peer_hello, digest_size=32).digest()
        transcript = b"".join(sorted([own_digest, self._peer_digest]))
        self._key = hashlib.blake2b(shared + transcript, digest_size=32, person=b"ppml-psi-key").digest()
        self._peer_points = points
        doubled = _exponentiate(points, self._scalar, self._workers)
        items = [doubled[i : i + _POINT] for i in range(0, len(doubled), _POINT)]
        self._peer_double = {point: index for index, point in enumerate(items)}
        if self._mode == 1 or (self._mode == 2 and self._leader):
            items.sort()
        return self._seal(_REPLY, _COUNT.pack(len(items)) + b"".join(items), own_digest)

    def _seal(self, kind: int, plaintext: bytes, own_digest: bytes | None = None) -> bytes:
        assert self._key is not None
        digest = own_digest or hashlib.blake2b(self._hello, digest_size=32).digest()
        header, nonce = self._header(kind), self._random_bytes(_NONCE)
        sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, header + digest, nonce, self._key)
        return header + nonce + sealed

    def _open(self, message: bytes, kind: int) -> bytes:
        if self._key is None:
            raise UsageError("call reply(peer_hello) before finishing the session")
        if self._mode != _parse_header(message, kind):
            raise InvalidPeerMessage("the peer runs another mode (intersection, cardinality or alignment)")
        nonce = message[_HEADER.size : _HEADER.size + _NONCE]
        if len(nonce) != _NONCE:
            raise InvalidPeerMessage("truncated nonce")
        try:
            return bytes(
                sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                    message[_HEADER.size + _NONCE :], message[: _HEADER.size] + self._peer_digest, nonce, self._key
                )
            )
        except CryptoError as exc:
            raise InvalidPeerMessage("the message does not authenticate") from exc

    def finish(self, peer_reply: bytes) -> PsiResult:
        """Message 2 from the peer in, the result out (the intersection sorted by id bytes)."""
        points = _parse_counted(self._open(peer_reply, _REPLY), _POINT)
        if len(points) != len(self._own_ids) * _POINT:
            raise InvalidPeerMessage("the reply does not answer this party's hello")
        assert self._peer_double is not None
        own_double = [points[i : i + _POINT] for i in range(0, len(points), _POINT)]
        peer_size = len(self._peer_points) // _POINT
        if self._mode == 1 or (self._mode == 2 and not self._leader):
            count = sum(point in self._peer_double for point in own_double)
            return PsiResult(cardinality=count, intersection=None, peer_size=peer_size)
        self._matches = {
            self._own_ids[i]: self._peer_double[point]
            for i, point in enumerate(own_double)
            if point in self._peer_double
        }
        common = sorted(self._matches)
        return PsiResult(
            cardinality=len(common), intersection=[self._originals[c] for c in common], peer_size=peer_size
        )

    def indexes_message(self, ids: Sequence[Id]) -> bytes:
        """INDEXES: where each of ``ids`` (common with this peer, in this order) sits in the peer's
        hello, encrypted to the peer, so the peer can list the same ids in the same order.

        Raises:
            UsageError: an id that is not in this session's intersection, or the session is unfinished.
        """
        try:
            positions = [self._matches[_id_bytes(item)] for item in ids]
        except KeyError:
            raise UsageError("every aligned id must be in the intersection with this peer") from None
        return self._seal(_INDEXES, _COUNT.pack(len(positions)) + b"".join(_COUNT.pack(p) for p in positions))

    def aligned_ids(self, indexes_message: bytes) -> list[Id]:
        """This party's own ids, in the order an INDEXES message from the leader gives."""
        body = _parse_counted(self._open(indexes_message, _INDEXES), _COUNT.size)
        positions = [p for (p,) in _COUNT.iter_unpack(body)]
        if any(p >= len(self._own_ids) for p in positions) or len(set(positions)) != len(positions):
            raise InvalidPeerMessage("an index is out of range or repeated")
        return [self._originals[self._own_ids[p]] for p in positions]


def align(leader_sessions: Sequence[PsiSession]) -> tuple[list[Id], list[bytes]]:
    """N-party alignment for vertical FL, run by a leader that finished one PSI with every party.

    The leader's common ids are those in every pairwise intersection, ordered by their bytes; each
    party gets an INDEXES message (via :meth:`PsiSession.indexes_message`) from which
    :meth:`PsiSession.aligned_ids` yields the same ids in the same order. Returns the leader's
    ordered ids and one message per session, in the sessions' order.

    What each learns (a star of pairwise PSIs): party ``i`` learns ``L ∩ P_i`` of its own ids and the
    final aligned list, never another party's non-intersecting ids; the leader learns every
    ``L ∩ P_i``; the relaying coordinator learns set sizes and message lengths only (INDEXES is
    encrypted end to end and holds positions in a list sorted by pseudorandom points).
    """
    if not leader_sessions:
        raise UsageError("alignment needs at least one peer session")
    if any(session._mode == 1 for session in leader_sessions):
        raise UsageError("alignment needs sessions in intersection or alignment mode")
    common = set(leader_sessions[0]._matches)
    for session in leader_sessions[1:]:
        common &= set(session._matches)
    ordered = sorted(common)
    messages = [session.indexes_message(ordered) for session in leader_sessions]
    originals = leader_sessions[0]._originals
    return [originals[c] for c in ordered], messages
