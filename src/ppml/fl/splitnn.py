"""Split neural networks for vertical federated learning: party roles over a :class:`~ppml.fl.channel.Channel`.

Rows are aligned beforehand (row ``i`` is the same person at every party, e.g. after
:mod:`ppml.fl.psi`). Each party holds some columns; one, the *label party*, also holds the labels.
Every party owns a *bottom model* (a small MLP from its columns to an embedding of
``embedding_size``); the label party also owns the *top model* (the embeddings concatenated, its
own first, then the passive parties' in ``passive_parties`` order → MLP → one output). The loss is
binary cross-entropy on a logit (``task="binary"``) or mean squared error (``task="regression"``).

Protocol of :func:`train_label_party` / :func:`train_passive_party` (message kinds in quotes;
arrays in :mod:`ppml.fl.wire` format, float32)::

    0. label -> each passive   "splitnn/train"     JSON {rows, epochs, batch_size, embedding_size, shuffle_seed}
    per epoch, both sides draw the same permutation of the rows from shuffle_seed; per minibatch B:
    1. each passive -> label   "splitnn/embedding" E_p = bottom_p(X_p[B])                 shape (|B|, k)
    2. label: loss of top([bottom_L(X_L[B]), E_1, ..., E_m]) against y[B]; steps its optimizer
    3. label -> each passive   "splitnn/gradient"  G_p, row i = d loss_i / d E_p[i]        shape (|B|, k)
    4. each passive backpropagates G_p / |B| into bottom_p and steps its own optimizer

Prediction (:func:`predict_label_party` / :func:`predict_passive_party`): the label party sends
"splitnn/predict" ``{rows, batch_size, embedding_size}``, then, batch by batch in row order, every
passive party sends "splitnn/embedding" for the scoring rows and the label party outputs
probabilities (binary) or values (regression). Passive parties learn nothing from prediction.

What each party learns:

* The **label party** sees the passive parties' embeddings of every training and scoring row,
  never their raw features, weights or column count. Embeddings are a learned function of the
  features and can reveal a lot about them (feature-reconstruction / model-inversion attacks):
  they are not encrypted and not a privacy guarantee for the features.
* A **passive party** receives the gradient of the loss with respect to *its own* embedding, row by
  row. Split learning needs exactly this to train the bottom model, and it carries label
  information: for binary classification the norm and direction of a row's cut-layer gradient
  separate positives from negatives well (Li et al., "Label Leakage and Protection in Two-party
  Split Learning", ICLR 2022; Fu et al., "Label Inference Attacks Against Vertical Federated
  Learning", USENIX Security 2022). Labels themselves never leave the label party.
  The mitigation offered here is optional and off by default: ``gradient_clip`` bounds each row's
  gradient to an L2 norm, then ``gradient_noise`` adds Gaussian noise of that standard deviation
  to every coordinate of the gradients sent (the label party's own update uses the exact
  gradients). This blunts the norm attack and, with enough noise, the direction attack, at a cost
  in accuracy; it is a heuristic, not a differential-privacy guarantee (no accounting is done).
  The noise is drawn from a generator seeded by the operating system, never from ``seed``, so a
  party that knows the configuration cannot subtract it.

Every array received is checked (float32, shape ``(|B|, k)`` for the current batch, all values
finite) and a bad one is refused with :class:`~ppml.errors.InvalidPeerMessage`; a header that does
not match this party's configuration or data raises
:class:`~ppml.errors.FederatedLearningError`. Either aborts the round for every party
(:func:`~ppml.fl.channel.run_parties`). ``seed`` makes a run reproducible (each party seeds its
own ``torch.Generator`` from it and its name; the global torch RNG is not used); it is not a
secret. Trained shares serialise to bytes (:meth:`PartyModel.to_bytes`, safetensors plus JSON;
no pickle) so a caller can store them encrypted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import secrets
import struct
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from ppml.errors import FederatedLearningError, UsageError
from ppml.fl.channel import Channel
from ppml.fl.wire import pack_array, pack_json, unpack_array, unpack_json

__all__ = [
    "MODEL_FORMAT_VERSION",
    "MODEL_MAGIC",
    "PartyModel",
    "SplitNNConfig",
    "Task",
    "predict_label_party",
    "predict_passive_party",
    "train_label_party",
    "train_passive_party",
]

Task = Literal["binary", "regression"]

MODEL_MAGIC: Final = b"PPMLSPNN"
MODEL_FORMAT_VERSION: Final = 1
_MODEL_PREFIX: Final = struct.Struct(">8sBI")
_MAX_ARCHITECTURE: Final = 1 << 20
_MAX_WIDTH: Final = 1 << 16

_TRAIN: Final = "splitnn/train"
_PREDICT: Final = "splitnn/predict"
_EMBEDDING: Final = "splitnn/embedding"
_GRADIENT: Final = "splitnn/gradient"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SplitNNConfig:
    """What every party of one split-NN round agrees on (each party is given the same one).

    ``gradient_clip`` (per-row L2 bound) and ``gradient_noise`` (Gaussian standard deviation) act
    on the cut-layer gradients the label party sends; both off by default (see the module
    docstring on label leakage). ``torch_threads`` is what the roles pass to the process-wide
    ``torch.set_num_threads`` before they compute (None: leave it alone): layers this small run
    fastest on one thread, and on a busy 2-core host two intra-op threads made one backward pass of
    a 30-48-1 MLP take 35 ms instead of 0.1 ms. Gradients on the wire are per-example (row ``i`` is the gradient
    of row ``i``'s own loss), so both are in per-example units, independent of ``batch_size``.

    Raises:
        UsageError: a value out of range, or a party named twice.
    """

    label_party: str
    passive_parties: tuple[str, ...]
    task: Task = "binary"
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-2
    seed: int = 0
    embedding_size: int = 8
    bottom_hidden: tuple[int, ...] = (16,)
    top_hidden: tuple[int, ...] = (16,)
    gradient_clip: float | None = None
    gradient_noise: float = 0.0
    torch_threads: int | None = 1

    def __post_init__(self) -> None:
        names = (self.label_party, *self.passive_parties)
        if not self.passive_parties or len(set(names)) != len(names):
            raise UsageError("a split NN needs a label party and at least one other, distinct passive party")
        if self.task not in ("binary", "regression"):
            raise UsageError(f"task is 'binary' or 'regression', not {self.task!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise UsageError("epochs and batch_size are at least 1")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise UsageError("learning_rate is a positive number")
        if not 0 <= self.seed < 1 << 63:
            raise UsageError("seed is an integer in [0, 2**63)")
        if not all(0 < width <= _MAX_WIDTH for width in (self.embedding_size, *self.bottom_hidden,
                                                          *self.top_hidden)):
            raise UsageError(f"layer widths are between 1 and {_MAX_WIDTH}")
        if self.gradient_clip is not None and not (math.isfinite(self.gradient_clip) and self.gradient_clip > 0):
            raise UsageError("gradient_clip is a positive number or None")
        if not (math.isfinite(self.gradient_noise) and self.gradient_noise >= 0):
            raise UsageError("gradient_noise is a standard deviation: a number >= 0")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise UsageError("torch_threads is at least 1, or None")


@dataclasses.dataclass(eq=False, kw_only=True)
class PartyModel:
    """One party's share of a split NN: its bottom model and, for the label party, the top model.

    Byte form (:meth:`to_bytes`; integers big-endian, every length checked before use)::

        offset  size  field
             0     8  magic              b"PPMLSPNN"
             8     1  version            0x01
             9     4  architecture size  1 ≤ J ≤ 1 MiB
            13     J  architecture       UTF-8 JSON: {"party", "role": "label"|"passive", "features",
                                         "embedding_size", "bottom_hidden", "task", "top_hidden",
                                         "passive_parties"} (the last three null for a passive party)
        13 + J     -  weights            a safetensors file: "bottom.*" and "top.*" state-dict entries

    The weights are plaintext; encrypt the bytes (:mod:`ppml.core.envelope`) to store them.
    """

    party: str
    features: int
    embedding_size: int
    bottom_hidden: tuple[int, ...]
    bottom: nn.Sequential
    task: Task | None = None
    top_hidden: tuple[int, ...] | None = None
    passive_parties: tuple[str, ...] | None = None
    top: nn.Sequential | None = None

    @property
    def is_label_party(self) -> bool:
        return self.top is not None

    def to_bytes(self) -> bytes:
        """The architecture (JSON) and weights (safetensors) of this share; see the class docstring."""
        architecture = json.dumps({
            "party": self.party, "role": "label" if self.is_label_party else "passive", "features": self.features,
            "embedding_size": self.embedding_size, "bottom_hidden": list(self.bottom_hidden), "task": self.task,
            "top_hidden": None if self.top_hidden is None else list(self.top_hidden),
            "passive_parties": None if self.passive_parties is None else list(self.passive_parties),
        }, separators=(",", ":"), sort_keys=True).encode()
        tensors = {f"bottom.{name}": tensor.detach().contiguous() for name, tensor in self.bottom.state_dict().items()}
        if self.top is not None:
            tensors |= {f"top.{name}": tensor.detach().contiguous() for name, tensor in self.top.state_dict().items()}
        weights = safetensors.torch.save(tensors)
        return _MODEL_PREFIX.pack(MODEL_MAGIC, MODEL_FORMAT_VERSION, len(architecture)) + architecture + weights

    @classmethod
    def from_bytes(cls, data: bytes) -> PartyModel:
        """Rebuild a share from :meth:`to_bytes`; nothing is unpickled.

        Raises:
            UsageError: the bytes are not a split-NN share of this format, or the weights do not fit
                the architecture they come with.
        """
        if len(data) < _MODEL_PREFIX.size:
            raise UsageError("not a split-NN party model (too short)")
        magic, version, size = _MODEL_PREFIX.unpack_from(data)
        if magic != MODEL_MAGIC or version != MODEL_FORMAT_VERSION or not 0 < size <= _MAX_ARCHITECTURE \
                or _MODEL_PREFIX.size + size > len(data):
            raise UsageError("not a split-NN party model of format version 1")
        end = _MODEL_PREFIX.size + size
        try:
            spec = json.loads(bytes(data[_MODEL_PREFIX.size:end]).decode("utf-8"))
            model = _model_from_architecture(spec, len(data) - end)
            stored = safetensors.torch.load(bytes(data[end:]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, SafetensorError, UsageError) as exc:
            raise UsageError(f"not a valid split-NN party model ({type(exc).__name__})") from None
        modules = {"bottom": model.bottom, **({"top": model.top} if model.top is not None else {})}
        expected = {f"{prefix}.{name}": tensor for prefix, module in modules.items()
                    for name, tensor in module.state_dict().items()}
        if set(stored) != set(expected) or any(stored[name].shape != tensor.shape or stored[name].dtype != tensor.dtype
                                               for name, tensor in expected.items()):
            raise UsageError("the split-NN model's weights do not fit its architecture")
        for prefix, module in modules.items():
            module.load_state_dict(OrderedDict((name[len(prefix) + 1:], tensor) for name, tensor in stored.items()
                                               if name.startswith(prefix + ".")))
        return model


def _weight_bytes(inputs: int, hidden: Sequence[int], outputs: int) -> int:
    widths = [inputs, *hidden, outputs]
    return 4 * sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(widths))


def _model_from_architecture(spec: Any, weight_bytes: int) -> PartyModel:
    if not isinstance(spec, dict) or spec.get("role") not in ("label", "passive"):
        raise ValueError("architecture")
    label = spec["role"] == "label"
    party, features, embedding = spec["party"], spec["features"], spec["embedding_size"]
    bottom_hidden = _widths(spec["bottom_hidden"])
    if not isinstance(party, str) or not _is_width(features) or not _is_width(embedding):
        raise ValueError("architecture")
    # Checked before any layer is allocated: a forged header must not make a party allocate gigabytes.
    size = _weight_bytes(features, bottom_hidden, embedding)
    if size > weight_bytes:
        raise ValueError("weights")
    bottom = _mlp(features, bottom_hidden, embedding)
    if not label:
        return PartyModel(party=party, features=features, embedding_size=embedding, bottom_hidden=bottom_hidden,
                          bottom=bottom)
    passive = spec["passive_parties"]
    task = spec["task"]
    if (not isinstance(passive, list) or not passive or not all(isinstance(name, str) for name in passive)
            or task not in ("binary", "regression")):
        raise ValueError("architecture")
    top_hidden = _widths(spec["top_hidden"])
    if size + _weight_bytes(embedding * (1 + len(passive)), top_hidden, 1) > weight_bytes:
        raise ValueError("weights")
    return PartyModel(party=party, features=features, embedding_size=embedding, bottom_hidden=bottom_hidden,
                      bottom=bottom, task=task, top_hidden=top_hidden, passive_parties=tuple(passive),
                      top=_mlp(embedding * (1 + len(passive)), top_hidden, 1))


def _is_width(value: Any) -> bool:
    return type(value) is int and 0 < value <= _MAX_WIDTH


def _widths(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > 16 or not all(_is_width(width) for width in value):
        raise ValueError("widths")
    return tuple(value)


def _mlp(inputs: int, hidden: Sequence[int], outputs: int) -> nn.Sequential:
    """Linear/ReLU layers with uninitialised weights: built on the meta device, so the global torch
    RNG is neither used nor advanced (:func:`_initialise` or loaded weights fill them)."""
    layers: list[nn.Module] = []
    width = inputs
    for size in hidden:
        layers += [nn.Linear(width, size, device="meta"), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, outputs, device="meta"))
    return nn.Sequential(*layers).to_empty(device="cpu")


def _party_generator(seed: int, party: str, purpose: str) -> torch.Generator:
    digest = hashlib.sha256(f"ppml-splitnn/{seed}/{purpose}/{party}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)


def _initialise(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` initialisation, drawn from ``generator`` (not the global RNG,
    which the parties' threads would share)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(layer.in_features)
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def _new_model(config: SplitNNConfig, party: str, features: int, *, label: bool) -> PartyModel:
    generator = _party_generator(config.seed, party, "init")
    bottom = _mlp(features, config.bottom_hidden, config.embedding_size)
    _initialise(bottom, generator)
    if not label:
        return PartyModel(party=party, features=features, embedding_size=config.embedding_size,
                          bottom_hidden=config.bottom_hidden, bottom=bottom)
    top = _mlp(config.embedding_size * (1 + len(config.passive_parties)), config.top_hidden, 1)
    _initialise(top, generator)
    return PartyModel(party=party, features=features, embedding_size=config.embedding_size,
                      bottom_hidden=config.bottom_hidden, bottom=bottom, task=config.task,
                      top_hidden=config.top_hidden, passive_parties=config.passive_parties, top=top)


def _features(values: npt.ArrayLike) -> torch.Tensor:
    array = np.asarray(values)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0 or array.dtype.kind not in "fiub":
        raise UsageError(f"features are a non-empty 2-D numeric array, not one of shape {array.shape}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise UsageError("features hold a non-finite value")
    return torch.from_numpy(array)


def _labels(values: npt.ArrayLike, rows: int, task: Task) -> torch.Tensor:
    array = np.asarray(values)
    if array.shape != (rows,) or array.dtype.kind not in "fiub":
        raise UsageError(f"labels are a numeric vector of the features' {rows} rows, not of shape {array.shape}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise UsageError("labels hold a non-finite value")
    if task == "binary" and not np.isin(array, (0.0, 1.0)).all():
        raise UsageError("binary labels are 0 or 1")
    return torch.from_numpy(array)


def _role(channel: Channel, config: SplitNNConfig, expected: Literal["label", "passive"]) -> None:
    if set(channel.parties) != {config.label_party, *config.passive_parties}:
        raise UsageError("the channel's parties are not the configuration's label and passive parties")
    is_label = channel.party == config.label_party
    if is_label != (expected == "label"):
        raise UsageError(f"{channel.party} is not a {expected} party of this configuration")
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)


def _batches(rows: int, batch_size: int, order: torch.Tensor | None) -> list[torch.Tensor]:
    indexes = order if order is not None else torch.arange(rows)
    return list(torch.split(indexes, batch_size))


def _receive_matrix(channel: Channel, sender: str, kind: str, rows: int, width: int) -> torch.Tensor:
    values = unpack_array(channel.receive(sender, kind), shape=(rows, width), dtype="float32")
    return torch.from_numpy(values)


def _check_header(header: Any, expected: dict[str, int | None], *, sender: str) -> dict[str, int]:
    """A JSON header with exactly ``expected``'s integer fields, equal to them where not None."""
    if not isinstance(header, dict) or set(header) != set(expected) or not all(
            type(value) is int for value in header.values()):
        raise FederatedLearningError(f"{sender} sent a split-NN header with other fields than {sorted(expected)}")
    differences = [f"{name} {header[name]} (here {want})" for name, want in expected.items()
                   if want is not None and header[name] != want]
    if differences:
        raise FederatedLearningError(f"{sender} runs the split NN with {', '.join(differences)}: the parties' data "
                                     "or configurations do not match")
    return header


def _loss(task: Task, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if task == "binary":
        return nn.functional.binary_cross_entropy_with_logits(outputs, labels, reduction="none")
    return nn.functional.mse_loss(outputs, labels, reduction="none")


def _protect(gradient: torch.Tensor, config: SplitNNConfig, noise: torch.Generator | None) -> torch.Tensor:
    if config.gradient_clip is not None:
        norms = gradient.norm(dim=1, keepdim=True).clamp_min(1e-12)
        gradient = gradient * (config.gradient_clip / norms).clamp(max=1.0)
    if noise is not None and config.gradient_noise > 0:
        gradient = gradient + config.gradient_noise * torch.randn(gradient.shape, generator=noise)
    return gradient


def train_label_party(channel: Channel, features: npt.ArrayLike, labels: npt.ArrayLike, *,
                      config: SplitNNConfig) -> PartyModel:
    """The label party's training role: its bottom model, the top model, the loss; returns its share.

    ``features`` are this party's columns (rows aligned with every party's), ``labels`` 0/1
    (binary) or real values (regression). Labels never leave this party.

    Raises:
        UsageError: bad local data or configuration.
        InvalidPeerMessage: a passive party sent an embedding of the wrong shape or type, or a
            non-finite value.
        RoundAborted: another party failed.
    """
    _role(channel, config, "label")
    inputs = _features(features)
    targets = _labels(labels, inputs.shape[0], config.task)
    rows = inputs.shape[0]
    model = _new_model(config, channel.party, inputs.shape[1], label=True)
    assert model.top is not None
    parameters = [*model.bottom.parameters(), *model.top.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
    shuffle_seed = int.from_bytes(hashlib.sha256(f"ppml-splitnn/{config.seed}/shuffle".encode()).digest()[:8],
                                  "big") >> 1
    noise = torch.Generator().manual_seed(secrets.randbits(63)) if config.gradient_noise > 0 else None
    header = {"rows": rows, "epochs": config.epochs, "batch_size": config.batch_size,
              "embedding_size": config.embedding_size, "shuffle_seed": shuffle_seed}
    for passive in config.passive_parties:
        channel.send(passive, _TRAIN, pack_json(header))
    order = torch.Generator().manual_seed(shuffle_seed)
    model.bottom.train()
    model.top.train()
    for _ in range(config.epochs):
        for batch in _batches(rows, config.batch_size, torch.randperm(rows, generator=order)):
            received = [_receive_matrix(channel, passive, _EMBEDDING, len(batch), config.embedding_size)
                        .requires_grad_() for passive in config.passive_parties]
            joined = torch.cat([model.bottom(inputs[batch]), *received], dim=1)
            per_example = _loss(config.task, model.top(joined).squeeze(1), targets[batch])
            optimizer.zero_grad()
            # Summed, each embedding row's gradient is that example's own (what goes on the wire);
            # the parameters' gradients are rescaled to the batch mean below.
            per_example.sum().backward()
            for parameter in parameters:
                if parameter.grad is not None:
                    parameter.grad /= len(batch)
            optimizer.step()
            for passive, embedding in zip(config.passive_parties, received, strict=True):
                assert embedding.grad is not None
                gradient = _protect(embedding.grad, config, noise)
                channel.send(passive, _GRADIENT, pack_array(gradient.numpy().astype(np.float32)))
    model.bottom.eval()
    model.top.eval()
    return model


def train_passive_party(channel: Channel, features: npt.ArrayLike, *, config: SplitNNConfig) -> PartyModel:
    """A passive party's training role: its bottom model, trained from the cut-layer gradients it
    receives; returns its share. Its features never leave it (only embeddings of them do).

    Raises:
        UsageError: bad local data or configuration.
        InvalidPeerMessage: the label party sent a gradient of the wrong shape or type, or a
            non-finite value.
        FederatedLearningError: the label party's header does not match this party's rows or
            configuration.
        RoundAborted: another party failed.
    """
    _role(channel, config, "passive")
    inputs = _features(features)
    rows = inputs.shape[0]
    model = _new_model(config, channel.party, inputs.shape[1], label=False)
    optimizer = torch.optim.Adam(model.bottom.parameters(), lr=config.learning_rate)
    header = _check_header(
        unpack_json(channel.receive(config.label_party, _TRAIN)),
        {"rows": rows, "epochs": config.epochs, "batch_size": config.batch_size,
         "embedding_size": config.embedding_size, "shuffle_seed": None},
        sender=config.label_party)
    if not 0 <= header["shuffle_seed"] < 1 << 63:
        raise FederatedLearningError(f"{config.label_party} sent a shuffle seed out of range")
    order = torch.Generator().manual_seed(header["shuffle_seed"])
    model.bottom.train()
    for _ in range(config.epochs):
        for batch in _batches(rows, config.batch_size, torch.randperm(rows, generator=order)):
            embedding = model.bottom(inputs[batch])
            channel.send(config.label_party, _EMBEDDING, pack_array(embedding.detach().numpy()))
            gradient = _receive_matrix(channel, config.label_party, _GRADIENT, len(batch), config.embedding_size)
            optimizer.zero_grad()
            embedding.backward(gradient / len(batch))
            optimizer.step()
    model.bottom.eval()
    return model


def predict_label_party(channel: Channel, features: npt.ArrayLike, model: PartyModel, *,
                        config: SplitNNConfig) -> npt.NDArray[np.float64]:
    """The label party's scoring role: probabilities of class 1 (binary) or predicted values
    (regression) for every row, from its share and the passive parties' embeddings.

    Raises:
        UsageError: ``model`` is not this label party's share for this configuration, or bad data.
        InvalidPeerMessage: a passive party sent a malformed or non-finite embedding.
    """
    _role(channel, config, "label")
    if model.top is None or model.passive_parties != config.passive_parties \
            or model.embedding_size != config.embedding_size:
        raise UsageError("the model is not a label party's share for these passive parties and embedding size")
    inputs = _features(features)
    if inputs.shape[1] != model.features:
        raise UsageError(f"the model takes {model.features} columns, the data has {inputs.shape[1]}")
    rows = inputs.shape[0]
    header = {"rows": rows, "batch_size": config.batch_size, "embedding_size": config.embedding_size}
    for passive in config.passive_parties:
        channel.send(passive, _PREDICT, pack_json(header))
    outputs = []
    model.bottom.eval()
    model.top.eval()
    with torch.no_grad():
        for batch in _batches(rows, config.batch_size, None):
            received = [_receive_matrix(channel, passive, _EMBEDDING, len(batch), config.embedding_size)
                        for passive in config.passive_parties]
            output = model.top(torch.cat([model.bottom(inputs[batch]), *received], dim=1)).squeeze(1)
            outputs.append(torch.sigmoid(output) if model.task == "binary" else output)
    return torch.cat(outputs).numpy().astype(np.float64)


def predict_passive_party(channel: Channel, features: npt.ArrayLike, model: PartyModel, *,
                          config: SplitNNConfig) -> None:
    """A passive party's scoring role: sends the embeddings of its scoring rows, in row order.

    Raises:
        UsageError: ``model`` does not fit the data or configuration.
        FederatedLearningError: the label party's header does not match this party's rows.
    """
    _role(channel, config, "passive")
    if model.top is not None or model.embedding_size != config.embedding_size:
        raise UsageError("the model is not a passive party's share of this embedding size")
    inputs = _features(features)
    if inputs.shape[1] != model.features:
        raise UsageError(f"the model takes {model.features} columns, the data has {inputs.shape[1]}")
    rows = inputs.shape[0]
    _check_header(unpack_json(channel.receive(config.label_party, _PREDICT)),
                  {"rows": rows, "batch_size": config.batch_size, "embedding_size": config.embedding_size},
                  sender=config.label_party)
    model.bottom.eval()
    with torch.no_grad():
        for batch in _batches(rows, config.batch_size, None):
            channel.send(config.label_party, _EMBEDDING, pack_array(model.bottom(inputs[batch]).numpy()))
