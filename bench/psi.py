"""Throughput of ppml's DH-PSI (ppml.fl.psi, X25519 on hashed ids) against the cost of X25519.

Usage::

    PYTHONPATH=src .venv/bin/python bench/psi.py [--ids N] [--workers W]

Reports ids/s for hash-to-group + blind of N ids, and for the full two-party protocol with N ids
per side (both parties in one process, half overlapping), sequentially and with W workers. The
ideal is one X25519 (OpenSSL, through ``cryptography``) per id per step, measured on its own: the
protocol costs per id one hash to the curve (BLAKE2b and a Legendre symbol, about two tries), one
X25519 to blind and one X25519 on the peer's value (after a canonical check), so a full run is
about 2 X25519 per id per party.
"""

from __future__ import annotations

import argparse
import os
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ppml.fl import psi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    n = args.ids

    point = psi.hash_to_group(b"x")
    scalar = psi._random_scalar(os.urandom)
    reps = 20_000
    exchange, public = X25519PrivateKey.from_private_bytes(scalar).exchange, X25519PublicKey.from_public_bytes
    start = time.perf_counter()
    for _ in range(reps):
        exchange(public(point))
    mult = (time.perf_counter() - start) / reps
    print(f"one X25519 (OpenSSL): {mult * 1e6:.1f} us  ({1 / mult:,.0f}/s)  = ideal ids/s per step")

    a = [f"user-{i:08d}".encode() for i in range(n)]
    b = [f"user-{i:08d}".encode() for i in range(n // 2, n + n // 2)]
    for workers in (1, args.workers):
        start = time.perf_counter()
        sample = a[: max(1, n // 5)]  # a fifth keeps the whole run under 2 minutes at 100k
        psi._hash_blind(sample, scalar, workers)
        hb = (time.perf_counter() - start) * n / len(sample)
        start = time.perf_counter()
        alice, bob = psi.PsiSession(a, workers=workers), psi.PsiSession(b, workers=workers)
        ha, hbello = alice.hello(), bob.hello()
        ra, rb = alice.reply(hbello), bob.reply(ha)
        result = alice.finish(rb)
        bob.finish(ra)
        full = time.perf_counter() - start
        assert result.cardinality == n - n // 2
        print(
            f"workers={workers}: hash+blind {n / hb:,.0f} ids/s ({hb / n / mult:.2f} mults/id); "
            f"full two-party protocol, {n:,} ids per side, both parties: {full:.1f} s "
            f"= {2 * n / full:,.0f} ids/s ({full / (2 * n) / mult:.2f} mults/id)"
        )


if __name__ == "__main__":
    main()
