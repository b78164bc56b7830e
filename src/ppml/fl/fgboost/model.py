"""FGBoost model shares: the label party's trees and a passive party's split lookup table, with
their JSON formats; and the quantile binning both kinds of party apply to their own columns."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from ppml.core.envelope import decrypt_bytes, encrypt_bytes
from ppml.core.keys import DataKeyProvider
from ppml.errors import InvalidCiphertext, InvalidPeerMessage, MalformedModel, UsageError
from ppml.fl.wire import pack_json, unpack_json

__all__ = ["FORMAT", "LabelModel", "PassiveModel", "Task", "TreeNode", "bin_features", "check_features", "open_model",
           "seal_model"]

FORMAT: Final = "ppml.fgboost/1"
MAX_ROWS: Final = 1 << 24
_MAX_NODES: Final = 1 << 16

Task = Literal["binary", "regression"]


def check_features(features: npt.ArrayLike, *, rows: int | None = None, columns: int | None = None,
                   ) -> npt.NDArray[np.float64]:
    """A finite rows x columns float matrix.

    Raises:
        UsageError: another shape, or a non-finite value (missing values are not supported).
    """
    values = np.asarray(features, dtype=np.float64)
    if values.ndim != 2 or not 1 <= values.shape[0] <= MAX_ROWS:
        raise UsageError(f"features must be a non-empty rows x columns matrix, not shape {values.shape}")
    if rows is not None and values.shape[0] != rows:
        raise UsageError(f"expected {rows} rows of features, got {values.shape[0]}")
    if columns is not None and values.shape[1] != columns:
        raise UsageError(f"the model was trained on {columns} columns, the features have {values.shape[1]}")
    if not np.isfinite(values).all():
        raise UsageError("features hold a non-finite value (missing values are not supported)")
    return values


def bin_features(features: npt.NDArray[np.float64], n_bins: int,
                 ) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[np.float64]]]:
    """Quantile bins per column: ``bins[i, f]`` in [0, n_bins) and the cut points of each column.

    ``bins[i, f] = #{cuts_f ≤ x_if}``, so "bin ≤ b" is "x < cuts_f[b]": a split at bin b has the
    threshold cuts_f[b] and sends rows with x < threshold left (at prediction too).
    """
    quantiles = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    bins = np.empty(features.shape, dtype=np.int64)
    cuts: list[npt.NDArray[np.float64]] = []
    for column in range(features.shape[1]):
        values = features[:, column]
        points = np.unique(np.quantile(values, quantiles)) if len(quantiles) else np.empty(0)
        points = points[points > values.min()]  # a cut at the minimum would leave an empty left side
        cuts.append(points.astype(np.float64))
        bins[:, column] = np.searchsorted(points, values, side="right")
    return bins, cuts


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TreeNode:
    """One node of a label-party tree. A leaf has ``left == right == -1`` and a ``weight`` (the
    learning rate applied). An inner node splits on the label party's own column ``feature`` at
    ``threshold`` (``party`` None) or refers to ``split_id`` in ``party``'s lookup table; rows with
    x < threshold go ``left``."""

    left: int = -1
    right: int = -1
    weight: float = 0.0
    feature: int = -1
    threshold: float = 0.0
    party: str | None = None
    split_id: int = -1

    @property
    def is_leaf(self) -> bool:
        return self.left < 0

    def to_json(self) -> dict[str, Any]:
        if self.is_leaf:
            return {"leaf": self.weight}
        if self.party is None:
            return {"left": self.left, "right": self.right, "feature": self.feature, "threshold": self.threshold}
        return {"left": self.left, "right": self.right, "party": self.party, "split_id": self.split_id}


def _number(value: Any, what: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise MalformedModel(f"{what} is not a finite number")
    return float(value)


def _index(value: Any, what: str, bound: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < bound:
        raise MalformedModel(f"{what} is not an index below {bound}")
    return value


def _node_from_json(value: Any, position: int, count: int, features: int) -> TreeNode:
    if not isinstance(value, dict):
        raise MalformedModel("a tree node is not an object")
    if set(value) == {"leaf"}:
        return TreeNode(weight=_number(value["leaf"], "a leaf weight"))
    # Children come after their parent: the tree is acyclic and every node is reached once at most.
    if not {"left", "right"} <= set(value):
        raise MalformedModel("an inner node lacks its children")
    left, right = _index(value["left"], "left", count), _index(value["right"], "right", count)
    if left <= position or right <= position or left == right:
        raise MalformedModel("a child does not come after its parent")
    if set(value) == {"left", "right", "feature", "threshold"}:
        return TreeNode(left=left, right=right, feature=_index(value["feature"], "feature", features),
                        threshold=_number(value["threshold"], "a threshold"))
    if set(value) == {"left", "right", "party", "split_id"}:
        party = value["party"]
        if not isinstance(party, str) or not party:
            raise MalformedModel("a split's party is not a name")
        return TreeNode(left=left, right=right, party=party,
                        split_id=_index(value["split_id"], "split_id", MAX_ROWS))
    raise MalformedModel("a tree node has unknown fields")


def _load(data: bytes, role: str) -> dict[str, Any]:
    try:
        document = unpack_json(data)
    except InvalidPeerMessage as exc:
        raise MalformedModel("not JSON") from exc
    if not isinstance(document, dict) or document.get("format") != f"{FORMAT}/{role}":
        raise MalformedModel(f"not a {role} model of {FORMAT}")
    return document


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LabelModel:
    """The label party's share: every tree's structure and leaf weights, its own thresholds, and
    (party, split id) references for splits on passive parties' columns.

    Serialized (:meth:`to_bytes`) as JSON, floats written exactly; node 0 is a tree's root and
    children come after their parent::

        {"format": "ppml.fgboost/1/label", "task": "binary", "base_score": 0.0, "features": 10,
         "trees": [[{"left": 1, "right": 2, "feature": 3, "threshold": 0.5},
                    {"left": 3, "right": 4, "party": "bank", "split_id": 0},
                    {"leaf": -0.12}, ...], ...]}
    """

    task: Task
    base_score: float
    features: int
    trees: tuple[tuple[TreeNode, ...], ...]

    def to_bytes(self) -> bytes:
        return pack_json({"format": f"{FORMAT}/label", "task": self.task, "base_score": self.base_score,
                          "features": self.features,
                          "trees": [[node.to_json() for node in tree] for tree in self.trees]})

    @classmethod
    def from_bytes(cls, data: bytes) -> LabelModel:
        """Parse :meth:`to_bytes`.

        Raises:
            MalformedModel: not a label model of this format, or a tree that is not a tree.
        """
        document = _load(data, "label")
        if set(document) != {"format", "task", "base_score", "features", "trees"}:
            raise MalformedModel("unexpected fields")
        if document["task"] not in ("binary", "regression"):
            raise MalformedModel("unknown task")
        features = _index(document["features"], "features", MAX_ROWS)
        trees = document["trees"]
        if not isinstance(trees, list) or not trees:
            raise MalformedModel("no trees")
        parsed = []
        for tree in trees:
            if not isinstance(tree, list) or not 1 <= len(tree) <= _MAX_NODES:
                raise MalformedModel("a tree is not a list of nodes")
            parsed.append(tuple(_node_from_json(node, i, len(tree), features) for i, node in enumerate(tree)))
        return cls(task=document["task"], base_score=_number(document["base_score"], "base_score"),
                   features=features, trees=tuple(parsed))

    def passive_parties(self) -> set[str]:
        return {node.party for tree in self.trees for node in tree if node.party is not None}


@dataclasses.dataclass(slots=True, kw_only=True)
class PassiveModel:
    """A passive party's share: its lookup table, split id → (own column, threshold). Thresholds and
    columns stay here; the label party holds only the ids.

    Serialized (:meth:`to_bytes`) as JSON; a split id is its position in ``splits``::

        {"format": "ppml.fgboost/1/passive", "features": 12, "splits": [[4, 0.31], [0, -1.5], ...]}
    """

    features: int
    splits: list[tuple[int, float]] = dataclasses.field(default_factory=list)

    def record(self, feature: int, threshold: float) -> int:
        """Add a split; its id."""
        if len(self.splits) >= MAX_ROWS:
            raise UsageError("the lookup table is full")
        self.splits.append((feature, threshold))
        return len(self.splits) - 1

    def lookup(self, split_id: int) -> tuple[int, float]:
        """(column, threshold) of a split.

        Raises:
            InvalidPeerMessage: no split with this id (the label party asked for one never made).
        """
        if not isinstance(split_id, int) or isinstance(split_id, bool) or not 0 <= split_id < len(self.splits):
            raise InvalidPeerMessage(f"no split with id {split_id!r} in this party's lookup table")
        return self.splits[split_id]

    def to_bytes(self) -> bytes:
        return pack_json({"format": f"{FORMAT}/passive", "features": self.features,
                          "splits": [[feature, threshold] for feature, threshold in self.splits]})

    @classmethod
    def from_bytes(cls, data: bytes) -> PassiveModel:
        """Parse :meth:`to_bytes`.

        Raises:
            MalformedModel: not a passive model of this format.
        """
        document = _load(data, "passive")
        if set(document) != {"format", "features", "splits"} or not isinstance(document["splits"], list):
            raise MalformedModel("unexpected fields")
        features = _index(document["features"], "features", MAX_ROWS)
        splits = []
        for entry in document["splits"]:
            if not isinstance(entry, list) or len(entry) != 2:
                raise MalformedModel("a split is not [column, threshold]")
            splits.append((_index(entry[0], "a split's column", features), _number(entry[1], "a threshold")))
        return cls(features=features, splits=splits)


def seal_model(model: LabelModel | PassiveModel, *, kms: DataKeyProvider, key_id: str) -> bytes:
    """A model share as a ppml envelope (a fresh data key wrapped by ``key_id``), its format name
    (label or passive) bound as associated data so one kind of share cannot pass for the other."""
    role = "label" if isinstance(model, LabelModel) else "passive"
    return encrypt_bytes(model.to_bytes(), kms=kms, key_id=key_id, associated_data=f"{FORMAT}/{role}".encode())


def open_model(envelope: bytes, *, kms: DataKeyProvider) -> LabelModel | PassiveModel:
    """Decrypt and parse :func:`seal_model`'s bytes.

    Raises:
        InvalidCiphertext: the envelope does not decrypt or its associated data was changed.
        MalformedModel: the plaintext is not a model share of this format.
    """
    for role, kind in (("label", LabelModel), ("passive", PassiveModel)):
        try:
            plaintext = decrypt_bytes(envelope, kms=kms, associated_data=f"{FORMAT}/{role}".encode())
        except InvalidCiphertext:
            continue
        return kind.from_bytes(plaintext)
    raise InvalidCiphertext()
