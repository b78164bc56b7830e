"""How a workload's code (a Spark driver and its Python workers, a PyTorch process, a single-node
trainer) reaches the KMS from inside its TEE.

A data source option names the KMS by URI (``local:DIR``, ``ppml+https://HOST:PORT?ca=…&
credentials=…``, ``ehsm+https://…``); URIs carry paths, never secrets. Where the attested runtime's
key agent is in reach (``PPML_KEY_AGENT``: the driver side of ``ppml submit`` and ``ppml tee run``
and every process they start), keys come from it, through the session that attested. Elsewhere in
a TEE mode (executors on a cluster), each Python worker process attests on its own the first time
it needs a key (``PPML_TEE_BACKEND``,
``PPML_AS_URL``, ``PPML_TEE_POLICY`` and the enclave files come from the executor's environment),
so data keys reach it as JWE to its own TEE key and never cross Spark's RPC in the clear.
One KMS client per URI per process (a forked child opens its own).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ppml.core.keys import DataKeyProvider
from ppml.tee.launcher import TEE_ENV, attestation_from_environment

__all__ = ["TEE_ENV", "kms_for", "tee_session"]

_lock = threading.Lock()
_clients: dict[str, DataKeyProvider] = {}
_session: Any = None


def _forget_clients_in_child() -> None:
    """After ``fork`` (DataLoader workers, multiprocessing): the parent's clients hold its
    connections (a key agent socket, TLS pools), which two processes must not share, and the lock
    may have been held by a thread that does not exist in the child. The child opens its own."""
    global _lock
    _lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_forget_clients_in_child)


def tee_session() -> Any:
    """This process's attested session: inherited from ``ppml tee run``, or made now when the
    environment says this process runs in a TEE mode; None outside TEE modes."""
    global _session
    from ppml.tee.session import current_session

    inherited = current_session()
    if inherited is not None:
        return inherited
    with _lock:
        if _session is None:
            from ppml.tee.runtime import attest

            attestation = attestation_from_environment(os.environ)
            if attestation is None:
                return None
            _session = attest(*attestation)
        return _session


def kms_for(uri: str) -> DataKeyProvider:
    """The KMS client for ``uri`` in this process (attested when in a TEE mode)."""
    with _lock:
        cached = _clients.get(uri)
    if cached is not None:
        return cached
    from ppml.kms.registry import open_kms
    from ppml.tee.agent import AGENT_ENV, AgentKms

    if os.environ.get(AGENT_ENV) and not uri.startswith("local:"):
        # A process of an attested TEE: keys come from the runtime's key agent, through its session.
        client: DataKeyProvider = AgentKms(uri)
    else:
        # Every remote scheme goes through the attested path: the session's token rides on data-key
        # requests and keys arrive as JWE to this TEE's key. A local store has no such gate.
        client = open_kms(uri, attestation=None if uri.startswith("local:") else tee_session())
    with _lock:
        _clients.setdefault(uri, client)
        return _clients[uri]
