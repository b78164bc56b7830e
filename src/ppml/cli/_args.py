"""Argument types shared by the ``ppml`` subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["integer"]


def integer(minimum: int) -> Callable[[str], int]:
    """An argparse type: a decimal integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError("must be non-negative" if minimum == 0 else f"must be at least {minimum}")
        return value

    return parse
