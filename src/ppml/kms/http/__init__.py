"""The KMS's HTTP layer: request authentication and replay stamps (``auth``), group commit
(``batching``), middleware, the error table (``errors``), request models, the native routes, the
eHSM routes and action registry (``ehsm``), and the app that assembles them (``app``)."""

from __future__ import annotations

from ppml.kms.http.app import AppHooks, create_app
from ppml.kms.http.ehsm import EhsmAction
from ppml.kms.http.middleware import MAX_BODY

__all__ = ["MAX_BODY", "AppHooks", "EhsmAction", "create_app"]
