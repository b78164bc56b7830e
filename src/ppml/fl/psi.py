"""Private set intersection: semi-honest DH-PSI with X25519 on hashed ids (format version 2).

Construction (two parties A and B, each holding a set of ids; X25519 as RFC 7748, in OpenSSL)::

    H(x) = the first u_c, c = 0, 1, ..., on curve25519 (u_c^3 + 486662 u_c^2 + u_c a nonzero square
           mod p = 2^255 - 19), where u_c = BLAKE2b-256("ppml-psi-v2\\0" || byte c || x) with bit 255
           cleared, reduced mod p

``H`` is a random oracle onto the u-coordinates of curve25519 (each candidate is uniform over all
u, half of which lie on the curve; about two tries per id). It must not land on the quadratic twist
as well: X25519 keeps a u on the curve it lies on, so a hello mixing the two would tell, per
blinded value, which curve ``H(x)`` lies on, and anyone could test a guessed set against that
count. X25519 reduces a digest with bit 255 set or above p itself (RFC 7748 section 5), so the
digest is fed to it unchanged; :func:`hash_to_group` returns the same u in canonical form. Each
party draws a clamped secret scalar (``a`` and ``b``: a multiple of 8 below 2^255 with bit 254
set) and an ephemeral session scalar, and writes ``X(k, u)`` for X25519::

    1. A -> B  HELLO(A) = pub_A, sorted { X(a, H(x)) : x in A }     B -> A  HELLO(B), with b
    2. A -> B  REPLY(A) = AEAD_k( [ X(a, u) for u in HELLO(B) ] )   in B's order (sorted in
       B -> A  REPLY(B) = AEAD_k( [ X(b, u) for u in HELLO(A) ] )   cardinality-only mode)
    3. A computes { X(a, X(b, H(y))) } from HELLO(B) itself and receives { X(b, X(a, H(x))) } in
       its own order: equal values are common ids, and the order tells A which ids they are.

The double blinding commutes, ``X(a, X(b, u)) = X(b, X(a, u)) = u([ab]P)``, for every u on the curve
and also on its twist (which only a deviating peer would send): the Montgomery ladder computes the
u-coordinate of a scalar multiple on whichever of the two curves u lies, and multiplication by
integers commutes on both. Clamped scalars are multiples of 8, which clears the cofactors (8 on
the curve, 4 on the twist), so every blinded value of an honest run lies in the subgroup of prime
order ``L`` (about 2^252) of curve25519.

``k`` is an AEAD key from an ephemeral X25519 between ``pub_A`` and ``pub_B`` bound to both hellos,
so a relaying coordinator never sees double-blinded values: it could otherwise compare REPLY(A)
with REPLY(B) and learn |A ∩ B| and which positions match.

Security argument (semi-honest parties and coordinator, ``H`` a random oracle onto the curve's
u-coordinates): under DDH in the prime-order subgroup of curve25519, the values ``X(a, H(x))`` for
``x`` in A are indistinguishable from random u values of that subgroup to anyone without ``a``, and
``X(a, X(b, H(y)))`` for ``y`` not in A is pseudorandom to A (the classic Huberman-Franklin-Hogg /
Meadows DH-PSI argument; see also Ion et al., "On deploying secure computing: private
intersection-sum-with-cardinality", EuroS&P 2020). Hence:

* each party learns ``A ∩ B`` (or only ``|A ∩ B|`` in cardinality-only mode, where the replies are
  sorted and no longer in the receiver's order) and the size of the other's set;
* nothing about the other's non-intersecting ids, which it sees only as pseudorandom u values;
* a coordinator that relays the messages learns the two set sizes and the message lengths only.

Ids are deduplicated first (set semantics): a set with duplicates behaves as its set, so the
message sizes are the numbers of *distinct* ids. ``str`` ids are UTF-8 encoded, so ``"a"`` and
``b"a"`` are the same id. A malicious party could send values for guessed ids or a wrong reply;
this protocol does not defend against it (semi-honest only, as the design asks). Incoming u values
need no curve or subgroup check: curve25519 is twist-secure (the twist's order is 4 times a prime
of about 2^253), so a u on either curve lands in a large prime-order group once the clamped scalar
has cleared the cofactor, and the only inputs that would expose anything about the secret are the
small-order ones, which X25519 maps to the all-zero output. So every incoming u must be canonical
(below p, hence bit 255 clear) and an all-zero X25519 output refuses the message.

Messages (all integers big-endian; every length checked before slicing)::

    header   magic "PPSI" (4) | version 0x02 (1) | kind (1) | mode (1: 0 = intersection, 1 = count,
             2 = alignment: the leader's reply is sorted, the member's is in the leader's order)
    HELLO    header(kind 1) | session public u (32) | count u32 | count x u (32, little-endian
             canonical X25519 value), ascending bytewise
    REPLY    header(kind 2) | nonce (24) | XChaCha20-Poly1305( count u32 | count x u (32) )
    INDEXES  header(kind 3) | nonce (24) | XChaCha20-Poly1305( count u32 | count x index u32 )

The AEAD's associated data is the header followed by the BLAKE2b-256 digest of the sender's HELLO.
INDEXES carries N-party alignment (see :func:`align`). No pickle anywhere on the wire (worker
processes receive ids and u values through the standard process pool).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import gmpy2
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from ppml.errors import InvalidPeerMessage, UsageError

__all__ = [
    "PsiResult",
    "PsiSession",
    "align",
    "hash_to_group",
]

_DOMAIN = b"ppml-psi-v2\x00"
_MAGIC = b"PPSI"
_VERSION = 2
_HELLO, _REPLY, _INDEXES = 1, 2, 3
_HEADER = struct.Struct(">4sBBB")
_COUNT = struct.Struct(">I")
_POINT = 32
_FIELD_PRIME = 2**255 - 19
_CURVE_A = 486662
_LOW_255_BITS = (1 << 255) - 1
_NONCE = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_MAX_COUNT = 1 << 28

Id = bytes | str


def _id_bytes(item: Id) -> bytes:
    return item.encode("utf-8") if isinstance(item, str) else bytes(item)


def _hash_digests(ids: Sequence[bytes]) -> list[bytes]:
    """For each id, the BLAKE2b digest whose u (bit 255 cleared, mod p) is ``H(id)`` on the curve.

    Batched by counter: every id tries c = 0, the ones that landed on the twist try c = 1, and so on.
    """
    blake2b, legendre, prime, curve_a, low_bits = (
        hashlib.blake2b, gmpy2.legendre, gmpy2.mpz(_FIELD_PRIME), _CURVE_A, _LOW_255_BITS
    )
    digests: list[bytes] = [b""] * len(ids)
    pending = list(range(len(ids)))
    for counter in range(256):
        prefix = _DOMAIN + bytes([counter])
        tries = [blake2b(prefix + ids[i], digest_size=32).digest() for i in pending]
        values = [int.from_bytes(digest, "little") & low_bits for digest in tries]
        on_curve = [legendre(u * (u * (u + curve_a) + 1), prime) == 1 for u in values]
        for index, digest, found in zip(pending, tries, on_curve, strict=True):
            if found:
                digests[index] = digest
        pending = [index for index, found in zip(pending, on_curve, strict=True) if not found]
        if not pending:
            return digests
    raise AssertionError("256 hashes of one id all missed the curve (probability 2^-256)")


def hash_to_group(item: Id) -> bytes:
    """The 32-byte u-coordinate ``H(item)`` on curve25519, canonical little-endian (see the module
    docstring)."""
    value = int.from_bytes(_hash_digests([_id_bytes(item)])[0], "little") & _LOW_255_BITS
    return (value % _FIELD_PRIME).to_bytes(32, "little")


def _x25519(scalar: bytes, value: bytes) -> bytes:
    """``X(scalar, value)``.

    Raises:
        ValueError: the output is all zero (``value`` is of small order), as OpenSSL refuses it.
    """
    return X25519PrivateKey.from_private_bytes(scalar).exchange(X25519PublicKey.from_public_bytes(value))


def _hash_blind_chunk(args: tuple[list[bytes], bytes]) -> bytes:
    ids, scalar = args
    exchange, public = X25519PrivateKey.from_private_bytes(scalar).exchange, X25519PublicKey.from_public_bytes
    # X25519 masks bit 255 and reduces mod p itself (RFC 7748 section 5): the same u as H(x). A
    # small-order H(x) (OpenSSL would raise) has probability about 2^-250.
    return b"".join([exchange(public(digest)) for digest in _hash_digests(ids)])


def _exponentiate_chunk(args: tuple[bytes, bytes]) -> bytes | None:
    """``X(scalar, u)`` for each canonical u of the blob, or None if one is of small order."""
    values, scalar = args
    exchange, public = X25519PrivateKey.from_private_bytes(scalar).exchange, X25519PublicKey.from_public_bytes
    try:
        return b"".join([exchange(public(values[o : o + _POINT])) for o in range(0, len(values), _POINT)])
    except ValueError:  # OpenSSL refuses an all-zero output: a small-order input
        return None


def _require_canonical(values: bytes) -> None:
    """Every 32-byte little-endian u in ``values`` is below p (so bit 255 is clear too)."""
    top_bytes = values[_POINT - 1 :: _POINT]
    if top_bytes and max(top_bytes) > 0x7F:
        raise InvalidPeerMessage("a u-coordinate is not canonical")
    index = top_bytes.find(b"\x7f")
    while index >= 0:  # only u >= 2^255 - 2^248 can reach p; check those exactly
        offset = index * _POINT
        if int.from_bytes(values[offset : offset + _POINT], "little") >= _FIELD_PRIME:
            raise InvalidPeerMessage("a u-coordinate is not canonical")
        index = top_bytes.find(b"\x7f", index + 1)


def _chunks(count: int, workers: int) -> list[tuple[int, int]]:
    size = max(1, -(-count // (workers * 4)))
    return [(start, min(count, start + size)) for start in range(0, count, size)]


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes forked from a clean forkserver, never from this process: a party holds a
    live gRPC connection while it computes, and a child forked from it would share (and, exiting,
    write to) the parent's TLS stream."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))


def _hash_blind(ids: Sequence[bytes], scalar: bytes, workers: int) -> bytes:
    """``X(scalar, H(x))`` for each id, concatenated in the ids' order."""
    if workers <= 1 or len(ids) < 2:
        return _hash_blind_chunk((list(ids), scalar))
    jobs = [(list(ids[s:e]), scalar) for s, e in _chunks(len(ids), workers)]
    with _pool(workers) as pool:
        return b"".join(pool.map(_hash_blind_chunk, jobs))


