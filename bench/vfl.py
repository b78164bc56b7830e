"""Vertical FL benchmark: one epoch of federated logistic regression (ppml.fl.vfl) against the same
training centralized, on the same rows.

Usage::

    PYTHONPATH=src .venv/bin/python bench/vfl.py [--rows 2000] [--features 20] [--batch-size 256]
        [--backends paillier,ckks] [--key-bits 2048]

Synthetic rows with a known linear signal, split by columns (the guest 40 % of the features and
the labels, one host the rest). The federated run is the real protocol (arbiter, guest and host
roles, masked gradients, the HE backend named) with the three roles as threads over
``ppml.fl.channel.LocalHub`` in this process: gmpy2 and TenSEAL hold the GIL for much of their
work, so this is close to the CPU time of all parties together, a pessimistic wall time for a
deployment where each party has its own machine. Baselines, same rows and minibatches: the same
Taylor-approximated minibatch gradient descent in NumPy (what the federation computes, in the
clear), and scikit-learn's LogisticRegression fitted to convergence. Reported: seconds per
epoch, the ratio against each baseline, the AUC of each model on held-out rows, the bytes the
roles exchanged per epoch, and the load average (other work on the machine changes the numbers).
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Any

import numpy as np

from ppml.datagen import ranking_auc
from ppml.fl.channel import LocalHub, run_parties
from ppml.fl.vfl import VflConfig, arbiter_train, batch_order, guest_predict, guest_train, host_predict, host_train


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def data(rows: int, features: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    weights = rng.normal(size=features)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(x @ weights) / np.sqrt(features) * 2))).astype(np.float64)
    cut = rows * 4 // 5
    return x[:cut], y[:cut], x[cut:], y[cut:]


def backends(name: str, key_bits: int) -> tuple[Any, Any, float]:
    """(key holder's backend, public-key factory, mask scale)."""
    if name == "paillier":
        from ppml.fl.he.paillier import PaillierBackend, generate_paillier_keypair

        return PaillierBackend(*generate_paillier_keypair(key_bits)), PaillierBackend.from_public_key_bytes, 2.0 ** 20
    from ppml.fl.he.ckks import CkksBackend

    return CkksBackend(), CkksBackend.from_public_key_bytes, 2.0 ** 8


def central_epoch(config: VflConfig, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The federation's computation in the clear: Taylor-approximated minibatch descent, one epoch."""
    assert config.seed is not None
    weights, intercept = np.zeros(x.shape[1]), 0.0
    started = time.perf_counter()
    for batch in batch_order(config.seed, len(y), config.batch_size, 0):
        z = x[batch] @ weights + intercept
        d = 0.25 * z + 0.5 - y[batch]
        weights -= config.learning_rate * (x[batch].T @ d / len(batch) + config.l2 * weights)
        intercept -= config.learning_rate * float(d.mean())
    return time.perf_counter() - started, np.append(weights, intercept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows (a fifth held out)")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--backends", default="paillier,ckks")
    parser.add_argument("--key-bits", type=int, default=2048, help="Paillier modulus bits")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = data(args.rows, args.features)
    guest_columns = args.features * 2 // 5
    print(f"== vertical LR: {len(y_train):,} training rows x {args.features} features (guest {guest_columns} + "
          f"labels, host {args.features - guest_columns}), batch {args.batch_size}, one epoch; {load()}")

    base_config = VflConfig(epochs=1, batch_size=args.batch_size, learning_rate=0.3, l2=0.001, seed=42,
                            arbiter="arbiter", guest="guest", hosts=("host",))
    central_seconds, central_weights = central_epoch(base_config, x_train, y_train)
    central_auc = ranking_auc(y_test, x_test @ central_weights[:-1] + central_weights[-1])
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    sklearn = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    sklearn_seconds = time.perf_counter() - started
    sklearn_auc = ranking_auc(y_test, sklearn.decision_function(x_test))
    print(f"centralized Taylor epoch (NumPy, in the clear): {central_seconds * 1e3:9.2f} ms   AUC {central_auc:.4f}")
    print(f"scikit-learn LogisticRegression fit (converged): {sklearn_seconds * 1e3:9.2f} ms   AUC {sklearn_auc:.4f}")

    for name in args.backends.split(","):
        secret, public, mask_scale = backends(name, args.key_bits)
        config = VflConfig(epochs=1, batch_size=args.batch_size, learning_rate=0.3, l2=0.001, seed=42,
                           arbiter="arbiter", guest="guest", hosts=("host",), mask_scale=mask_scale)
        hub = LocalHub(["arbiter", "guest", "host"])
        started = time.perf_counter()
        results = run_parties(hub, {
            "arbiter": functools.partial(arbiter_train, config=config, backend=secret),
            "guest": functools.partial(guest_train, config=config, features=x_train[:, :guest_columns],
                                       labels=y_train, public_backend=public),
            "host": functools.partial(host_train, config=config, features=x_train[:, guest_columns:],
                                      public_backend=public)})
        seconds = time.perf_counter() - started
        epoch = results["guest"].history.epoch_seconds[0]
        wire = sum(len(message.payload) for message in hub.messages)
        predict_hub = LocalHub(["guest", "host"])
        scores = run_parties(predict_hub, {
            "guest": functools.partial(guest_predict, config=config, model=results["guest"].model,
                                       features=x_test[:, :guest_columns]),
            "host": functools.partial(host_predict, config=config, model=results["host"].model,
                                      features=x_test[:, guest_columns:])})["guest"]
        auc = ranking_auc(y_test, scores)
        label = f"{name}{'-' + str(args.key_bits) if name == 'paillier' else ''}"
        print(f"federated epoch, {label:<14} (3 roles, 1 process): {epoch:9.2f} s    AUC {auc:.4f}   "
              f"(setup + epoch {seconds:.2f} s; {wire / 1e6:.1f} MB exchanged)")
        print(f"   ratio to the centralized Taylor epoch: {epoch / central_seconds:,.0f}x; "
              f"to scikit-learn's whole fit: {epoch / sklearn_seconds:,.0f}x")
    print(f"   {load()}")


if __name__ == "__main__":
    main()
