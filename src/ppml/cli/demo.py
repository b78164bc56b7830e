"""``ppml demo``: the workflow on embedded defaults, each step printed with its time.

Today: generate people.csv, create a primary key in a local key store, encrypt, decrypt, and
check the result. Re-running reuses the work directory without manual clean-up.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ppml.core.envelope import EnvelopeReader, decrypt_file, encrypt_file
from ppml.datagen import generate_people
from ppml.kms.local import LocalKeyStore

T = TypeVar("T")


class _Steps:
    def __init__(self) -> None:
        self.number = 0
        self.started = time.perf_counter()

    def run(self, title: str, action: Callable[[], T], result: Callable[[T], str] | None = None) -> T:
        self.number += 1
        print(f"[{self.number}] {title} ...", flush=True)
        t0 = time.perf_counter()
        value = action()
        detail = f": {result(value)}" if result else ""
        print(f"    done in {time.perf_counter() - t0:.2f} s{detail}", flush=True)
        return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _count_developers(path: Path) -> int:
    count = 0
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            _, age, job = line.rstrip("\n").split(",")
            if job == "Developer" and 20 <= int(age) <= 40:
                count += 1
    return count


def run_demo(*, workdir: Path, rows: int, seed: int | None = None) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    plain, encrypted, decrypted = (workdir / n for n in ("people.csv", "people.csv.ppml", "people.decrypted.csv"))
    store = LocalKeyStore(workdir / "keys")
    steps = _Steps()
    print(f"ppml demo in {workdir} (local key store; no TEE is involved in this part yet)")

    summary = steps.run(
        f"generate {rows:,} people",
        lambda: generate_people(plain, rows, seed=seed),
        lambda s: f"{plain} ({plain.stat().st_size:,} bytes); "
        f"Num of Developer age between 20,40 is {s.developers_20_40}",
    )
    existing = [k for k in store.list_keys() if k.description == "demo" and k.enabled]
    key = steps.run(
        "reuse the demo primary key" if existing else "create a primary key",
        lambda: existing[0] if existing else store.create_primary_key(description="demo"),
        lambda k: f"{k.key_id} in {store.uri}",
    )
    steps.run(
        "encrypt people.csv (ppml envelope: AES-256-GCM streaming, fresh data key)",
        lambda: encrypt_file(plain, encrypted, kms=store, key_id=key.key_id, overwrite=True),
        lambda h: f"{encrypted} ({encrypted.stat().st_size:,} bytes), data key wrapped by {h.key_id}",
    )

    def check_random_access() -> str:
        with EnvelopeReader(encrypted, kms=store) as reader:
            middle = reader.plaintext_size // 2
            sample = reader.read_range(middle, 64)
            segments = reader.segment_count
        with open(plain, "rb") as f:
            f.seek(middle)
            if f.read(64) != sample:
                raise SystemExit("random-access read differs from the plaintext")
        return f"{len(sample)} bytes at offset {middle:,} match (the file has {segments} segments)"

    steps.run("random-access read from the middle of the encrypted file", check_random_access, str)
    steps.run("decrypt", lambda: decrypt_file(encrypted, decrypted, kms=store, overwrite=True),
              lambda _: str(decrypted))
    same = steps.run("compare", lambda: _sha256(plain) == _sha256(decrypted),
                     lambda ok: "identical" if ok else "DIFFERENT")
    count = steps.run("count developers aged 20-40 in the decrypted file",
                      lambda: _count_developers(decrypted), str)
    total = time.perf_counter() - steps.started
    if not same or count != summary.developers_20_40:
        print(f"FAILED: expected {summary.developers_20_40}, got {count}; identical={same}")
        return 1
    print(f"OK: Num of Developer age between 20,40 is {count} (matches the generator) in {total:.1f} s")
    return 0
