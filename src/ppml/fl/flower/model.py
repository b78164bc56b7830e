"""The models horizontal FL trains (PyTorch; no Flower import): an MLP and logistic regression."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["MODELS", "accuracy", "build", "get_weights", "set_weights", "train"]

MODELS = ("mlp", "logreg")


def build(kind: str, *, features: int, classes: int, hidden: int = 32, seed: int = 0) -> torch.nn.Module:
    """A fresh model (the same weights for the same seed, on every party)."""
    torch.manual_seed(seed)
    if kind == "logreg":
        return torch.nn.Linear(features, classes)
    if kind == "mlp":
        return torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, classes))
    raise ValueError(f"unknown model {kind!r}: one of {MODELS}")


def get_weights(model: torch.nn.Module) -> list[np.ndarray]:
    return [value.detach().cpu().numpy().copy() for value in model.state_dict().values()]


def set_weights(model: torch.nn.Module, weights: list[np.ndarray]) -> None:
    state = model.state_dict()
    if len(weights) != len(state) or any(tuple(w.shape) != tuple(v.shape) for w, v in zip(weights, state.values())):
        raise ValueError("the weights do not fit the model's shapes")
    model.load_state_dict({name: torch.from_numpy(np.asarray(w, dtype=np.float32))
                           for name, w in zip(state, weights)})


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
          learning_rate: float, seed: int) -> float:
    """Local SGD epochs (cross-entropy); returns the last epoch's mean loss."""
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    total = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
    return total / max(1, len(inputs))


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x.astype(np.float32))).argmax(dim=1).numpy()
    return float((predicted == y).mean())
