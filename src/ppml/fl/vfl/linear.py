"""Vertical federated logistic and linear regression under additively homomorphic encryption.

The FATE Hetero-LR protocol: the rows are already aligned (PSI: row i is the same person at every
party); the **guest** holds some columns and the labels, each **host** holds other columns only, and
the **arbiter** (the coordinator, inside an attested TEE) holds the HE secret key. Every role is a
function of a :class:`~ppml.fl.channel.Channel` and talks to the others through it alone, so the same
roles run as threads over a :class:`~ppml.fl.channel.LocalHub` or as processes over the FL service.
The scheme is any :class:`~ppml.fl.he.backend.HEBackend` (Paillier, CKKS): the arbiter is handed one
with the secret key, the others a constructor from the public key bytes.

Model. Logistic regression uses the second-order Taylor expansion of the log loss around z = 0
(sigmoid(z) ≈ 0.5 + z/4), so that the residual is linear in the encrypted scores::

    z_i = u_g,i + Σ_h u_h,i          u_g = X_g w_g + b (guest),   u_h = X_h w_h (host h)
    logistic  d_i = 0.25 z_i + 0.5 − y_i       (y ∈ {0, 1})
              loss_i ≈ log 2 − ½ y'_i z_i + ⅛ z_i²   (y' = 2y − 1)
    linear    d_i = z_i − y_i,                 loss_i = ½ (z_i − y_i)²
    gradient  ∂/∂w_p = X_pᵀ d / m  (+ l2 · w_p),   ∂/∂b = Σ d_i / m   over a minibatch of m rows

Protocol (``[[x]]`` is x encrypted under the arbiter's key; message kinds in quotes)::

    setup   A → G, every H   "vfl.public_key"   the HE public key (the backend's format)
            G → every H, A   "vfl.setup"        JSON: task, epochs, batch_size, learning_rate, l2,
                                                rows; to hosts also the batch-order seed
    per minibatch (every party derives the same rows from the seed: :func:`batch_order`)
            H → G   "vfl.u"        [[u_h]] (m)          "vfl.u_sq"  [[Σ u_h,i²]] (1)
            G → H   "vfl.residual" [[d]] (m), re-randomised by adding a fresh encryption
            G → H_k "vfl.cross_in" [[Σ_{j<k} u_j]] (m), to the k-th host, k ≥ 1 (loss cross terms)
            H_k → G "vfl.cross"    [[⟨Σ_{j<k} u_j, u_k⟩]] (1)
            P → A   "vfl.masked_grad"  [[grad_P + r_P]], r_P uniform in ±mask_scale, fresh per step
            A → P   "vfl.grad"     grad_P + r_P in the clear (array); P subtracts r_P and steps
    per epoch
            G → A   "vfl.loss"     [[Σ loss_i]] over the epoch (the data term, without L2)
            A → G   "vfl.epoch"    JSON {"loss": mean loss, "stop": bool}
            A → H   "vfl.epoch"    JSON {"stop": bool} (early stop on a loss change < tolerance)

What each party learns (semi-honest parties, no collusion between the arbiter and anyone):

- a **host** sees only ciphertexts under the arbiter's key ([[d]], partial sums of other hosts'
  [[u]]) and its own gradient, masked by itself and returned unmasked: nothing about labels or other
  parties' features. [[d]] is re-randomised by the guest, since a host that knows the randomness of
  its own [[u_h]] could otherwise strip it from a ciphertext derived from it alone;
- the **guest** sees the hosts' [[u_h]] as ciphertexts, its own gradient, and the mean loss per epoch;
- the **arbiter** sees each party's gradient plus a fresh uniform mask (statistically hiding
  gradients far smaller than ``mask_scale``) and the mean loss; never a label, a feature, a weight
  or an unmasked gradient. The labels never leave the guest, in any form but inside [[d]].

Limits of that argument: it assumes semi-honest parties. The arbiter decrypts whatever a party submits
as its masked gradient or loss, so a *malicious* host could submit [[d]] (or one element of it) instead
of its gradient and learn labels; the arbiter bounds this only by fixing each party's gradient length
after its first step and decrypting one loss value per epoch. FATE has the same exposure.

Every message is checked as it arrives (JSON fields, array shapes, ciphertext parsing through the
backend and vector lengths) and a bad one raises a ppml error that aborts the round at every party.

Prediction (:func:`guest_predict`, :func:`host_predict`) is FATE's: each host sends its *plaintext*
partial scores u_h = X_h w_h for the rows being scored, and the guest adds them to its own. This
reveals u_h to the guest — one linear combination of the host's features per row; with enough scored
rows of known features that pins down w_h — so score only the rows the guest is entitled to.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

from ppml.errors import InvalidPeerMessage, MalformedHeData, MalformedModel, PpmlError, UsageError
from ppml.fl.channel import Channel
from ppml.fl.he.backend import HEBackend
from ppml.fl.wire import pack_array, pack_json, unpack_array, unpack_json

__all__ = [
    "PROTOCOL",
    "GuestModel",
    "HostModel",
    "PublicBackendFactory",
    "TrainingHistory",
    "TrainingResult",
    "VflConfig",
    "arbiter_train",
    "batch_order",
    "guest_predict",
    "guest_train",
    "host_predict",
    "host_train",
]

PROTOCOL: Final = "ppml.vfl.linear/1"
_MAX_ROWS: Final = 1 << 24

#: Builds a public-key-only backend from the arbiter's ``public_key_bytes()``, e.g.
#: ``PaillierBackend.from_public_key_bytes``.
PublicBackendFactory = Callable[[bytes], HEBackend[Any]]

Task = Literal["logistic", "linear"]
ModelT = TypeVar("ModelT", "GuestModel", "HostModel")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class VflConfig:
    """The training parameters every party of a round is configured with (they must agree: the
    guest's setup message carries them and hosts and arbiter refuse a mismatch).

    ``seed`` fixes the minibatch order (None: the guest draws one; hosts take it from the guest).
    ``mask_scale`` bounds the uniform masks hiding gradients from the arbiter: large enough to hide
    them, small enough that mask + gradient stays exact in float64 and in the HE encoding (Paillier:
    2^20 leaves ~2^-32 resolution; a CKKS backend wants a far smaller one). ``early_stop_tolerance``
    stops training once the mean loss changes by less than it between epochs (None: never).
    """

    epochs: int
    batch_size: int
    learning_rate: float
    l2: float = 0.0
    task: Task = "logistic"
    seed: int | None = None
    arbiter: str = "coordinator"
    guest: str = "guest"
    hosts: tuple[str, ...] = ("host",)
    mask_scale: float = 2.0 ** 20
    early_stop_tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.task not in ("logistic", "linear"):
            raise UsageError(f"task is 'logistic' or 'linear', not {self.task!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise UsageError("epochs and batch_size must be positive")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise UsageError("learning_rate must be a positive number")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise UsageError("l2 must be a non-negative number")
        if not (math.isfinite(self.mask_scale) and self.mask_scale > 0):
            raise UsageError("mask_scale must be a positive number")
        if self.seed is not None and not 0 <= self.seed < 1 << 63:
            raise UsageError("seed must be in [0, 2^63)")
        names = (self.arbiter, self.guest, *self.hosts)
        if not self.hosts or len(set(names)) != len(names):
            raise UsageError("the arbiter, the guest and at least one host need distinct party names")

    def _header(self, rows: int) -> dict[str, Any]:
        return {"protocol": PROTOCOL, "task": self.task, "epochs": self.epochs, "batch_size": self.batch_size,
                "learning_rate": float(self.learning_rate), "l2": float(self.l2), "rows": rows}


@dataclasses.dataclass(slots=True)
class TrainingHistory:
    """Per-epoch mean loss (guest and arbiter; empty at hosts) and wall-clock seconds per epoch."""

    losses: list[float] = dataclasses.field(default_factory=list)
    epoch_seconds: list[float] = dataclasses.field(default_factory=list)


def _float_list(value: Any, what: str) -> npt.NDArray[np.float64]:
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                              for v in value):
        raise MalformedModel(f"{what} is not a list of numbers")
    array = np.asarray(value, dtype=np.float64)
    if not np.isfinite(array).all():
        raise MalformedModel(f"{what} holds a non-finite value")
    return array


def _load_json_model(data: bytes, role: str) -> dict[str, Any]:
    try:
        document = unpack_json(data)
    except InvalidPeerMessage as exc:
        raise MalformedModel("not JSON") from exc
    if not isinstance(document, dict) or document.get("format") != f"{PROTOCOL}/{role}":
        raise MalformedModel(f"not a {role} model of {PROTOCOL}")
    if document.get("task") not in ("logistic", "linear"):
        raise MalformedModel("unknown task")
    return document


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GuestModel:
    """The guest's share of the model: its column weights and the intercept.

    Serialized (:meth:`to_bytes`) as JSON, floats written exactly::

        {"format": "ppml.vfl.linear/1/guest", "task": "logistic", "weights": [..], "intercept": 0.1}
    """

    task: Task
    weights: npt.NDArray[np.float64]
    intercept: float

    def partial_scores(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """u_g = X_g w_g + b for each row."""
        return _features(features, columns=len(self.weights)) @ self.weights + self.intercept

    def to_bytes(self) -> bytes:
        return pack_json({"format": f"{PROTOCOL}/guest", "task": self.task,
                          "weights": [float(w) for w in self.weights], "intercept": float(self.intercept)})

    @classmethod
    def from_bytes(cls, data: bytes) -> GuestModel:
        """Parse :meth:`to_bytes`.

        Raises:
            MalformedModel: the bytes are not a guest model of this protocol.
        """
        document = _load_json_model(data, "guest")
        intercept = document.get("intercept")
        if not isinstance(intercept, int | float) or isinstance(intercept, bool) or not math.isfinite(intercept):
            raise MalformedModel("intercept is not a finite number")
        return cls(task=document["task"], weights=_float_list(document.get("weights"), "weights"),
                   intercept=float(intercept))


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HostModel:
    """A host's share of the model: its column weights (no intercept; the guest holds it).

    Serialized (:meth:`to_bytes`) as JSON::

        {"format": "ppml.vfl.linear/1/host", "task": "logistic", "weights": [..]}
    """

    task: Task
    weights: npt.NDArray[np.float64]

    def partial_scores(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """u_h = X_h w_h for each row."""
        return _features(features, columns=len(self.weights)) @ self.weights

    def to_bytes(self) -> bytes:
        return pack_json({"format": f"{PROTOCOL}/host", "task": self.task,
                          "weights": [float(w) for w in self.weights]})

    @classmethod
    def from_bytes(cls, data: bytes) -> HostModel:
        """Parse :meth:`to_bytes`.

        Raises:
            MalformedModel: the bytes are not a host model of this protocol.
        """
        document = _load_json_model(data, "host")
        return cls(task=document["task"], weights=_float_list(document.get("weights"), "weights"))


@dataclasses.dataclass(frozen=True, slots=True)
class TrainingResult(Generic[ModelT]):
    """What a data party's training role returns: its model share and the run's history."""

    model: ModelT
    history: TrainingHistory


def batch_order(seed: int, rows: int, batch_size: int, epoch: int) -> list[npt.NDArray[np.int64]]:
    """The minibatches (row indices) of one epoch: a permutation of ``range(rows)`` drawn from
    ``(seed, epoch)`` and cut into ``batch_size`` pieces (the last may be shorter). Every party calls
    it with the guest's seed, so all of them step through the same rows."""
    order = np.random.default_rng([seed, epoch]).permutation(rows)
    return [order[start:start + batch_size].astype(np.int64) for start in range(0, rows, batch_size)]


# -- validation helpers ---------------------------------------------------------------------------


def _features(features: npt.ArrayLike, *, rows: int | None = None, columns: int | None = None,
              ) -> npt.NDArray[np.float64]:
    values = np.asarray(features, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[0] > _MAX_ROWS:
        raise UsageError(f"features must be a non-empty rows x columns matrix, not shape {values.shape}")
    if rows is not None and values.shape[0] != rows:
        raise UsageError(f"expected {rows} rows of features, got {values.shape[0]}")
    if columns is not None and values.shape[1] != columns:
        raise UsageError(f"the model has {columns} weights, the features {values.shape[1]} columns")
    if not np.isfinite(values).all():
        raise UsageError("features hold a non-finite value")
    return values


def _length(ciphertext: Any) -> int:
    try:
        return len(ciphertext)
    except TypeError:
        raise UsageError("this HE backend's ciphertext vectors do not support len()") from None


def _receive_ciphertext(channel: Channel, backend: HEBackend[Any], sender: str, kind: str,
                        count: int | None) -> Any:
    """The next ``kind`` message from ``sender``, parsed as ``count`` ciphertexts (None: any number)."""
    data = channel.receive(sender, kind)
    try:
        ciphertext = backend.ciphertext_from_bytes(data)
    except PpmlError:
        raise
    except Exception as exc:  # a backend that lets a parser error through: still malformed data
        raise MalformedHeData(f"{kind} ciphertexts from {sender}") from exc
    if count is not None and _length(ciphertext) != count:
        raise InvalidPeerMessage(f"{kind} from {sender} holds {_length(ciphertext)} ciphertexts, expected {count}")
    return ciphertext


def _receive_json(channel: Channel, sender: str, kind: str) -> dict[str, Any]:
    message = unpack_json(channel.receive(sender, kind))
    if not isinstance(message, dict):
        raise InvalidPeerMessage(f"{kind} from {sender} is not a JSON object")
    return message


def _check_setup(message: dict[str, Any], expected: dict[str, Any], *, sender: str, with_seed: bool) -> int | None:
    keys = set(expected) | ({"seed"} if with_seed else set())
    if set(message) != keys:
        raise InvalidPeerMessage(f"vfl.setup from {sender} has fields {sorted(message)}, expected {sorted(keys)}")
    for key, value in expected.items():
        if message[key] != value or type(message[key]) is not type(value):
            raise InvalidPeerMessage(f"vfl.setup from {sender}: {key} = {message[key]!r}, configured {value!r}")
    if not with_seed:
        return None
    seed = message["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 1 << 63:
        raise InvalidPeerMessage(f"vfl.setup from {sender}: seed out of range")
    return seed


def _check_stop(message: dict[str, Any], sender: str, *, with_loss: bool) -> tuple[bool, float | None]:
    keys = {"stop", "loss"} if with_loss else {"stop"}
    if set(message) != keys or not isinstance(message["stop"], bool):
        raise InvalidPeerMessage(f"vfl.epoch from {sender} is malformed")
    if not with_loss:
        return message["stop"], None
    loss = message["loss"]
    if not isinstance(loss, int | float) or isinstance(loss, bool) or not math.isfinite(loss):
        raise InvalidPeerMessage(f"vfl.epoch from {sender}: loss is not a finite number")
    return message["stop"], float(loss)


def _mask_rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(secrets.randbits(128))


def _masked_step(channel: Channel, backend: HEBackend[Any], config: VflConfig, gradient: Any, size: int,
                 rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Have the arbiter decrypt ``gradient`` (encrypted, length ``size``) under a fresh mask; the plain
    gradient."""
    mask = rng.uniform(-config.mask_scale, config.mask_scale, size)
    masked = backend.add_plain(gradient, mask.tolist())
    channel.send(config.arbiter, "vfl.masked_grad", backend.ciphertext_to_bytes(masked))
    decrypted = unpack_array(channel.receive(config.arbiter, "vfl.grad"), shape=(size,), dtype="float64")
    result: npt.NDArray[np.float64] = decrypted - mask
    return result


# -- roles ----------------------------------------------------------------------------------------


def _check_party(channel: Channel, expected: str, role: str) -> None:
    if channel.party != expected:
        raise UsageError(f"{channel.party!r} runs the {role} role, but the config names {expected!r}")


def arbiter_train(channel: Channel, *, config: VflConfig, backend: HEBackend[Any]) -> TrainingHistory:
    """The arbiter's side of training: hand out the public key, decrypt masked gradients and the
    epoch loss, decide early stopping. ``backend`` holds the secret key.

    Raises:
        UsageError: ``backend`` cannot decrypt.
        InvalidPeerMessage, MalformedHeData: a peer's message is malformed (the round aborts).
    """
    _check_party(channel, config.arbiter, "arbiter")
    if not backend.can_decrypt:
        raise UsageError("the arbiter needs an HE backend with the secret key")
    public_key = backend.public_key_bytes()
    for party in (config.guest, *config.hosts):
        channel.send(party, "vfl.public_key", public_key)
    setup = _receive_json(channel, config.guest, "vfl.setup")
    rows = setup.get("rows")
    if not isinstance(rows, int) or isinstance(rows, bool) or not 1 <= rows <= _MAX_ROWS:
        raise InvalidPeerMessage("vfl.setup: rows out of range")
    _check_setup(setup, config._header(rows), sender=config.guest, with_seed=False)
    batches = math.ceil(rows / config.batch_size)
    gradient_sizes: dict[str, int] = {}
    history = TrainingHistory()
    previous: float | None = None
    for _epoch in range(config.epochs):
        started = time.perf_counter()
        for _batch in range(batches):
            for party in (*config.hosts, config.guest):
                masked = _receive_ciphertext(channel, backend, party, "vfl.masked_grad", gradient_sizes.get(party))
                if gradient_sizes.setdefault(party, _length(masked)) < 1:
                    raise InvalidPeerMessage(f"vfl.masked_grad from {party} is empty")
                channel.send(party, "vfl.grad", pack_array(np.asarray(backend.decrypt(masked), dtype=np.float64)))
        total = _receive_ciphertext(channel, backend, config.guest, "vfl.loss", 1)
        loss = backend.decrypt(total)[0] / rows
        stop = (config.early_stop_tolerance is not None and previous is not None
                and abs(previous - loss) < config.early_stop_tolerance)
        previous = loss
        history.losses.append(loss)
        channel.send(config.guest, "vfl.epoch", pack_json({"loss": loss, "stop": stop}))
        for host in config.hosts:
            channel.send(host, "vfl.epoch", pack_json({"stop": stop}))
        history.epoch_seconds.append(time.perf_counter() - started)
        if stop:
            break
    return history


def guest_train(channel: Channel, *, config: VflConfig, features: npt.ArrayLike, labels: npt.ArrayLike,
                public_backend: PublicBackendFactory, rng: np.random.Generator | None = None,
                ) -> TrainingResult[GuestModel]:
    """The label party's side of training. ``features`` (rows x columns, standardised) and ``labels``
    (0/1 for logistic regression) are row-aligned with every host's features. ``rng`` draws the
    gradient masks (default: seeded from the OS).

    Raises:
        UsageError: bad features or labels.
        InvalidPeerMessage, MalformedHeData: a peer's message is malformed (the round aborts).
    """
    _check_party(channel, config.guest, "guest")
    x = _features(features)
    rows, columns = x.shape
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (rows,) or not np.isfinite(y).all():
        raise UsageError(f"labels must be a vector of {rows} finite values")
    if config.task == "logistic" and not np.isin(y, (0.0, 1.0)).all():
        raise UsageError("logistic regression labels are 0 or 1")
    masks = _mask_rng(rng)
    backend = public_backend(channel.receive(config.arbiter, "vfl.public_key"))
    seed = config.seed if config.seed is not None else secrets.randbits(63)
    header = config._header(rows)
    for host in config.hosts:
        channel.send(host, "vfl.setup", pack_json({**header, "seed": seed}))
    channel.send(config.arbiter, "vfl.setup", pack_json(header))

    weights = np.zeros(columns)
    intercept = 0.0
    history = TrainingHistory()
    logistic = config.task == "logistic"
    for epoch in range(config.epochs):
        started = time.perf_counter()
        epoch_loss: Any = None
        for batch in batch_order(seed, rows, config.batch_size, epoch):
            m = len(batch)
            x_batch, y_batch = x[batch], y[batch]
            u_guest = x_batch @ weights + intercept
            plain_part = 0.25 * u_guest + 0.5 - y_batch if logistic else u_guest - y_batch
            # Encrypted before the hosts' scores arrive (it needs none of them): the costly step overlaps.
            # A fresh encryption, not add_plain: it re-randomises [[d]] (see the module docstring).
            encrypted_part = backend.encrypt(plain_part.tolist())
            host_scores = [_receive_ciphertext(channel, backend, host, "vfl.u", m) for host in config.hosts]
            host_squares = [_receive_ciphertext(channel, backend, host, "vfl.u_sq", 1) for host in config.hosts]
            prefix_sums = [host_scores[0]]  # [[Σ_{j<k} u_j]] for k = 1, 2, ...; the last one is [[U]]
            for scores in host_scores[1:]:
                prefix_sums.append(backend.add(prefix_sums[-1], scores))
            host_sum = prefix_sums[-1]
            scaled_hosts = backend.multiply_plain(host_sum, 0.25) if logistic else host_sum
            residual = backend.add(scaled_hosts, encrypted_part)
            residual_bytes = backend.ciphertext_to_bytes(residual)
            for host in config.hosts:
                channel.send(host, "vfl.residual", residual_bytes)
            for host, earlier in zip(config.hosts[1:], prefix_sums, strict=False):
                channel.send(host, "vfl.cross_in", backend.ciphertext_to_bytes(earlier))

            design = np.hstack([x_batch, np.ones((m, 1))]) / m
            gradient = _masked_step(channel, backend, config, backend.matmul_plain(residual, design),
                                    columns + 1, masks)
            weights = weights - config.learning_rate * (gradient[:-1] + config.l2 * weights)
            intercept -= config.learning_rate * float(gradient[-1])

            crosses = [_receive_ciphertext(channel, backend, host, "vfl.cross", 1) for host in config.hosts[1:]]
            batch_loss = _encrypted_loss(backend, logistic, u_guest, y_batch, host_sum, host_squares, crosses)
            epoch_loss = batch_loss if epoch_loss is None else backend.add(epoch_loss, batch_loss)
        channel.send(config.arbiter, "vfl.loss", backend.ciphertext_to_bytes(epoch_loss))
        stop, loss = _check_stop(_receive_json(channel, config.arbiter, "vfl.epoch"), config.arbiter, with_loss=True)
        assert loss is not None
        history.losses.append(loss)
        history.epoch_seconds.append(time.perf_counter() - started)
        if stop:
            break
    return TrainingResult(GuestModel(task=config.task, weights=weights, intercept=intercept), history)


def _encrypted_loss(backend: HEBackend[Any], logistic: bool, u_guest: npt.NDArray[np.float64],
                    y_batch: npt.NDArray[np.float64], host_sum: Any, host_squares: Sequence[Any],
                    crosses: Sequence[Any]) -> Any:
    """[[Σ loss_i]] over a batch, from [[U]] = [[Σ_h u_h]], [[‖u_h‖²]] and the cross terms
    [[⟨Σ_{j<k} u_j, u_k⟩]]: ‖U‖² = Σ_h ‖u_h‖² + 2 Σ_k cross_k."""
    if logistic:
        signed = 2.0 * y_batch - 1.0
        coefficients = 0.25 * u_guest - 0.5 * signed
        constant = len(y_batch) * math.log(2.0) - 0.5 * float(signed @ u_guest) + 0.125 * float(u_guest @ u_guest)
        quadratic = 0.125
    else:
        residual = u_guest - y_batch
        coefficients = residual
        constant = 0.5 * float(residual @ residual)
        quadratic = 0.5
    total = backend.add_plain(backend.matmul_plain(host_sum, coefficients[:, None]), [constant])
    squares = host_squares[0]
    for square in host_squares[1:]:
        squares = backend.add(squares, square)
    total = backend.add(total, backend.multiply_plain(squares, quadratic))
    for cross in crosses:
        total = backend.add(total, backend.multiply_plain(cross, 2.0 * quadratic))
    return total


def host_train(channel: Channel, *, config: VflConfig, features: npt.ArrayLike, public_backend: PublicBackendFactory,
               rng: np.random.Generator | None = None) -> TrainingResult[HostModel]:
    """A passive party's side of training: ``features`` (rows x columns, standardised), row-aligned
    with the guest's. ``config.hosts`` must list this channel's party. ``rng`` draws the masks.

    Raises:
        UsageError: bad features, or this party is not a configured host.
        InvalidPeerMessage, MalformedHeData: a peer's message is malformed (the round aborts).
    """
    if channel.party not in config.hosts:
        raise UsageError(f"{channel.party!r} is not one of the configured hosts {config.hosts}")
    position = config.hosts.index(channel.party)
    x = _features(features)
    rows, columns = x.shape
    if columns < 1:
        raise UsageError("a host needs at least one feature column")
    masks = _mask_rng(rng)
    backend = public_backend(channel.receive(config.arbiter, "vfl.public_key"))
    seed = _check_setup(_receive_json(channel, config.guest, "vfl.setup"), config._header(rows),
                        sender=config.guest, with_seed=True)
    assert seed is not None
    weights = np.zeros(columns)
    history = TrainingHistory()
    for epoch in range(config.epochs):
        started = time.perf_counter()
        for batch in batch_order(seed, rows, config.batch_size, epoch):
            m = len(batch)
            x_batch = x[batch]
            scores = x_batch @ weights
            channel.send(config.guest, "vfl.u", backend.ciphertext_to_bytes(backend.encrypt(scores.tolist())))
            channel.send(config.guest, "vfl.u_sq",
                         backend.ciphertext_to_bytes(backend.encrypt([float(scores @ scores)])))
            residual = _receive_ciphertext(channel, backend, config.guest, "vfl.residual", m)
            if position > 0:
                earlier = _receive_ciphertext(channel, backend, config.guest, "vfl.cross_in", m)
                channel.send(config.guest, "vfl.cross",
                             backend.ciphertext_to_bytes(backend.matmul_plain(earlier, scores[:, None])))
            gradient = _masked_step(channel, backend, config, backend.matmul_plain(residual, x_batch / m),
                                    columns, masks)
            weights = weights - config.learning_rate * (gradient + config.l2 * weights)
        stop, _ = _check_stop(_receive_json(channel, config.arbiter, "vfl.epoch"), config.arbiter, with_loss=False)
        history.epoch_seconds.append(time.perf_counter() - started)
        if stop:
            break
    return TrainingResult(HostModel(task=config.task, weights=weights), history)


# -- prediction -----------------------------------------------------------------------------------


def guest_predict(channel: Channel, *, config: VflConfig, model: GuestModel, features: npt.ArrayLike,
                  ) -> npt.NDArray[np.float64]:
    """Score rows with every host (no arbiter, no HE): probabilities (logistic, through the exact
    sigmoid: the Taylor expansion serves training only) or values (linear).

    Each host sends its plaintext partial scores X_h w_h for these rows, as FATE does; see the
    module docstring for what that reveals.

    Raises:
        InvalidPeerMessage: a host's scores are malformed or of the wrong length.
    """
    _check_party(channel, config.guest, "guest")
    x = _features(features, columns=len(model.weights))
    rows = x.shape[0]
    for host in config.hosts:
        channel.send(host, "vfl.predict", pack_json({"protocol": PROTOCOL, "task": model.task, "rows": rows}))
    scores = model.partial_scores(x)
    for host in config.hosts:
        scores = scores + unpack_array(channel.receive(host, "vfl.scores"), shape=(rows,), dtype="float64")
    if model.task == "logistic":
        probabilities: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-scores))
        return probabilities
    return scores


def host_predict(channel: Channel, *, config: VflConfig, model: HostModel, features: npt.ArrayLike) -> None:
    """A host's side of :func:`guest_predict`: send X_h w_h for the rows the guest asks about (which
    must be these ``features``' rows, aligned).

    Raises:
        InvalidPeerMessage: the request is malformed or for another number of rows or task.
    """
    x = _features(features, columns=len(model.weights))
    request = _receive_json(channel, config.guest, "vfl.predict")
    expected = {"protocol": PROTOCOL, "task": model.task, "rows": x.shape[0]}
    if request != expected:
        raise InvalidPeerMessage(f"vfl.predict from {config.guest} is {request!r}, expected {expected!r}")
    channel.send(config.guest, "vfl.scores", pack_array(model.partial_scores(x)))
