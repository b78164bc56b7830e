"""Vertical federated learning: parties hold different columns of the same (PSI-aligned) rows.

:mod:`ppml.fl.vfl.linear` trains logistic and linear regression under homomorphic encryption with an
arbiter holding the key (FATE's Hetero-LR).
"""

from __future__ import annotations

from ppml.fl.vfl.linear import (
    PROTOCOL,
    GuestModel,
    HostModel,
    PublicBackendFactory,
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
