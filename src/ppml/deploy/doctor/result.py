"""What every check returns: a status, what was seen, and what to do."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
from collections.abc import Iterable

__all__ = ["CheckResult", "FileIdentity", "Status", "as_json", "summary"]


class Status(enum.StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    """One check's outcome: ``detail`` says what was seen, ``fix`` what to do (empty on PASS)."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def passed(self) -> bool:
        """PASS, or skipped on the operator's say-so."""
        return self.status in (Status.PASS, Status.SKIP)

    def line(self) -> str:
        text = f"{self.status.value} {self.name:<13} {self.detail}"
        return f"{text} — fix: {self.fix}" if self.fix else text


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FileIdentity:
    """Who a file is judged for: this process's user and groups, by default."""

    uid: int
    gids: frozenset[int]

    @classmethod
    def current(cls) -> FileIdentity:
        return cls(uid=os.geteuid(), gids=frozenset({os.getegid(), *os.getgroups()}))


def summary(results: Iterable[CheckResult]) -> str:
    """The last line: all passed, or which checks did not."""
    results = list(results)
    failed = [r.name for r in results if not r.passed]
    if not failed:
        return f"all {len(results)} checks passed"
    return f"{len(failed)} of {len(results)} checks did not pass: {', '.join(failed)}"


def as_json(results: Iterable[CheckResult]) -> str:
    return json.dumps([{"check": r.name, "status": r.status.value, "detail": r.detail, "fix": r.fix}
                       for r in results])
