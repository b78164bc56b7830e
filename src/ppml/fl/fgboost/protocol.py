"""The FGBoost roles: label-party and passive-party training and prediction over a Channel.

The protocol, the packing and the leakage are described in :mod:`ppml.fl.fgboost`.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Final

import gmpy2
import numpy as np
import numpy.typing as npt

from ppml.errors import InvalidPeerMessage, MalformedHeData, PpmlError, UsageError
from ppml.fl.channel import Channel
from ppml.fl.fgboost.model import (
    FORMAT,
    MAX_ROWS,
    LabelModel,
    PassiveModel,
    Task,
    TreeNode,
    bin_features,
    check_features,
)
from ppml.fl.fgboost.packing import (
    FRACTION_BITS,
    GhPacking,
    decrypt_chunk,
    histogram_chunk,
    obfuscator_chunk,
    quantise,
)
from ppml.fl.he.paillier import (
    DEFAULT_KEY_BITS,
    EncryptedVector,
    ObfuscatorPool,
    PaillierBackend,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_paillier_keypair,
)
from ppml.fl.wire import pack_array, pack_json, unpack_array, unpack_json

__all__ = [
    "FgboostConfig",
    "LabelTrainingResult",
    "PaillierStats",
    "PassiveTrainingResult",
    "label_predict",
    "label_train",
    "passive_predict",
    "passive_train",
]

_MAX_BINS: Final = 256
_MAX_FEATURES: Final = 1 << 16


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FgboostConfig:
    """The training parameters every party of a round is configured with (the label party's setup
    message carries them and passive parties refuse a mismatch).

    XGBoost's names and meaning: ``learning_rate`` (eta) scales every leaf, ``reg_lambda`` is the
    L2 term of the gain and leaf weights, ``min_child_weight`` the least hessian sum of a child.
    ``base_score`` None starts from the label mean (as a log-odds for "binary"). ``workers`` > 1
    runs Paillier work (obfuscators, decryption, encrypted histograms) in that many processes.
    ``unsafe_small_keys`` allows keys below 2048 bits down to 1024 (tests only; warns).
    """

    trees: int = 5
    max_depth: int = 3
    learning_rate: float = 0.3
    n_bins: int = 16
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    task: Task = "binary"
    base_score: float | None = None
    label_party: str = "guest"
    passive_parties: tuple[str, ...] = ("host",)
    key_bits: int = DEFAULT_KEY_BITS
    workers: int = 1
    unsafe_small_keys: bool = False

    def __post_init__(self) -> None:
        if self.task not in ("binary", "regression"):
            raise UsageError(f"task is 'binary' or 'regression', not {self.task!r}")
        if not 1 <= self.trees <= 10_000 or not 1 <= self.max_depth <= 12:
            raise UsageError("trees must be in [1, 10000] and max_depth in [1, 12]")
        if not 2 <= self.n_bins <= _MAX_BINS:
            raise UsageError(f"n_bins must be in [2, {_MAX_BINS}]")
        for name in ("learning_rate", "min_child_weight", "reg_lambda"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be a non-negative number")
        if self.learning_rate <= 0:
            raise UsageError("learning_rate must be positive")
        if self.base_score is not None and not math.isfinite(self.base_score):
            raise UsageError("base_score must be finite")
        if not 1 <= self.workers <= 256:
            raise UsageError("workers must be in [1, 256]")
        if self.key_bits < 2048 and not self.unsafe_small_keys:
            raise UsageError("FGBoost keys are at least 2048 bits (unsafe_small_keys=True for tests)")
        names = (self.label_party, *self.passive_parties)
        if not self.passive_parties or len(set(names)) != len(names):
            raise UsageError("the label party and at least one passive party need distinct names")

    def _header(self, rows: int) -> dict[str, Any]:
        return {"protocol": FORMAT, "rows": rows, "trees": self.trees, "max_depth": self.max_depth,
                "n_bins": self.n_bins, "key_bits": self.key_bits}


@dataclasses.dataclass(slots=True)
class PaillierStats:
    """Paillier operations one party did, and the wall time of each tree: the benchmark multiplies
    the counts by single-operation costs for the ideal time.

    ``obfuscators`` are r^n mod n² (the costly half of an encryption), ``encryptions`` the cheap
    rest ((1 + m·n) · r mod n²), ``additions`` ciphertext products mod n² (homomorphic additions).
    """

    obfuscators: int = 0
    encryptions: int = 0
    decryptions: int = 0
    additions: int = 0
    tree_seconds: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True, slots=True)
class LabelTrainingResult:
    """The label party's model share, its margins on the training rows, and its operation counts."""

    model: LabelModel
    train_margins: npt.NDArray[np.float64]
    stats: PaillierStats


