"""FL jobs on a party's encrypted table: read, run the role, and hand back what to write.

The table is a ppml-encrypted CSV (``ppml.tabular.tables``), decrypted in memory with keys from
the party's KMS (through its attested session). A job returns its output as an Arrow table and
the caller writes it encrypted **after** the round has ended cleanly, so an aborted round leaves
no output at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ppml.core.keys import DataKeyProvider
from ppml.errors import UsageError
from ppml.fl.alignment import align_role, psi_role
from ppml.fl.channel import Channel
from ppml.fl.he.backend import HEBackend
from ppml.tabular.tables import read_csv_table

__all__ = [
    "HE_BACKENDS",
    "VerticalData",
    "VerticalOutcome",
    "arbiter_backend",
    "id_column_of",
    "public_backend_factory",
    "read_party_table",
    "run_alignment",
    "run_fgboost",
    "run_psi",
    "run_vfl_lr",
    "run_vfl_nn",
    "vertical_data",
    "write_outcome",
]


def read_party_table(path: Path | str, *, kms: DataKeyProvider, id_column: str) -> pa.Table:
    """The party's table, with ``id_column`` read as strings (ids are compared as UTF-8 bytes)."""
    table = read_csv_table(path, kms=kms, column_types={id_column: pa.string()})
    id_column_of(table, id_column)
    return table


def id_column_of(table: pa.Table, id_column: str) -> list[str]:
    if id_column not in table.column_names:
        raise UsageError(f"the table has no column {id_column!r} (columns: {', '.join(table.column_names)})")
    column = table.column(id_column)
    if column.null_count:
        raise UsageError(f"column {id_column!r} has empty ids")
    return [str(value) for value in column.to_pylist()]


def run_psi(channel: Channel, table: pa.Table, *, id_column: str, peer: str, cardinality_only: bool = False,
            workers: int = 1) -> tuple[int, pa.Table | None]:
    """``(size of the intersection, the common ids as a one-column table or None in cardinality mode)``."""
    result = psi_role(channel, id_column_of(table, id_column), peer=peer, cardinality_only=cardinality_only,
                      workers=workers)
    if result.intersection is None:
        return result.cardinality, None
    return result.cardinality, pa.table({id_column: pa.array([str(i) for i in result.intersection], pa.string())})


def run_alignment(channel: Channel, table: pa.Table, *, id_column: str, leader: str, members: Sequence[str],
                  workers: int = 1) -> pa.Table:
    """This party's rows for the ids every party holds, in the order every party gets (duplicates
    of an id keep their first row)."""
    ids = id_column_of(table, id_column)
    ordered = align_role(channel, ids, leader=leader, members=members, workers=workers)
    first_row: dict[str, int] = {}
    for row, value in enumerate(ids):
        first_row.setdefault(value, row)
    return table.take(pa.array([first_row[str(i)] for i in ordered], pa.int64()))


# -- vertical FL ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class VerticalData:
    """A party's aligned rows, split the same way at every party (the last ``test_fraction`` of the
    aligned order is held out), features standardised with the training rows' statistics."""

    train_ids: list[str]
    test_ids: list[str]
    train_features: npt.NDArray[np.float64]
    test_features: npt.NDArray[np.float64]
    train_labels: npt.NDArray[np.float64] | None
    test_labels: npt.NDArray[np.float64] | None


def vertical_data(channel: Channel, table: pa.Table, *, id_column: str, label_column: str | None, leader: str,
                  members: Sequence[str], test_fraction: float, workers: int = 1) -> VerticalData:
    """Align ids with every party (PSI), then split and standardise this party's columns."""
    if not 0 < test_fraction < 1:
        raise UsageError("test_fraction is between 0 and 1")
    aligned = run_alignment(channel, table, id_column=id_column, leader=leader, members=members, workers=workers)
    ids = id_column_of(aligned, id_column)
    feature_names = [name for name in aligned.column_names if name not in (id_column, label_column)]
    if not feature_names:
        raise UsageError("the table has no feature columns besides the id and the label")
    features = np.column_stack([aligned.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                                for name in feature_names])
    labels = None
    if label_column is not None:
        if label_column not in aligned.column_names:
            raise UsageError(f"the table has no label column {label_column!r}")
        labels = aligned.column(label_column).to_numpy(zero_copy_only=False).astype(np.float64)
    test = round(len(ids) * test_fraction)
    cut = len(ids) - test
    if cut < 2 or test < 1:
        raise UsageError(f"{len(ids)} aligned rows are too few to train and test on")
    mean = features[:cut].mean(axis=0)
    std = features[:cut].std(axis=0)
    std[std == 0] = 1.0
    features = (features - mean) / std
    return VerticalData(train_ids=ids[:cut], test_ids=ids[cut:], train_features=features[:cut],
                        test_features=features[cut:], train_labels=None if labels is None else labels[:cut],
                        test_labels=None if labels is None else labels[cut:])


HE_BACKENDS: dict[str, str] = {"paillier": "Paillier on gmpy2 (exact fixed point)",
                               "ckks": "CKKS through TenSEAL (approximate, SIMD-packed)"}


def arbiter_backend(name: str, *, key_bits: int = 2048) -> HEBackend[Any]:
    """The key holder's backend for ``name`` (a fresh key pair)."""
    if name == "paillier":
        from ppml.fl.he.paillier import PaillierBackend, generate_paillier_keypair

        return PaillierBackend(*generate_paillier_keypair(key_bits))
    if name == "ckks":
        from ppml.fl.he.ckks import CkksBackend

        return CkksBackend()
    raise UsageError(f"unknown HE backend {name!r}; choose one of {', '.join(HE_BACKENDS)}")


