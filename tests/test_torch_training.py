"""Distributed PyTorch training on encrypted data through Spark's TorchDistributor (2 DDP ranks over
gloo, in the tests' shared Spark session): every rank reads the encrypted split, rank 0 writes an
encrypted checkpoint each epoch, and a run resumed from the checkpoint of epoch k takes exactly the
steps (the same losses) an uninterrupted run takes from there."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from ppml.core.envelope import encrypt_file
from ppml.kms.local import LocalKeyStore

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def digits_split(tmp_path: Path, store: LocalKeyStore, key_id: str, rows: int) -> str:
    from ppml.cli.ml_examples import digits_data, split

    digits_data(tmp_path / "data.csv", rows, 3, "classification")
    split(tmp_path / "data.csv", tmp_path / "train.csv", tmp_path / "test.csv")
    encrypt_file(tmp_path / "train.csv", tmp_path / "train.csv.ppml", kms=store, key_id=key_id)
    return str(tmp_path / "train.csv.ppml")


def distribute(config: Any) -> dict[str, Any]:
    from pyspark.ml.torch.distributor import TorchDistributor

    from ppml.examples.torch_training import train_worker

    result: dict[str, Any] = TorchDistributor(num_processes=2, local_mode=True, use_gpu=False).run(train_worker,
                                                                                                   config)
    return result


def test_resuming_from_an_encrypted_checkpoint_takes_the_same_steps(spark: Any, tmp_path: Path,
                                                                      key_store: LocalKeyStore, key_id: str) -> None:
    import ppml.torch.checkpoint as checkpoint
    from ppml.examples.torch_training import TrainConfig

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    train = digits_split(tmp_path, key_store, key_id, 400)
    kms_uri = f"local:{tmp_path / 'keys'}"
    base = TrainConfig(kind="digits", train=train, kms=kms_uri, model_key=key_id, features=64, epochs=3,
                       batch_size=32, checkpoint=str(tmp_path / "full.ppml"))
    full = distribute(base)
    assert full["world"] == 2
    steps_per_epoch = len(full["losses"]) // 3
    assert steps_per_epoch == 5  # 320 training rows over 2 ranks, 32 a batch
    assert full["losses"][-1] < full["losses"][0]

    distribute(dataclasses.replace(base, epochs=2, checkpoint=str(tmp_path / "two.ppml")))
    stored = (tmp_path / "two.ppml").read_bytes()
    assert stored[:4] == b"PPML" and b"conv" not in stored.lower()
    assert checkpoint.load(tmp_path / "two.ppml", kms=key_store)["epoch"] == 2
    resumed = distribute(dataclasses.replace(base, resume_from=str(tmp_path / "two.ppml"),
                                             checkpoint=str(tmp_path / "resumed.ppml")))
    assert resumed["losses"] == full["losses"][2 * steps_per_epoch:]

    final, again = (checkpoint.load(tmp_path / name, kms=key_store) for name in ("full.ppml", "resumed.ppml"))
    assert final["epoch"] == again["epoch"] == 3
    assert all(final["model"][name].equal(again["model"][name]) for name in final["model"])
