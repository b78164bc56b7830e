"""Vertical federated logistic/linear regression (ppml.fl.vfl.linear) over a LocalHub with Paillier:
accuracy against centralized training, what each party's recorded messages may contain, and aborts
on malformed peer messages."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ppml.errors import (
    FederatedLearningError,
    InvalidPeerMessage,
    MalformedHeData,
    MalformedModel,
    PpmlError,
    UnsafeWarning,
    UsageError,
)
from ppml.fl.channel import Channel, LocalHub, RoundAborted, run_parties
from ppml.fl.he import EncryptedVector, PaillierBackend, generate_paillier_keypair
from ppml.fl.vfl import (
    GuestModel,
    HostModel,
    TrainingHistory,
    TrainingResult,
    VflConfig,
    arbiter_train,
    batch_order,
    guest_predict,
    guest_train,
    host_predict,
    host_train,
)
from ppml.fl.wire import pack_array, unpack_array, unpack_json

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UnsafeWarning)
    PUBLIC, PRIVATE = generate_paillier_keypair(1024, unsafe_small_keys=True)
    OTHER_PUBLIC, _ = generate_paillier_keypair(1024, unsafe_small_keys=True)

ARBITER, GUEST = "coordinator", "guest"
MASK_SEEDS = {GUEST: 101, "host": 202, "host_a": 303, "host_b": 404}

Array = npt.NDArray[np.float64]


def arbiter_backend() -> PaillierBackend:
    return PaillierBackend(PUBLIC, PRIVATE)


def public_backend(data: bytes) -> PaillierBackend:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsafeWarning)
        return PaillierBackend.from_public_key_bytes(data, unsafe_small_keys=True)


def standardise(train: Array, test: Array) -> tuple[Array, Array]:
    """What each party does to its own columns, locally, before training."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    return (train - mean) / std, (test - mean) / std


@dataclasses.dataclass
class Split:
    """A vertical split: the guest's columns and labels, each host's columns; train and test rows."""

    guest: tuple[Array, Array]
    hosts: dict[str, tuple[Array, Array]]
    y_train: Array
    y_test: Array

    def all_columns(self, part: int) -> Array:
        return np.hstack([self.guest[part], *(h[part] for h in self.hosts.values())])


def split(x: Array, y: Array, columns: dict[str, slice], *, train_rows: int, seed: int) -> Split:
    order = np.random.default_rng(seed).permutation(len(y))
    train, test = order[:train_rows], order[train_rows:]
    parts = {party: standardise(x[train][:, cols], x[test][:, cols]) for party, cols in columns.items()}
    guest = parts.pop(GUEST)
    return Split(guest, parts, y[train].astype(np.float64), y[test].astype(np.float64))


def breast_cancer() -> Split:
    data = load_breast_cancer()
    # Guest: mean radius, texture, perimeter and the label; host: seven more "mean" columns.
    return split(data.data, data.target, {GUEST: slice(0, 3), "host": slice(3, 10)}, train_rows=300, seed=7)


