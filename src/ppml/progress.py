"""Progress of a long command-line step on stderr: nothing while it is short, then a bar or lines.

A step that ends within ``delay`` (2 s) shows nothing. After that, a terminal gets a tqdm bar
(tqdm's own ``delay``), and anything else (a log, a pipe) a line every ``interval`` seconds and one
when the step ends, so a long run in CI or under ``nohup`` still says how far it got.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Progress"]


def _amount(value: int, unit: str) -> str:
    if unit != "B" or value < 1024:
        return f"{value:,} {unit}"
    size = value / 1024
    for prefix in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {prefix}"
        size /= 1024
    return f"{size:.1f} TiB"


class Progress:
    """``update(n)`` adds ``n`` done; ``report(done, total)`` sets both (for work whose size is
    known only once it starts). Use as a context manager."""

    def __init__(self, description: str, *, total: int | None = None, unit: str = "files",
                 stream: TextIO | None = None, tty: bool | None = None, delay: float = 2.0,
                 interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.delay = delay
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.last_line: float | None = None
        self.bar: Any = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(finished=kind is None)

    def update(self, n: int) -> None:
        self.done += n
        self._show()

    def report(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self._show()

    def _show(self) -> None:
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, desc=self.description, unit=self.unit,
                                unit_scale=self.unit == "B", unit_divisor=1024, delay=self.delay,
                                file=self.stream, leave=False)
            if self.total is not None and self.bar.total != self.total:
                self.bar.total = self.total
            self.bar.update(self.done - self.bar.n)
            return
        now = self.clock()
        if now - self.started < self.delay:
            return
        if self.last_line is not None and now - self.last_line < self.interval:
            return
        self.last_line = now
        amount = _amount(self.done, self.unit)
        if self.total:
            amount += f" of {_amount(self.total, self.unit)} ({100 * self.done // self.total} %)"
        self.stream.write(f"{self.description}: {amount}\n")
        self.stream.flush()

    def close(self, *, finished: bool = True) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.last_line is not None and finished:
            elapsed = self.clock() - self.started
            self.stream.write(f"{self.description}: {_amount(self.done, self.unit)} in {elapsed:.1f} s\n")
            self.stream.flush()
