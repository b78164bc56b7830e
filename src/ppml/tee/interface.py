"""The TEE backend interface: 64 bytes of report data in, evidence that binds them out."""

from __future__ import annotations

from typing import Protocol

from ppml.core.evidence import REPORT_DATA_SIZE, Evidence

__all__ = ["TeeBackend"]


class TeeBackend(Protocol):
    """Produces evidence binding ``report_data`` (:data:`~ppml.core.evidence.REPORT_DATA_SIZE`
    bytes) on whatever TEE it stands for; ``name`` is the one it is registered under."""

    name: str

    def get_evidence(self, report_data: bytes) -> Evidence: ...


def _check_report_data(report_data: bytes) -> None:
    if len(report_data) != REPORT_DATA_SIZE:
        raise ValueError(f"report data has {REPORT_DATA_SIZE} bytes, got {len(report_data)}")