def synthetic_logistic() -> Split:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 8))
    logits = x @ np.array([1.5, -1.0, 0.8, 0.0, -1.2, 0.6, 1.0, -0.7]) + 0.3
    y = (rng.random(300) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    return split(x, y, {GUEST: slice(0, 2), "host_a": slice(2, 5), "host_b": slice(5, 8)}, train_rows=200, seed=3)


def synthetic_linear() -> Split:
    rng = np.random.default_rng(12)
    x = rng.normal(size=(300, 6))
    y = x @ np.array([2.0, -1.0, 0.5, 1.5, -0.5, 0.8]) + 1.0 + rng.normal(scale=0.5, size=300)
    return split(x, y, {GUEST: slice(0, 3), "host": slice(3, 6)}, train_rows=200, seed=5)


@dataclasses.dataclass
class Run:
    config: VflConfig
    data: Split
    hub: LocalHub
    guest: TrainingResult[GuestModel]
    hosts: dict[str, TrainingResult[HostModel]]
    arbiter: TrainingHistory


def roles(config: VflConfig, data: Split, wrap: Callable[[str, Channel], Channel] | None = None,
          ) -> dict[str, Callable[[Channel], Any]]:
    def wrapped(party: str, role: Callable[[Channel], Any]) -> Callable[[Channel], Any]:
        return role if wrap is None else lambda channel: role(wrap(party, channel))

    table: dict[str, Callable[[Channel], Any]] = {
        ARBITER: wrapped(ARBITER, functools.partial(arbiter_train, config=config, backend=arbiter_backend())),
        GUEST: wrapped(GUEST, functools.partial(guest_train, config=config, features=data.guest[0],
                                                labels=data.y_train, public_backend=public_backend,
                                                rng=np.random.default_rng(MASK_SEEDS[GUEST]))),
    }
    for host, (features, _) in data.hosts.items():
        table[host] = wrapped(host, functools.partial(host_train, config=config, features=features,
                                                      public_backend=public_backend,
                                                      rng=np.random.default_rng(MASK_SEEDS[host])))
    return table


def train(config: VflConfig, data: Split) -> Run:
    hub = LocalHub([ARBITER, GUEST, *config.hosts])
    results = run_parties(hub, roles(config, data))
    return Run(config, data, hub, results[GUEST], {h: results[h] for h in config.hosts}, results[ARBITER])


def predict(run: Run) -> Array:
    hub = LocalHub([GUEST, *run.config.hosts])
    table: dict[str, Callable[[Channel], Any]] = {
        GUEST: functools.partial(guest_predict, config=run.config, model=run.guest.model, features=run.data.guest[1])}
    for host, (_, features) in run.data.hosts.items():
        table[host] = functools.partial(host_predict, config=run.config, model=run.hosts[host].model,
                                        features=features)
    scores: Array = run_parties(hub, table)[GUEST]
    return scores


@dataclasses.dataclass
class Central:
    """The same Taylor-approximated minibatch training on all columns in one place, with every
    party's true gradient per step (to compare with what the arbiter saw)."""

    weights: dict[str, Array]
    intercept: float
    gradients: dict[str, list[Array]]
    losses: list[float]


def central_taylor(config: VflConfig, data: Split) -> Central:
    assert config.seed is not None
    parts = {GUEST: data.guest[0], **{h: f[0] for h, f in data.hosts.items()}}
    weights = {party: np.zeros(x.shape[1]) for party, x in parts.items()}
    intercept = 0.0
    gradients: dict[str, list[Array]] = {party: [] for party in parts}
    rows = len(data.y_train)
    losses = []
    for epoch in range(config.epochs):
        total = 0.0
        for batch in batch_order(config.seed, rows, config.batch_size, epoch):
            z = sum(parts[p][batch] @ weights[p] for p in parts) + intercept
            y = data.y_train[batch]
            if config.task == "logistic":
                total += float(np.sum(np.log(2) - 0.5 * (2 * y - 1) * z + 0.125 * z ** 2))
            else:
                total += float(np.sum(0.5 * (z - y) ** 2))
            d = 0.25 * z + 0.5 - y if config.task == "logistic" else z - y
            for party, x in parts.items():
                gradient = x[batch].T @ d / len(batch)
                if party == GUEST:
                    gradient = np.append(gradient, d.mean())
                gradients[party].append(gradient)
                step = gradient[:x.shape[1]] + config.l2 * weights[party]
                weights[party] = weights[party] - config.learning_rate * step
                if party == GUEST:
                    intercept -= config.learning_rate * float(gradient[-1])
        losses.append(total / rows)
    return Central(weights, intercept, gradients, losses)


def central_scores(central: Central, data: Split) -> Array:
    z = data.guest[1] @ central.weights[GUEST] + central.intercept
    for host, (_, features) in data.hosts.items():
        z = z + features @ central.weights[host]
    return z


LOGISTIC_1 = VflConfig(epochs=2, batch_size=64, learning_rate=0.3, l2=0.001, task="logistic", seed=42,
                       arbiter=ARBITER, guest=GUEST, hosts=("host",))
LOGISTIC_2 = dataclasses.replace(LOGISTIC_1, epochs=3, hosts=("host_a", "host_b"), seed=43)
LINEAR = VflConfig(epochs=3, batch_size=50, learning_rate=0.4, task="linear", seed=44, arbiter=ARBITER,
                   guest=GUEST, hosts=("host",))


@pytest.fixture(scope="module")
def logistic_one_host() -> Run:
    return train(LOGISTIC_1, breast_cancer())


@pytest.fixture(scope="module")
def logistic_two_hosts() -> Run:
    return train(LOGISTIC_2, synthetic_logistic())


@pytest.fixture(scope="module")
def linear_run() -> Run:
    return train(LINEAR, synthetic_linear())


# -- accuracy -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["logistic_one_host", "logistic_two_hosts"])
def test_logistic_auc_matches_centralized(fixture: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(fixture)
    data = run.data
    probabilities = predict(run)
    assert probabilities.shape == data.y_test.shape and ((probabilities > 0) & (probabilities < 1)).all()
    federated_auc = roc_auc_score(data.y_test, probabilities)

    central = central_taylor(run.config, data)
    for party, result in [(GUEST, run.guest), *run.hosts.items()]:
        np.testing.assert_allclose(result.model.weights, central.weights[party], atol=1e-6)
    taylor_auc = roc_auc_score(data.y_test, central_scores(central, data))
    sklearn = LogisticRegression(max_iter=1000).fit(data.all_columns(0), data.y_train)
    sklearn_auc = roc_auc_score(data.y_test, sklearn.predict_proba(data.all_columns(1))[:, 1])
    print(f"{fixture}: AUC federated {federated_auc:.4f}, central Taylor {taylor_auc:.4f}, "
          f"sklearn {sklearn_auc:.4f}; epoch seconds {[round(s, 2) for s in run.guest.history.epoch_seconds]}")
    # The loss decrypted by the arbiter (cross terms between hosts included) is the plain Taylor loss.
    np.testing.assert_allclose(run.arbiter.losses, central.losses, atol=1e-6)
    assert abs(federated_auc - taylor_auc) < 1e-3
    assert abs(federated_auc - sklearn_auc) < 0.01
    assert federated_auc > 0.8


def test_linear_rmse_matches_least_squares(linear_run: Run) -> None:
    data = linear_run.data
    values = predict(linear_run)
    rmse = float(np.sqrt(np.mean((values - data.y_test) ** 2)))
    design = np.hstack([data.all_columns(0), np.ones((len(data.y_train), 1))])
    solution, *_ = np.linalg.lstsq(design, data.y_train, rcond=None)
    test_design = np.hstack([data.all_columns(1), np.ones((len(data.y_test), 1))])
    least_squares_rmse = float(np.sqrt(np.mean((test_design @ solution - data.y_test) ** 2)))
    print(f"linear: RMSE federated {rmse:.4f}, least squares {least_squares_rmse:.4f}")
    # Stated tolerance: within 5 % of the closed-form optimum after three epochs of SGD.
    assert rmse <= 1.05 * least_squares_rmse
    central = central_taylor(LINEAR, data)
    np.testing.assert_allclose(values, central_scores(central, data), atol=1e-6)
    np.testing.assert_allclose(linear_run.arbiter.losses, central.losses, atol=1e-6)


def test_history_has_losses_and_epoch_times(logistic_one_host: Run, linear_run: Run) -> None:
    for run in (logistic_one_host, linear_run):
        assert len(run.guest.history.losses) == run.config.epochs == len(run.arbiter.losses)
        assert run.guest.history.losses == run.arbiter.losses
        assert run.guest.history.losses[-1] < run.guest.history.losses[0]
        for history in (run.guest.history, run.arbiter, *(h.history for h in run.hosts.values())):
            assert len(history.epoch_seconds) == run.config.epochs and all(s > 0 for s in history.epoch_seconds)
    # The Taylor loss at w = 0 is log 2 per row; the decrypted mean matches the plain formula later on.
    first = logistic_one_host.guest.history.losses[0]
    assert 0.3 < first < np.log(2) + 1e-9


def test_models_round_trip_and_refuse_garbage(logistic_one_host: Run) -> None:
    guest = logistic_one_host.guest.model
    again = GuestModel.from_bytes(guest.to_bytes())
    assert again.task == guest.task and again.intercept == guest.intercept
    np.testing.assert_array_equal(again.weights, guest.weights)
    host = logistic_one_host.hosts["host"].model
    np.testing.assert_array_equal(HostModel.from_bytes(host.to_bytes()).weights, host.weights)
    for bad in (b"\x80", b"[]", host.to_bytes(), guest.to_bytes().replace(b'"intercept":', b'"intercept_":'),
                b'{"format":"ppml.vfl.linear/1/host","task":"logistic","weights":[1,"x"]}'):
        with pytest.raises(MalformedModel):
            GuestModel.from_bytes(bad)


def test_early_stop_stops_every_party() -> None:
    config = dataclasses.replace(LINEAR, epochs=4, early_stop_tolerance=1e9)
    data = synthetic_linear()
    data = dataclasses.replace(data, guest=(data.guest[0][:100], data.guest[1]), y_train=data.y_train[:100],
                               hosts={"host": (data.hosts["host"][0][:100], data.hosts["host"][1])})
    run = train(config, data)
    assert len(run.arbiter.losses) == 2 == len(run.guest.history.losses)
    assert len(run.hosts["host"].history.epoch_seconds) == 2


# -- what the messages hold -----------------------------------------------------------------------


def masks(party: str, run: Run, size: int, count: int) -> list[Array]:
    rng = np.random.default_rng(MASK_SEEDS[party])
    return [rng.uniform(-run.config.mask_scale, run.config.mask_scale, size) for _ in range(count)]


@pytest.mark.parametrize("fixture", ["logistic_one_host", "logistic_two_hosts"])
def test_hosts_receive_only_ciphertexts_key_header_and_masked_gradients(fixture: str,
                                                                        request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(fixture)
    central = central_taylor(run.config, run.data)
    passive = public_backend(PUBLIC.to_bytes())
    for host in run.config.hosts:
        received = run.hub.received_by(host)
        true_gradients = iter(central.gradients[host])
        host_masks = iter(masks(host, run, run.data.hosts[host][0].shape[1], len(central.gradients[host])))
        kinds: set[str] = set()
        for message in received:
            kinds.add(message.kind)
            if message.sender == ARBITER and message.kind == "vfl.public_key":
                assert message.payload == PUBLIC.to_bytes()
            elif message.sender == ARBITER and message.kind == "vfl.grad":
                masked, true = unpack_array(message.payload), next(true_gradients)
                assert (np.abs(masked - true) > 1e-3).all()  # the arbiter decrypted a masked value
                np.testing.assert_allclose(masked - next(host_masks), true, atol=1e-6)
            elif message.sender == ARBITER and message.kind == "vfl.epoch":
                assert set(unpack_json(message.payload)) == {"stop"}  # not the loss
            elif message.sender == GUEST and message.kind == "vfl.setup":
                assert set(unpack_json(message.payload)) == {"protocol", "task", "epochs", "batch_size",
                                                              "learning_rate", "l2", "rows", "seed"}
            elif message.sender == GUEST and message.kind in ("vfl.residual", "vfl.cross_in"):
                passive.ciphertext_from_bytes(message.payload)  # parses under the arbiter's key
            else:
                pytest.fail(f"{host} received an unexpected {message.kind} from {message.sender}")
        assert next(true_gradients, None) is None
        assert {"vfl.public_key", "vfl.setup", "vfl.residual", "vfl.grad", "vfl.epoch"} <= kinds


def label_encodings(y: Array, batches: list[npt.NDArray[np.int64]]) -> list[bytes]:
    encodings = []
    for labels in [y, *(y[b] for b in batches)]:
        encodings += [labels.astype("<f8").tobytes(), labels.astype("<i8").tobytes(), labels.astype("<f4").tobytes()]
    encodings += [y.astype(np.uint8).tobytes(), pack_array(y), pack_array(y.astype(np.int64)),
                  ",".join(str(int(v)) for v in y).encode()]
    return encodings


@pytest.mark.parametrize("fixture", ["logistic_one_host", "logistic_two_hosts"])
def test_labels_never_leave_the_guest(fixture: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(fixture)
    assert run.config.seed is not None
    batches = batch_order(run.config.seed, len(run.data.y_train), run.config.batch_size, 0)
    encodings = label_encodings(run.data.y_train, batches)
    sent = [m for m in run.hub.messages if m.sender == GUEST]
    assert sent
    for message in sent:
        assert not any(encoding in message.payload for encoding in encodings), message.kind


@pytest.mark.parametrize("fixture", ["logistic_one_host", "logistic_two_hosts"])
def test_arbiter_never_receives_an_unmasked_gradient(fixture: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(fixture)
    central = central_taylor(run.config, run.data)
    arbiter = arbiter_backend()
    for party in (GUEST, *run.config.hosts):
        received = [m for m in run.hub.received_by(ARBITER) if m.sender == party]
        assert {m.kind for m in received} <= {"vfl.masked_grad", "vfl.loss", "vfl.setup"}
        gradients = [m for m in received if m.kind == "vfl.masked_grad"]
        assert len(gradients) == len(central.gradients[party])
        for message, true in zip(gradients, central.gradients[party], strict=True):
            decrypted = np.array(arbiter.decrypt(arbiter.ciphertext_from_bytes(message.payload)))
            assert (np.abs(decrypted - true) > 1e-3).all()
    # The guest's setup header tells the arbiter no seed (it needs no batch order).
    setup = next(m for m in run.hub.received_by(ARBITER) if m.kind == "vfl.setup")
    assert "seed" not in unpack_json(setup.payload)


# -- bad input aborts every party -----------------------------------------------------------------


class Tampering:
    """A party's channel whose first message of ``kind`` is replaced by ``replace(payload)``."""

    def __init__(self, inner: Channel, kind: str, replace: Callable[[bytes], bytes]) -> None:
        self._inner, self._kind, self._replace, self._done = inner, kind, replace, False

    @property
    def party(self) -> str:
        return self._inner.party

    @property
    def parties(self) -> tuple[str, ...]:
        return self._inner.parties

    def send(self, to: str, kind: str, payload: bytes) -> None:
        if kind == self._kind and not self._done:
            self._done, payload = True, self._replace(payload)
        self._inner.send(to, kind, payload)

    def receive(self, sender: str, kind: str) -> bytes:
        return self._inner.receive(sender, kind)


def longer_vector(payload: bytes) -> bytes:
    backend = public_backend(PUBLIC.to_bytes())
    vector = backend.ciphertext_from_bytes(payload)
    longer = EncryptedVector(vector.public_key, (*vector.ciphertexts, vector.ciphertexts[0]), vector.fraction_bits)
    return backend.ciphertext_to_bytes(longer)


def under_another_key(payload: bytes) -> bytes:
    backend = PaillierBackend(OTHER_PUBLIC)
    return backend.ciphertext_to_bytes(backend.encrypt([0.0] * len(public_backend(PUBLIC.to_bytes())
                                                                     .ciphertext_from_bytes(payload))))


TAMPERINGS = {
    "garbage ciphertext from a host": ("host", "vfl.u", lambda _: b"\x01not a ciphertext", MalformedHeData),
    "ciphertext under another key": ("host", "vfl.u", under_another_key, MalformedHeData),
    "one ciphertext too many": ("host", "vfl.u", longer_vector, InvalidPeerMessage),
    "wrong-length masked gradient": ("host", "vfl.masked_grad", longer_vector, InvalidPeerMessage),
    "wrongly shaped plain gradient": (ARBITER, "vfl.grad", lambda p: pack_array(np.zeros((2, 2))),
                                      InvalidPeerMessage),
    "a setup header with another task": (GUEST, "vfl.setup", lambda p: p.replace(b"logistic", b"linear"),
                                         InvalidPeerMessage),
}


@pytest.mark.parametrize("case", sorted(TAMPERINGS))
def test_malformed_peer_message_aborts_every_party(case: str) -> None:
    party, kind, replace, expected = TAMPERINGS[case]
    config = dataclasses.replace(LOGISTIC_1, epochs=1, batch_size=20)
    data = breast_cancer()
    data = dataclasses.replace(data, guest=(data.guest[0][:40], data.guest[1]), y_train=data.y_train[:40],
                               hosts={"host": (data.hosts["host"][0][:40], data.hosts["host"][1])})
    failures: dict[str, BaseException] = {}

    def wrap(name: str, channel: Channel) -> Channel:
        return Tampering(channel, kind, replace) if name == party else channel

    def recording(name: str, role: Callable[[Channel], Any]) -> Callable[[Channel], Any]:
        def run(channel: Channel) -> Any:
            try:
                return role(channel)
            except BaseException as exc:
                failures[name] = exc
                raise
        return run

    hub = LocalHub([ARBITER, GUEST, "host"])
    table = {name: recording(name, role) for name, role in roles(config, data, wrap).items()}
    with pytest.raises(expected):
        run_parties(hub, table)
    assert hub.aborted is not None
    assert set(failures) == {ARBITER, GUEST, "host"}
    assert all(isinstance(exc, PpmlError) for exc in failures.values())
    assert sum(isinstance(exc, expected) for exc in failures.values()) == 1
    assert all(isinstance(exc, expected | RoundAborted) for exc in failures.values())
    assert issubclass(RoundAborted, FederatedLearningError)


def test_predict_refuses_a_request_for_other_rows(logistic_one_host: Run) -> None:
    run = logistic_one_host
    hub = LocalHub([GUEST, "host"])
    table: dict[str, Callable[[Channel], Any]] = {
        GUEST: functools.partial(guest_predict, config=run.config, model=run.guest.model,
                                 features=run.data.guest[1][:10]),
        "host": functools.partial(host_predict, config=run.config, model=run.hosts["host"].model,
                                  features=run.data.hosts["host"][1]),
    }
    with pytest.raises(InvalidPeerMessage):
        run_parties(hub, table)


@pytest.mark.parametrize("change", [{"task": "poisson"}, {"epochs": 0}, {"learning_rate": float("nan")},
                                    {"l2": -1.0}, {"hosts": ()}, {"hosts": (GUEST,)}, {"mask_scale": 0.0},
                                    {"seed": -1}])
def test_config_is_validated_once(change: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        dataclasses.replace(LOGISTIC_1, **change)


def test_a_role_refuses_a_channel_of_another_party() -> None:
    hub = LocalHub([ARBITER, GUEST, "host"])
    with pytest.raises(UsageError):
        arbiter_train(hub.channel(GUEST), config=LOGISTIC_1, backend=arbiter_backend())
    with pytest.raises(UsageError):
        host_train(hub.channel(GUEST), config=LOGISTIC_1, features=np.ones((3, 1)), public_backend=public_backend)
    with pytest.raises(UsageError):
        arbiter_train(hub.channel(ARBITER), config=LOGISTIC_1, backend=public_backend(PUBLIC.to_bytes()))


def test_logistic_over_ckks_matches_the_central_taylor_model() -> None:
    """The same protocol on the second HEBackend (CKKS, approximate): weights within 1e-3 of the plain
    computation, AUC within 0.01 of scikit-learn's. CKKS wants small masks (its error grows with the
    magnitude it carries): 2^8 here."""
    pytest.importorskip("tenseal")
    from ppml.fl.he.ckks import CkksBackend

    config = dataclasses.replace(LOGISTIC_1, mask_scale=2.0 ** 8)
    data = breast_cancer()
    hub = LocalHub([ARBITER, GUEST, "host"])
    features, _ = data.hosts["host"]
    results = run_parties(hub, {
        ARBITER: functools.partial(arbiter_train, config=config, backend=CkksBackend()),
        GUEST: functools.partial(guest_train, config=config, features=data.guest[0], labels=data.y_train,
                                 public_backend=CkksBackend.from_public_key_bytes),
        "host": functools.partial(host_train, config=config, features=features,
                                  public_backend=CkksBackend.from_public_key_bytes)})
    central = central_taylor(config, data)
    np.testing.assert_allclose(results[GUEST].model.weights, central.weights[GUEST], atol=1e-3)
    np.testing.assert_allclose(results["host"].model.weights, central.weights["host"], atol=1e-3)
    run = Run(config, data, hub, results[GUEST], {"host": results["host"]}, results[ARBITER])
    sklearn = LogisticRegression(max_iter=1000).fit(data.all_columns(0), data.y_train)
    assert abs(roc_auc_score(data.y_test, predict(run))
               - roc_auc_score(data.y_test, sklearn.predict_proba(data.all_columns(1))[:, 1])) < 0.01