@dataclasses.dataclass(frozen=True, slots=True)
class PassiveTrainingResult:
    """A passive party's lookup table and its operation counts."""

    model: PassiveModel
    stats: PaillierStats


# -- shared helpers -------------------------------------------------------------------------------


def _pool(workers: int) -> ProcessPoolExecutor | None:
    if workers <= 1:
        return None
    # forkserver: the roles run as threads, and fork()ing a threaded process is unsafe.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))


def _chunks(count: int, parts: int) -> list[tuple[int, int]]:
    size = max(1, -(-count // parts))
    return [(start, min(count, start + size)) for start in range(0, count, size)]


def _receive_json(channel: Channel, sender: str, kind: str) -> dict[str, Any]:
    message = unpack_json(channel.receive(sender, kind))
    if not isinstance(message, dict):
        raise InvalidPeerMessage(f"{kind} from {sender} is not a JSON object")
    return message


def _int_field(message: dict[str, Any], key: str, bound: int, kind: str) -> int:
    value = message.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < bound:
        raise InvalidPeerMessage(f"{kind}: {key} is not an integer in [0, {bound})")
    return value


def _receive_rows(channel: Channel, sender: str, kind: str, bound: int) -> npt.NDArray[np.int64]:
    """A strictly increasing int64 index array with every index below ``bound``."""
    rows = unpack_array(channel.receive(sender, kind), shape=(None,), dtype="int64")
    if len(rows) and (rows[0] < 0 or rows[-1] >= bound or (len(rows) > 1 and (np.diff(rows) <= 0).any())):
        raise InvalidPeerMessage(f"{kind} from {sender}: row indices out of range or not strictly increasing")
    return rows


def _check_party(channel: Channel, expected: str, role: str) -> None:
    if channel.party != expected:
        raise UsageError(f"{channel.party!r} runs the {role} role, but the config names {expected!r}")


# -- label party ----------------------------------------------------------------------------------


def _gradients(task: Task, margins: npt.NDArray[np.float64], labels: npt.NDArray[np.float64],
               ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if task == "binary":
        probabilities = 1.0 / (1.0 + np.exp(-margins))
        return probabilities - labels, np.maximum(probabilities * (1.0 - probabilities), 1e-16)
    return margins - labels, np.ones_like(margins)


def _best_split(gradient_hist: npt.NDArray[np.float64], hessian_hist: npt.NDArray[np.float64],
                config: FgboostConfig) -> tuple[float, int, int]:
    """(gain, feature, bin) of the best "bin ≤ b" split from per-bin sums (features x bins), by
    XGBoost's gain ½ [G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)]; gain 0 when nothing qualifies."""
    if gradient_hist.size == 0:
        return 0.0, -1, -1
    left_g = np.cumsum(gradient_hist, axis=1)[:, :-1]
    left_h = np.cumsum(hessian_hist, axis=1)[:, :-1]
    total_g, total_h = gradient_hist.sum(axis=1, keepdims=True), hessian_hist.sum(axis=1, keepdims=True)
    right_g, right_h = total_g - left_g, total_h - left_h
    lam = config.reg_lambda
    gain = 0.5 * (left_g ** 2 / (left_h + lam) + right_g ** 2 / (right_h + lam) - total_g ** 2 / (total_h + lam))
    least = max(config.min_child_weight, 0.5 / (1 << FRACTION_BITS))  # every row weighs ≥ 2^-F
    gain = np.where((left_h >= least) & (right_h >= least), gain, -np.inf)
    feature, b = np.unravel_index(int(np.argmax(gain)), gain.shape)
    best = float(gain[feature, b])
    return (best, int(feature), int(b)) if best > 1e-12 else (0.0, -1, -1)


class _LabelSession:
    """The label party's state across one training run."""

    def __init__(self, channel: Channel, config: FgboostConfig, public_key: PaillierPublicKey,
                 private_key: PaillierPrivateKey, executor: ProcessPoolExecutor | None) -> None:
        self.channel = channel
        self.config = config
        self.public_key = public_key
        self.private_key = private_key
        self.backend = PaillierBackend(public_key, private_key, fraction_bits=0)
        self.pool = ObfuscatorPool(public_key)
        self.executor = executor
        self.stats = PaillierStats()
        self.passive_features: dict[str, int] = {}
        self._pending: list[Future[list[int]]] = []

    # Obfuscators for the next tree are computed while the passive parties build histograms; the
    # label party holds the key's factors, so it takes the CRT shortcut (packing.obfuscator_chunk).
    def prefetch(self, count: int) -> None:
        n = int(self.public_key.n)
        p, q = int(self.private_key._p), int(self.private_key._q)
        if self.executor is None:
            self.pool.add(obfuscator_chunk(n, count, p, q))
        else:
            parts = _chunks(count, 4 * self.config.workers)
            self._pending = [self.executor.submit(obfuscator_chunk, n, end - start, p, q) for start, end in parts]
        self.stats.obfuscators += count

    def collect(self) -> None:
        for future in self._pending:
            self.pool.add(future.result())
        self._pending = []

    def encrypt(self, plaintexts: Sequence[int]) -> bytes:
        key = self.public_key
        ciphertexts = tuple(key.raw_encrypt(m, self.pool.take()) for m in plaintexts)
        self.stats.encryptions += len(plaintexts)
        self.stats.obfuscators += self.pool.misses
        self.pool.misses = 0
        return self.backend.ciphertext_to_bytes(EncryptedVector(key, ciphertexts, FRACTION_BITS))

    def decrypt(self, ciphertexts: Sequence[Any]) -> list[int]:
        """Plaintexts of ``ciphertexts``; 1 (an empty bin's product) decrypts to 0 without work."""
        todo = [i for i, c in enumerate(ciphertexts) if c != 1]
        plain = [0] * len(ciphertexts)
        if self.executor is None or len(todo) < 8:
            values = [self.private_key.raw_decrypt(ciphertexts[i]) for i in todo]
        else:
            p, q = int(self.private_key._p), int(self.private_key._q)
            futures = [self.executor.submit(decrypt_chunk, p, q, [int(ciphertexts[i]) for i in todo[start:end]])
                       for start, end in _chunks(len(todo), 2 * self.config.workers)]
            values = [v for future in futures for v in future.result()]
        for i, value in zip(todo, values, strict=True):
            plain[i] = value
        self.stats.decryptions += len(todo)
        return plain


def label_train(channel: Channel, *, config: FgboostConfig, features: npt.ArrayLike, labels: npt.ArrayLike,
                keypair: tuple[PaillierPublicKey, PaillierPrivateKey] | None = None) -> LabelTrainingResult:
    """The label (active) party's side of training: ``features`` (rows x its columns) and
    ``labels`` (0/1 for "binary"), row-aligned with every passive party's features. It generates
    the Paillier key pair (``keypair`` injects one: tests) and holds the secret key.

    Raises:
        UsageError: bad features, labels or configuration.
        PlaintextOverflow: rows × gradient magnitude does not fit the key.
        InvalidPeerMessage, MalformedHeData: a peer's message is malformed (the round aborts).
    """
    _check_party(channel, config.label_party, "label party")
    x = check_features(features)
    rows = x.shape[0]
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (rows,) or not np.isfinite(y).all():
        raise UsageError(f"labels must be a vector of {rows} finite values")
    if config.task == "binary" and not np.isin(y, (0.0, 1.0)).all():
        raise UsageError("binary labels are 0 or 1")
    if keypair is None:
        keypair = generate_paillier_keypair(config.key_bits, unsafe_small_keys=config.unsafe_small_keys)
    public_key, private_key = keypair
    if public_key.n.bit_length() != config.key_bits:
        raise UsageError(f"the key pair has {public_key.n.bit_length()} bits, the config says {config.key_bits}")
    bins, cuts = bin_features(x, config.n_bins)
    if config.base_score is not None:
        base = config.base_score
    elif config.task == "binary":
        mean = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        base = math.log(mean / (1.0 - mean))
    else:
        base = float(y.mean())
    executor = _pool(config.workers)
    try:
        session = _LabelSession(channel, config, public_key, private_key, executor)
        for party in config.passive_parties:
            channel.send(party, "fgb.public_key", public_key.to_bytes())
            channel.send(party, "fgb.setup", pack_json(config._header(rows)))
        session.prefetch(rows)
        for party in config.passive_parties:
            reply = _receive_json(channel, party, "fgb.features")
            if set(reply) != {"features"}:
                raise InvalidPeerMessage(f"fgb.features from {party} is malformed")
            session.passive_features[party] = _int_field(reply, "features", _MAX_FEATURES + 1, "fgb.features")
        margins = np.full(rows, base)
        trees = []
        for tree_index in range(config.trees):
            started = time.perf_counter()
            tree = _train_tree(session, tree_index, x, bins, cuts, y, margins)
            trees.append(tree)
            session.stats.tree_seconds.append(time.perf_counter() - started)
        for party in config.passive_parties:
            channel.send(party, "fgb.request", pack_json({"op": "end"}))
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    model = LabelModel(task=config.task, base_score=base, features=x.shape[1], trees=tuple(trees))
    return LabelTrainingResult(model, margins, session.stats)


def _train_tree(session: _LabelSession, tree_index: int, x: npt.NDArray[np.float64], bins: npt.NDArray[np.int64],
                cuts: list[npt.NDArray[np.float64]], y: npt.NDArray[np.float64],
                margins: npt.NDArray[np.float64]) -> tuple[TreeNode, ...]:
    channel, config = session.channel, session.config
    rows = len(y)
    gradients, hessians = _gradients(config.task, margins, y)
    g_int, v_int = quantise(gradients, hessians)
    packing = GhPacking.plan(g_int, v_int, int(session.public_key.n))
    session.collect()
    encrypted = session.encrypt(packing.pack(g_int, v_int))
    for party in config.passive_parties:
        channel.send(party, "fgb.request", pack_json({"op": "tree", "tree": tree_index}))
        channel.send(party, "fgb.gh", encrypted)
    if tree_index + 1 < config.trees:
        session.prefetch(rows)
    scale = float(1 << FRACTION_BITS)
    g_q, h_q = np.asarray(g_int, dtype=np.float64) / scale, np.asarray(v_int, dtype=np.float64) / scale
    n_bins, columns = config.n_bins, x.shape[1]

    nodes: list[dict[str, Any]] = [{"rows": np.arange(rows, dtype=np.int64), "depth": 0}]
    position = 0
    while position < len(nodes):
        node = nodes[position]
        node_rows: npt.NDArray[np.int64] = node["rows"]
        total_g_int = sum(g_int[i] for i in node_rows.tolist())
        total_h_int = sum(v_int[i] for i in node_rows.tolist())
        total_g, total_h = total_g_int / scale, total_h_int / scale
        leaf_weight = -config.learning_rate * total_g / (total_h + config.reg_lambda)
        if node["depth"] >= config.max_depth or total_h < 2 * config.min_child_weight or len(node_rows) < 2:
            nodes[position] = {"node": TreeNode(weight=leaf_weight), "rows": node_rows}
            position += 1
            continue
        rows_message = pack_array(node_rows)
        for party in config.passive_parties:
            channel.send(party, "fgb.request", pack_json({"op": "histogram", "tree": tree_index, "node": position}))
            channel.send(party, "fgb.rows", rows_message)
        offsets = bins[node_rows] + np.arange(columns, dtype=np.int64) * n_bins
        flat = offsets.ravel()
        own_g = np.asarray(np.bincount(flat, weights=np.repeat(g_q[node_rows], columns), minlength=columns * n_bins),
                           dtype=np.float64).reshape(columns, n_bins)
        own_h = np.asarray(np.bincount(flat, weights=np.repeat(h_q[node_rows], columns), minlength=columns * n_bins),
                           dtype=np.float64).reshape(columns, n_bins)
        best: tuple[float, int, int, str | None] = (*_best_split(own_g, own_h, config), None)
        passive_h: dict[str, list[list[int]]] = {}
        for party in config.passive_parties:
            count = session.passive_features[party]
            data = channel.receive(party, "fgb.hist")
            try:
                histogram = session.backend.ciphertext_from_bytes(data)
            except PpmlError:
                raise
            except Exception as exc:
                raise MalformedHeData(f"fgb.hist from {party}") from exc
            if len(histogram) != count * n_bins or histogram.fraction_bits != FRACTION_BITS:
                raise InvalidPeerMessage(f"fgb.hist from {party} holds {len(histogram)} sums, "
                                         f"expected {count} features x {n_bins} bins")
            sums = [packing.unpack(s) for s in session.decrypt(histogram.ciphertexts)]
            g_rows = [[g for g, _ in sums[f * n_bins:(f + 1) * n_bins]] for f in range(count)]
            h_rows = [[h for _, h in sums[f * n_bins:(f + 1) * n_bins]] for f in range(count)]
            for f in range(count):
                if sum(g_rows[f]) != total_g_int or sum(h_rows[f]) != total_h_int:
                    raise InvalidPeerMessage(f"fgb.hist from {party}: feature {f}'s bins do not add up to the node")
            passive_h[party] = h_rows
            if count:
                candidate = _best_split(np.asarray(g_rows, dtype=np.float64) / scale,
                                        np.asarray(h_rows, dtype=np.float64) / scale, config)
                if candidate[0] > best[0]:
                    best = (*candidate, party)
        gain, feature, b, owner = best
        if gain <= 0:
            nodes[position] = {"node": TreeNode(weight=leaf_weight), "rows": node_rows}
            position += 1
            continue
        if owner is None:
            goes_left = bins[node_rows, feature] <= b
            left_rows = node_rows[goes_left]
            split = TreeNode(feature=feature, threshold=float(cuts[feature][b]))
        else:
            channel.send(owner, "fgb.request", pack_json({"op": "split", "tree": tree_index, "node": position,
                                                          "feature": feature, "bin": b}))
            reply = _receive_json(channel, owner, "fgb.split")
            if set(reply) != {"split_id"}:
                raise InvalidPeerMessage(f"fgb.split from {owner} is malformed")
            split_id = _int_field(reply, "split_id", MAX_ROWS, "fgb.split")
            left_rows = _receive_rows(channel, owner, "fgb.left", rows)
            left_h = sum(passive_h[owner][feature][: b + 1])
            if (not np.isin(left_rows, node_rows, assume_unique=True).all()
                    or sum(v_int[i] for i in left_rows.tolist()) != left_h):
                raise InvalidPeerMessage(f"fgb.left from {owner} is not the split's left side")
            split = TreeNode(party=owner, split_id=split_id)
        right_rows = np.setdiff1d(node_rows, left_rows, assume_unique=True)
        left_index = len(nodes)
        nodes.append({"rows": left_rows, "depth": node["depth"] + 1})
        nodes.append({"rows": right_rows, "depth": node["depth"] + 1})
        nodes[position] = {"node": dataclasses.replace(split, left=left_index, right=left_index + 1), "rows": node_rows}
        position += 1
    result = []
    for entry in nodes:
        tree_node: TreeNode = entry["node"]
        if tree_node.is_leaf:
            margins[entry["rows"]] += tree_node.weight
        result.append(tree_node)
    return tuple(result)


# -- passive party --------------------------------------------------------------------------------


def passive_train(channel: Channel, *, config: FgboostConfig, features: npt.ArrayLike) -> PassiveTrainingResult:
    """A passive party's side of training: ``features`` (rows x its columns), row-aligned with the
    label party's. ``config.passive_parties`` must list this channel's party.

    Raises:
        UsageError: bad features, or this party is not a configured passive party.
        InvalidPeerMessage, MalformedHeData: a peer's message is malformed (the round aborts).
    """
    if channel.party not in config.passive_parties:
        raise UsageError(f"{channel.party!r} is not one of the configured passive parties {config.passive_parties}")
    label = config.label_party
    x = check_features(features)
    rows, columns = x.shape
    if columns > _MAX_FEATURES:
        raise UsageError(f"at most {_MAX_FEATURES} columns per party")
    public_key = PaillierPublicKey.from_bytes(channel.receive(label, "fgb.public_key"),
                                              unsafe_small_keys=config.unsafe_small_keys)
    if public_key.n.bit_length() != config.key_bits:
        raise InvalidPeerMessage(f"the label party's key has {public_key.n.bit_length()} bits, "
                                 f"configured {config.key_bits}")
    backend = PaillierBackend(public_key, fraction_bits=0)
    setup = _receive_json(channel, label, "fgb.setup")
    if setup != config._header(rows):
        raise InvalidPeerMessage(f"fgb.setup from {label} is {setup!r}, expected {config._header(rows)!r}")
    channel.send(label, "fgb.features", pack_json({"features": columns}))
    bins, cuts = bin_features(x, config.n_bins)
    model = PassiveModel(features=columns)
    stats = PaillierStats()
    nsquare = int(public_key.nsquare)
    executor = _pool(config.workers)
    tree = -1
    gh: tuple[Any, ...] = ()
    node_rows: dict[int, npt.NDArray[np.int64]] = {}
    started = time.perf_counter()
    try:
        while True:
            request = _receive_json(channel, label, "fgb.request")
            op = request.get("op")
            if op == "end" and set(request) == {"op"}:
                break
            if op == "tree" and set(request) == {"op", "tree"}:
                if tree >= 0:
                    stats.tree_seconds.append(time.perf_counter() - started)
                started = time.perf_counter()
                if _int_field(request, "tree", config.trees, "fgb.request") != tree + 1:
                    raise InvalidPeerMessage("fgb.request: trees out of order")
                tree += 1
                data = channel.receive(label, "fgb.gh")
                try:
                    encrypted = backend.ciphertext_from_bytes(data)
                except PpmlError:
                    raise
                except Exception as exc:
                    raise MalformedHeData("fgb.gh ciphertexts") from exc
                if len(encrypted) != rows:
                    raise InvalidPeerMessage(f"fgb.gh holds {len(encrypted)} ciphertexts for {rows} rows")
                gh = encrypted.ciphertexts
                node_rows = {}
            elif op == "histogram" and set(request) == {"op", "tree", "node"} and tree >= 0:
                if request["tree"] != tree:
                    raise InvalidPeerMessage("fgb.request: a histogram for another tree")
                node = _int_field(request, "node", 1 << (config.max_depth + 1), "fgb.request")
                selected = _receive_rows(channel, label, "fgb.rows", rows)
                if len(selected) == 0:
                    raise InvalidPeerMessage("fgb.rows: an empty node")
                node_rows = {node: selected}  # only the latest node can be split
                sums, additions = _histogram(executor, config, nsquare, [gh[i] for i in selected.tolist()],
                                             bins[selected])
                stats.additions += additions
                channel.send(label, "fgb.hist", backend.ciphertext_to_bytes(
                    EncryptedVector(public_key, tuple(gmpy2.mpz(s) for s in sums), FRACTION_BITS)))
            elif op == "split" and set(request) == {"op", "tree", "node", "feature", "bin"} and tree >= 0:
                node = request["node"]
                if request["tree"] != tree or node not in node_rows:
                    raise InvalidPeerMessage("fgb.request: a split of a node this party has no histogram of")
                feature = _int_field(request, "feature", columns, "fgb.request")
                b = _int_field(request, "bin", len(cuts[feature]), "fgb.request")
                selected = node_rows.pop(node)
                split_id = model.record(feature, float(cuts[feature][b]))
                channel.send(label, "fgb.split", pack_json({"split_id": split_id}))
                channel.send(label, "fgb.left", pack_array(selected[bins[selected, feature] <= b]))
            else:
                raise InvalidPeerMessage(f"fgb.request from {label}: unexpected {op!r} request")
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    if tree >= 0:
        stats.tree_seconds.append(time.perf_counter() - started)
    return PassiveTrainingResult(model, stats)


def _histogram(executor: Executor | None, config: FgboostConfig, nsquare: int, ciphertexts: list[Any],
               bins: npt.NDArray[np.int64]) -> tuple[list[int], int]:
    """Per-feature per-bin encrypted sums (features x n_bins, row-major) and the additions done."""
    columns = bins.shape[1]
    if executor is None or len(ciphertexts) * columns < 4096 or columns < 2:
        return histogram_chunk(nsquare, ciphertexts, bins, config.n_bins)
    as_ints = [int(c) for c in ciphertexts]
    futures = [executor.submit(histogram_chunk, nsquare, as_ints, bins[:, start:end], config.n_bins)
               for start, end in _chunks(columns, config.workers)]
    sums: list[int] = []
    additions = 0
    for future in futures:
        part, count = future.result()
        sums.extend(part)
        additions += count
    return sums, additions


# -- prediction -----------------------------------------------------------------------------------


def label_predict(channel: Channel, *, config: FgboostConfig, model: LabelModel, features: npt.ArrayLike,
                  ) -> npt.NDArray[np.float64]:
    """Score rows with the passive parties: probabilities ("binary") or values ("regression").

    Every tree is walked level by level; at a level, the rows standing at nodes that split on a
    passive party's column go to that party in one request (split ids and row-index arrays), and
    it answers left or right per row from its lookup table.

    Raises:
        InvalidPeerMessage: a passive party's answer is malformed.
    """
    _check_party(channel, config.label_party, "label party")
    x = check_features(features, columns=model.features)
    rows = x.shape[0]
    unknown = model.passive_parties() - set(config.passive_parties)
    if unknown:
        raise UsageError(f"the model refers to parties not configured as passive: {sorted(unknown)}")
    for party in config.passive_parties:
        channel.send(party, "fgb.request", pack_json({"op": "predict", "rows": rows}))
    positions = np.zeros((len(model.trees), rows), dtype=np.int64)
    while True:
        requests: dict[str, list[tuple[int, int, npt.NDArray[np.int64]]]] = {}
        moved = False
        for t, tree in enumerate(model.trees):
            for index in np.unique(positions[t]).tolist():
                node = tree[index]
                if node.is_leaf:
                    continue
                at_node = np.flatnonzero(positions[t] == index)
                moved = True
                if node.party is None:
                    left = x[at_node, node.feature] < node.threshold
                    positions[t, at_node] = np.where(left, node.left, node.right)
                else:
                    requests.setdefault(node.party, []).append((t, index, at_node))
        if not moved:
            break
        for party, entries in requests.items():
            channel.send(party, "fgb.request", pack_json({
                "op": "directions", "split_ids": [model.trees[t][i].split_id for t, i, _ in entries],
                "counts": [len(r) for _, _, r in entries]}))
            channel.send(party, "fgb.rows", pack_array(np.concatenate([r for _, _, r in entries])))
        for party, entries in requests.items():
            total = sum(len(r) for _, _, r in entries)
            directions = unpack_array(channel.receive(party, "fgb.directions"), shape=(total,), dtype="int64")
            if not np.isin(directions, (0, 1)).all():
                raise InvalidPeerMessage(f"fgb.directions from {party} holds values other than 0 and 1")
            start = 0
            for t, index, at_node in entries:
                node = model.trees[t][index]
                left = directions[start:start + len(at_node)] == 1
                positions[t, at_node] = np.where(left, node.left, node.right)
                start += len(at_node)
    for party in config.passive_parties:
        channel.send(party, "fgb.request", pack_json({"op": "end"}))
    margins = np.full(rows, model.base_score)
    for t, tree in enumerate(model.trees):
        margins += np.asarray([node.weight for node in tree])[positions[t]]
    if model.task == "binary":
        probabilities: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-margins))
        return probabilities
    return margins


def passive_predict(channel: Channel, *, config: FgboostConfig, model: PassiveModel, features: npt.ArrayLike) -> None:
    """A passive party's side of :func:`label_predict`: answer, for the rows the label party names
    at each of its splits, whether they go left (x < threshold), from its lookup table.

    Raises:
        InvalidPeerMessage: a malformed request, or a split id not in the lookup table.
    """
    if channel.party not in config.passive_parties:
        raise UsageError(f"{channel.party!r} is not one of the configured passive parties {config.passive_parties}")
    label = config.label_party
    x = check_features(features, columns=model.features)
    request = _receive_json(channel, label, "fgb.request")
    if request != {"op": "predict", "rows": x.shape[0]}:
        raise InvalidPeerMessage(f"fgb.request from {label} is {request!r}, expected a prediction of "
                                 f"{x.shape[0]} rows")
    while True:
        request = _receive_json(channel, label, "fgb.request")
        if request == {"op": "end"}:
            return
        if request.get("op") != "directions" or set(request) != {"op", "split_ids", "counts"}:
            raise InvalidPeerMessage(f"fgb.request from {label}: unexpected request")
        split_ids, counts = request["split_ids"], request["counts"]
        if (not isinstance(split_ids, list) or not isinstance(counts, list) or len(split_ids) != len(counts)
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)):
            raise InvalidPeerMessage("fgb.request: split_ids and counts do not match")
        selected = unpack_array(channel.receive(label, "fgb.rows"), shape=(sum(counts),), dtype="int64")
        if len(selected) and (selected.min() < 0 or selected.max() >= x.shape[0]):
            raise InvalidPeerMessage("fgb.rows: row indices out of range")
        directions = np.empty(len(selected), dtype=np.int64)
        start = 0
        for split_id, count in zip(split_ids, counts, strict=True):
            feature, threshold = model.lookup(split_id)
            part = selected[start:start + count]
            directions[start:start + count] = x[part, feature] < threshold
            start += count
        channel.send(label, "fgb.directions", pack_array(directions))