def _exponentiate(values: bytes, scalar: bytes, workers: int) -> bytes:
    """``X(scalar, u)`` for each u of the blob, after the canonical and small-order checks.

    Raises:
        InvalidPeerMessage: a non-canonical or small-order u.
    """
    _require_canonical(values)
    count = len(values) // _POINT
    if workers <= 1 or count < 2:
        parts = [_exponentiate_chunk((values, scalar))]
    else:
        jobs = [(values[s * _POINT : e * _POINT], scalar) for s, e in _chunks(count, workers)]
        with _pool(workers) as pool:
            parts = list(pool.map(_exponentiate_chunk, jobs))
    if any(part is None for part in parts):
        raise InvalidPeerMessage("a u-coordinate is of small order")
    return b"".join(part for part in parts if part is not None)


def _random_scalar(random_bytes: Callable[[int], bytes]) -> bytes:
    """A clamped X25519 scalar (RFC 7748 section 5), stored clamped so what it means is explicit."""
    scalar = bytearray(random_bytes(32))
    scalar[0] &= 248
    scalar[31] = (scalar[31] & 127) | 64
    return bytes(scalar)


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


def _split(blob: bytes) -> list[bytes]:
    return [blob[i : i + _POINT] for i in range(0, len(blob), _POINT)]


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
        InvalidPeerMessage: a malformed, non-canonical, small-order, mis-authenticated or
            mode-mismatched message.
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
        # Sorting by the pseudorandom blinded values is a uniformly random shuffle of the ids.
        blinded = _split(_hash_blind(own, self._scalar, workers))
        order = sorted(range(len(own)), key=blinded.__getitem__)  # faster than sorting pairs
        self._own_ids = [own[i] for i in order]
        self._hello = self._header(_HELLO) + b"".join(
            [X25519PrivateKey.from_private_bytes(self._session_scalar).public_key().public_bytes_raw(),
             _COUNT.pack(len(own))]
            + [blinded[i] for i in order]
        )
        self._key: bytes | None = None
        self._peer_digest = b""
        self._peer_size = 0
        self._peer_double: dict[bytes, int] | None = None
        self._matches: dict[bytes, int] = {}

    def _header(self, kind: int) -> bytes:
        return _HEADER.pack(_MAGIC, _VERSION, kind, self._mode)

    @property
    def size(self) -> int:
        """The number of distinct ids this party holds."""
        return len(self._own_ids)

    def hello(self) -> bytes:
        """Message 1: this party's session public value and blinded ids, sorted (reveals only the count)."""
        return self._hello

    def reply(self, peer_hello: bytes) -> bytes:
        """Message 2: the peer's blinded values blinded again with this party's secret, encrypted to
        the peer. In the peer's order, or sorted in cardinality-only mode (and by the alignment leader).

        Raises:
            InvalidPeerMessage: bad framing, a non-canonical or small-order u, or another mode.
        """
        if self._mode != _parse_header(peer_hello, _HELLO):
            raise InvalidPeerMessage("the peer runs another mode (intersection, cardinality or alignment)")
        body = peer_hello[_HEADER.size :]
        if len(body) < _POINT:
            raise InvalidPeerMessage("truncated session value")
        session_value, values = body[:_POINT], _parse_counted(body[_POINT:], _POINT)
        _require_canonical(session_value)
        try:
            shared = _x25519(self._session_scalar, session_value)
        except ValueError:
            raise InvalidPeerMessage("the session value is of small order") from None
        own_digest = hashlib.blake2b(self._hello, digest_size=32).digest()
        self._peer_digest = hashlib.blake2b(peer_hello, digest_size=32).digest()
        transcript = b"".join(sorted([own_digest, self._peer_digest]))
        self._key = hashlib.blake2b(shared + transcript, digest_size=32, person=b"ppml-psi-key").digest()
        items = _split(_exponentiate(values, self._scalar, self._workers))
        self._peer_size = len(items)
        self._peer_double = {value: index for index, value in enumerate(items)}
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
        values = _parse_counted(self._open(peer_reply, _REPLY), _POINT)
        if len(values) != len(self._own_ids) * _POINT:
            raise InvalidPeerMessage("the reply does not answer this party's hello")
        peer_double = self._peer_double
        assert peer_double is not None
        own_double = _split(values)
        peer_size = self._peer_size
        if self._mode == 1 or (self._mode == 2 and not self._leader):
            count = sum(value in peer_double for value in own_double)
            return PsiResult(cardinality=count, intersection=None, peer_size=peer_size)
        get = peer_double.get
        self._matches = {
            own_id: index
            for own_id, index in zip(self._own_ids, map(get, own_double), strict=True)
            if index is not None
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
    encrypted end to end and holds positions in a list sorted by pseudorandom values).
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