def public_backend_factory(name: str) -> Callable[[bytes], HEBackend[Any]]:
    """How a party that holds no key builds a backend from the arbiter's public key bytes."""
    if name == "paillier":
        from ppml.fl.he.paillier import PaillierBackend

        return PaillierBackend.from_public_key_bytes
    if name == "ckks":
        from ppml.fl.he.ckks import CkksBackend

        return CkksBackend.from_public_key_bytes
    raise UsageError(f"unknown HE backend {name!r}; choose one of {', '.join(HE_BACKENDS)}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class VerticalOutcome:
    """What a party keeps from a vertical round: its model share (bytes, to be stored encrypted)
    and, at the label party, the held-out predictions (id, label, score) and the epoch times."""

    model: bytes
    predictions: pa.Table | None
    epoch_seconds: tuple[float, ...] = ()


def _predictions(data: VerticalData, scores: npt.NDArray[np.float64]) -> pa.Table:
    assert data.test_labels is not None
    return pa.table({"id": pa.array(data.test_ids, pa.string()), "label": pa.array(data.test_labels),
                     "score": pa.array(np.asarray(scores, dtype=np.float64))})


def run_vfl_lr(channel: Channel, data: VerticalData, *, config: Any, he: str) -> VerticalOutcome:
    """Train vertical logistic/linear regression (``ppml.fl.vfl``) and score the held-out rows."""
    from ppml.fl.vfl import guest_predict, guest_train, host_predict, host_train

    factory = public_backend_factory(he)
    if channel.party == config.guest:
        if data.train_labels is None or data.test_labels is None:
            raise UsageError("the guest (label party) needs --label-column")
        trained = guest_train(channel, config=config, features=data.train_features, labels=data.train_labels,
                              public_backend=factory)
        scores = guest_predict(channel, config=config, model=trained.model, features=data.test_features)
        return VerticalOutcome(model=trained.model.to_bytes(), predictions=_predictions(data, scores),
                               epoch_seconds=tuple(trained.history.epoch_seconds))
    hosted = host_train(channel, config=config, features=data.train_features, public_backend=factory)
    host_predict(channel, config=config, model=hosted.model, features=data.test_features)
    return VerticalOutcome(model=hosted.model.to_bytes(), predictions=None,
                           epoch_seconds=tuple(hosted.history.epoch_seconds))


def run_vfl_nn(channel: Channel, data: VerticalData, *, config: Any) -> VerticalOutcome:
    """Train a split neural network (``ppml.fl.splitnn``) and score the held-out rows."""
    from ppml.fl.splitnn import predict_label_party, predict_passive_party, train_label_party, train_passive_party

    if channel.party == config.label_party:
        if data.train_labels is None:
            raise UsageError("the label party needs --label-column")
        model = train_label_party(channel, data.train_features, data.train_labels, config=config)
        scores = predict_label_party(channel, data.test_features, model, config=config)
        return VerticalOutcome(model=model.to_bytes(), predictions=_predictions(data, scores))
    model = train_passive_party(channel, data.train_features, config=config)
    predict_passive_party(channel, data.test_features, model, config=config)
    return VerticalOutcome(model=model.to_bytes(), predictions=None)


def write_outcome(outcome: VerticalOutcome, path: Path | str, *, kms: DataKeyProvider, key_id: str,
                  overwrite: bool = False) -> Path:
    """``path/model.ppml`` (the model share) and, at the label party, ``path/predictions/`` (a
    ppml CSV table), each under a fresh data key wrapped by ``key_id``; the directory appears whole
    or not at all."""
    import io

    import pyarrow.csv as pacsv

    from ppml.core._files import AtomicOutput, atomic_directory
    from ppml.core.envelope import encrypt_stream

    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as staging:
        model = staging / "model.ppml"
        encrypt_stream(io.BytesIO(outcome.model), lambda: AtomicOutput(model, overwrite=False), kms=kms, key_id=key_id)
        if outcome.predictions is not None:
            sink = pa.BufferOutputStream()
            pacsv.write_csv(outcome.predictions, sink)
            part = staging / "predictions" / "part-00000.csv.ppml"
            part.parent.mkdir()
            encrypt_stream(io.BytesIO(sink.getvalue().to_pybytes()), lambda: AtomicOutput(part, overwrite=False),
                           kms=kms, key_id=key_id)
    return path


def run_fgboost(channel: Channel, data: VerticalData, *, config: Any) -> VerticalOutcome:
    """Train FGBoost (``ppml.fl.fgboost``: SecureBoost with Paillier) and score the held-out rows."""
    from ppml.fl.fgboost import label_predict, label_train, passive_predict, passive_train

    if channel.party == config.label_party:
        if data.train_labels is None:
            raise UsageError("the label party needs --label-column")
        trained = label_train(channel, config=config, features=data.train_features, labels=data.train_labels)
        scores = label_predict(channel, config=config, model=trained.model, features=data.test_features)
        return VerticalOutcome(model=trained.model.to_bytes(), predictions=_predictions(data, scores),
                               epoch_seconds=tuple(trained.stats.tree_seconds))
    passive = passive_train(channel, config=config, features=data.train_features)
    passive_predict(channel, config=config, model=passive.model, features=data.test_features)
    return VerticalOutcome(model=passive.model.to_bytes(), predictions=None)
