"""Paillier operations per second on one core, against the cost of one gmpy2.powmod (the ideal).

Usage::

    PYTHONPATH=src .venv/bin/python bench/he.py [--bits 2048] [--count 200]

Rows: encryption with an empty obfuscator pool (a full r^n mod n² each time) and from a filled
pool (the fill is timed separately: it is the same powmod, moved off the critical path),
CRT decryption, homomorphic addition, multiplication by an int and by a float, and one
powmod(r, n, n²) at the same size as the baseline: encryption without a pool cannot beat it,
and decryption through the CRT should take about half of it.
"""

from __future__ import annotations

import argparse
import random
import secrets
import time
from collections.abc import Callable

import gmpy2

from ppml.fl.he import ObfuscatorPool, PaillierBackend, generate_paillier_keypair


def rate(operation: Callable[[], object], ops: int) -> float:
    start = time.perf_counter()
    operation()
    return ops / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--count", type=int, default=200, help="vector length per timed operation")
    args = parser.parse_args()
    count = args.count

    start = time.perf_counter()
    public, private = generate_paillier_keypair(args.bits)
    keygen = time.perf_counter() - start
    values = [random.uniform(-1.0, 1.0) for _ in range(count)]

    r = [secrets.randbelow(int(public.n)) for _ in range(count)]
    powmod = rate(lambda: [gmpy2.powmod(x, public.n, public.nsquare) for x in r], count)

    cold = PaillierBackend(public, private)
    encrypt_cold = rate(lambda: cold.encrypt(values), count)

    pool = ObfuscatorPool(public)
    fill = rate(lambda: pool.fill(count), count)
    warm = PaillierBackend(public, private, pool=pool)
    encrypt_warm = rate(lambda: warm.encrypt(values), count)
    assert pool.misses == 0

    a, b = cold.encrypt(values), cold.encrypt(values)
    decrypt = rate(lambda: cold.decrypt(a), count)
    add = rate(lambda: cold.add(a, b), count)
    add_plain = rate(lambda: cold.add_plain(a, values), count)
    mul_int = rate(lambda: cold.multiply_plain(a, 3), count)
    mul_float = rate(lambda: cold.multiply_plain(a, values), count)
    check = cold.decrypt(cold.add(a, b))
    assert all(abs(x - 2 * v) < 1e-8 for x, v in zip(check, values, strict=True))

    print(f"Paillier, n of {args.bits} bits, one core, vectors of {count} (keygen {keygen:.2f} s)")
    print(f"{'operation':<34}{'ops/s':>12}{'vs powmod':>11}")
    rows = [
        ("powmod(r, n, n²)  [ideal]", powmod),
        ("encrypt, no pool", encrypt_cold),
        ("pool fill (r^n, off the path)", fill),
        ("encrypt, filled pool", encrypt_warm),
        ("decrypt (CRT)", decrypt),
        ("add ciphertexts", add),
        ("add plaintext", add_plain),
        ("multiply by int 3", mul_int),
        ("multiply by float (32-bit fixed)", mul_float),
    ]
    for name, ops in rows:
        print(f"{name:<34}{ops:>12,.0f}{ops / powmod:>10.1f}x")


if __name__ == "__main__":
    main()
