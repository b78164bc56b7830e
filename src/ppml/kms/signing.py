"""Re-export: request signing lives in :mod:`ppml.core.signing` (shared with the attestation API)."""

from ppml.core.signing import *  # noqa: F403
from ppml.core.signing import (  # noqa: F401
    HEADER_APP,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    REPLAY_WINDOW_MS,
)
