"""Data-parallel PyTorch training on encrypted data, one process per rank (DDP over gloo), as
Spark's ``TorchDistributor`` runs it: the models of the PyTorch examples, the per-rank training
function, and prediction.

Every rank reads its shard of the encrypted training split with keys from its TEE (the key agent
of the driver's TEE in local mode, of its executor's TEE on a cluster: :func:`ppml.tee.keys.kms_for`),
trains, and rank 0 writes an encrypted checkpoint after every epoch. Shuffling is seeded by
``(seed, epoch)`` and the model's initialisation by ``seed``, so a run resumed from the checkpoint of
epoch k takes exactly the steps an uninterrupted run takes from there (tested).
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["TrainConfig", "build_model", "load_split", "predict", "train_worker", "write_predictions"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What every rank needs (picklable, no secret: the KMS is named by URI)."""

    kind: str
    """``digits`` (a small CNN on 8x8 images, 10 classes) or ``tabular`` (an MLP, binary label)."""
    train: str
    kms: str
    model_key: str
    checkpoint: str
    features: int
    epochs: int
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 1
    resume_from: str | None = None
    """An encrypted checkpoint to continue from (its epoch, model and optimizer state)."""
    test: str | None = None
    """With ``predictions`` and ``output_key``: rank 0 scores this split with the trained model."""
    predictions: str | None = None
    output_key: str | None = None


def build_model(kind: str, features: int) -> Any:
    """The example's network: also what ``ppml serve-model --module`` builds."""
    from torch import nn

    if kind == "digits":
        return nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
        )
    return nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))


def feature_columns(kind: str, features: int) -> list[str]:
    """The splits' feature columns: ``p0..p63`` (digits' pixels) or ``f0..`` (tabular)."""
    return [f"{'p' if kind == 'digits' else 'f'}{i}" for i in range(features)]


def scale(kind: str, features: Any) -> Any:
    """Digits' intensities are 0-16; tabular features are already standard normal."""
    return features / 16.0 if kind == "digits" else features


def load_split(path: str, kms: Any, kind: str, features: int) -> tuple[Any, Any, Any]:
    """``(ids, inputs, labels)`` tensors of an encrypted split: the whole split, decrypted in memory
    (the example's splits are small)."""
    import numpy as np
    import torch

    from ppml.tabular.tables import read_csv_table

    table = read_csv_table(path, kms=kms)
    names = [name for name in table.column_names if name not in ("id", "label")]
    if len(names) != features:
        raise ValueError(f"{path} has {len(names)} feature columns, the model takes {features}")
    inputs = torch.from_numpy(np.column_stack([table.column(n).to_numpy().astype(np.float32) for n in names]))
    labels = torch.from_numpy(table.column("label").to_numpy().copy())
    return table.column("id").to_numpy(), scale(kind, inputs), labels


def loss_function(kind: str) -> Any:
    from torch import nn

    return nn.CrossEntropyLoss() if kind == "digits" else nn.BCEWithLogitsLoss()


def train_worker(config: TrainConfig) -> dict[str, Any]:
    """One rank of the training (``torch.distributed`` initialised from torchrun's environment).
    Returns, on every rank, rank 0's per-step losses of this run, the last epoch reached, the world
    size and (with ``test``) rank 0's metric line on the held-out split."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    import ppml.torch.checkpoint as checkpoint
    from ppml.tee.keys import kms_for
    from ppml.torch.data import TableDataset

    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        kms = kms_for(config.kms)
        # Map-style over the encrypted split: a rank decrypts only the segments holding its sampler's
        # rows (a few kept per process), and DistributedSampler gives every rank as many rows.
        dataset = TableDataset(config.train, kms=config.kms, features=feature_columns(config.kind, config.features),
                               label="label")
        sampler: DistributedSampler[Any] = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                                              seed=config.seed)
        loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler)
        torch.manual_seed(config.seed)
        model = build_model(config.kind, config.features)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        first_epoch = 0
        if config.resume_from:
            state = checkpoint.load(config.resume_from, kms=kms)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            first_epoch = int(state["epoch"])
        ddp = DistributedDataParallel(model)
        criterion = loss_function(config.kind)
        losses: list[float] = []
        for epoch in range(first_epoch, config.epochs):
            sampler.set_epoch(epoch)
            ddp.train()
            for batch, label in loader:
                target = label.long() if config.kind == "digits" else label.float().unsqueeze(1)
                optimizer.zero_grad()
                loss = criterion(ddp(scale(config.kind, batch)), target)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            if rank == 0:
                checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                                 "kind": config.kind, "features": config.features},
                                config.checkpoint, kms=kms, key_id=config.model_key, overwrite=True)
            dist.barrier()
        metric = ""
        if rank == 0 and config.test and config.predictions and config.output_key:
            ids, test_inputs, test_labels = load_split(config.test, kms, config.kind, config.features)
            metric = write_predictions(ids, test_labels, predict(model, config.kind, test_inputs), config.kind,
                                       path=config.predictions, kms=kms, key_id=config.output_key)
        # TorchDistributor returns one rank's result, not necessarily rank 0's: every rank returns
        # rank 0's losses and metric (tensors over gloo; nothing pickled).
        shared = torch.tensor(losses, dtype=torch.float64)
        dist.broadcast(shared, src=0)
        text = torch.zeros(64, dtype=torch.uint8)
        text[: len(metric)] = torch.tensor(list(metric.encode()), dtype=torch.uint8)
        dist.broadcast(text, src=0)
        return {"losses": shared.tolist(), "epoch": config.epochs, "world": world,
                "metric": bytes(text.tolist()).rstrip(b"\0").decode()}
    finally:
        dist.destroy_process_group()


def predict(model: Any, kind: str, inputs: Any) -> Any:
    """The score per row: the predicted class (digits) or P(label = 1) (tabular), as float64.
    One thread, so every process computes bit-identical results from the same weights."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.eval()
        with torch.inference_mode():
            output = model(inputs)
        if kind == "digits":
            return output.argmax(dim=1).double().numpy()
        return torch.sigmoid(output.squeeze(1)).double().numpy()
    finally:
        torch.set_num_threads(threads)


def write_predictions(ids: Any, labels: Any, scores: Any, kind: str, *, path: str, kms: Any, key_id: str) -> str:
    """Write ``id,label,score`` encrypted to the directory ``path``; return the metric line
    (``accuracy: 0.xxxx`` for digits, ``AUC: 0.xxxx`` for tabular)."""
    import pyarrow as pa

    from ppml.examples.tabular_job import CLASSIFICATION, metric_line
    from ppml.tabular.tables import write_csv_table

    truth = labels.numpy().astype("float64")
    write_csv_table(pa.table({"id": ids, "label": truth, "score": scores}), path, kms=kms, key_id=key_id,
                    overwrite=True)
    if kind == "digits":
        return f"accuracy: {float((scores == truth).mean()):.4f}"
    return metric_line(CLASSIFICATION, truth, scores)
