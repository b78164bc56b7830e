"""Argument types shared by the ``ppml`` subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["add_attestation_options", "integer"]


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


def add_attestation_options(group: argparse._ActionsContainer) -> None:
    """The options of every command that attests (``--tee`` aside, whose choices differ): the
    policies, the attestation service, and the simulated TEE's enclave files."""
    group.add_argument("--policy", action="append", metavar="ID", help="attestation policy id (repeat for several)")
    group.add_argument("--attestation-url", metavar="URL", help="https://HOST:PORT (or $PPML_AS_URL)")
    group.add_argument("--attestation-ca", metavar="FILE", help="CA of the attestation service (or $PPML_AS_CA)")
    group.add_argument("--enclave-manifest", metavar="FILE", help="--tee simulated: the enclave manifest")
    group.add_argument("--enclave-sig", metavar="FILE", help="--tee simulated: its SIGSTRUCT")
    group.add_argument("--platform-key", metavar="FILE", help="--tee simulated: the platform key")
