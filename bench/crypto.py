"""Throughput of ppml's file encryption against a plain AES-256-GCM loop over the same file.

Usage::

    .venv/bin/python bench/crypto.py [--size-mib N] [--dir D] [--repeat R] [--no-openssl]

Four timed paths over one plaintext file (created once under ``--dir`` and reused):

    ppml encrypt      ppml.core.envelope.encrypt_file   (1 MiB segments, the default)
    ppml decrypt      ppml.core.envelope.decrypt_file
    baseline encrypt  read 1 MiB chunks with readinto, AESGCM.encrypt with a counter nonce,
                      write nonce || ciphertext
    baseline decrypt  read (12 + 1 MiB + 16)-byte records back, AESGCM.decrypt, write plaintext

Each repeat runs both paths (encrypt then decrypt) into the same directory, alternating which
path goes first, deleting the outputs and calling sync() outside the timed region, so page-cache
and writeback state are alike for both. The best time of each path is reported, and the ratio
ppml/baseline (throughput) is compared with the 0.85 target. The exit status is 0 either way.

An untimed warm-up round comes first (``--warmup``, default 1): on a VM the first gigabytes
written into the page cache fault in fresh memory and take several times longer, which would
otherwise penalise whichever path runs first. The warm-up round also verifies both paths: the
decrypted outputs must hash (SHA-256) to the original and the ciphertexts must have the
expected size and not contain the plaintext, so the benchmark cannot be fooled by a path that
skips work. Outputs are deleted at exit; the input
file stays cached under ``--dir`` (``bench/.data/`` by default, git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ppml.core.envelope import decrypt_file, encrypt_file
from ppml.kms.local import LocalKeyStore

MIB = 1 << 20
CHUNK = MIB
NONCE = 12
TAG = 16
TARGET = 0.85
OUT_PREFIX = "bench-out-"


# -- input ------------------------------------------------------------------------------------


def ensure_input(directory: Path, size_mib: int) -> Path:
    """A file of ``size_mib`` MiB of random bytes, created once and then reused."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"plain-{size_mib}MiB.bin"
    if path.is_file() and path.stat().st_size == size_mib * MIB:
        print(f"input: reusing {path} ({size_mib} MiB)")
        return path
    print(f"input: creating {path} ({size_mib} MiB of os.urandom) ...", flush=True)
    tmp = path.with_name(path.name + ".partial")
    start = time.perf_counter()
    try:
        with open(tmp, "wb", buffering=0) as f:
            for _ in range(size_mib):
                f.write(os.urandom(MIB))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"input: created in {time.perf_counter() - start:.1f} s")
    return path


def sha256_file(path: Path) -> str:
    with open(path, "rb", buffering=0) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- baseline ---------------------------------------------------------------------------------


def baseline_encrypt(src: Path, dst: Path, key: bytes) -> None:
    """Per 1 MiB chunk: nonce (4 random bytes || 8-byte counter) || AESGCM.encrypt(chunk)."""
    aead = AESGCM(key)
    encrypt = aead.encrypt
    prefix = os.urandom(4)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    counter = 0
    with open(src, "rb", buffering=0) as f, open(dst, "wb", buffering=0) as out:
        readinto, fd = f.readinto, out.fileno()
        while True:
            n = readinto(buf)
            if not n:
                break
            nonce = prefix + counter.to_bytes(8, "big")
            sealed = encrypt(nonce, view[:n] if n < CHUNK else buf, None)
            _writev_all(fd, [nonce, sealed])
            counter += 1


def baseline_decrypt(src: Path, dst: Path, key: bytes) -> None:
    """Read (nonce || ciphertext || tag) records of at most 1 MiB + 28 bytes and decrypt each."""
    aead = AESGCM(key)
    decrypt = aead.decrypt
    record = CHUNK + NONCE + TAG
    buf = bytearray(record)
    view = memoryview(buf)
    with open(src, "rb", buffering=0) as f, open(dst, "wb", buffering=0) as out:
        readinto, write = f.readinto, out.write
        while True:
            n = _readinto_full(readinto, view)
            if not n:
                break
            if n < NONCE + TAG:
                raise ValueError("truncated baseline record")
            plain = decrypt(view[:NONCE], view[NONCE:n], None)
            _write_all(write, plain)


def _readinto_full(readinto: Callable[[memoryview], int | None], view: memoryview) -> int:
    """Fill ``view`` unless EOF comes first (a raw read may return short)."""
    filled = 0
    while filled < len(view):
        n = readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


def _write_all(write: Callable[[memoryview], int | None], data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = write(view)
        if not n:
            raise OSError("write made no progress")
        view = view[n:]


def _writev_all(fd: int, parts: list[bytes]) -> None:
    total = sum(len(p) for p in parts)
    n = os.writev(fd, parts)
    if n != total:  # short write: finish the rest plainly
        rest = memoryview(b"".join(parts))[n:]
        while rest:
            rest = rest[os.write(fd, rest) :]


# -- openssl reference ------------------------------------------------------------------------


def openssl_speed() -> float | None:
    """Bytes/s of ``openssl speed -evp aes-256-gcm`` on 1 MiB blocks (one core), or None."""
    exe = shutil.which("openssl")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "speed", "-evp", "aes-256-gcm", "-bytes", "1048576", "-seconds", "3"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    # The result line looks like: "AES-256-GCM    4700000.00k" (1000s of bytes per second).
    for line in proc.stdout.splitlines():
        match = re.match(r"^\s*aes-256-gcm\s+([\d.]+)k\s*$", line, re.IGNORECASE)
        if match:
            return float(match.group(1)) * 1000.0
    return None


# -- driver -----------------------------------------------------------------------------------


class Outputs:
    """Names of the benchmark's outputs in the data directory; removes them all on cleanup."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        tag = f"{OUT_PREFIX}{os.getpid()}-"
        self.ppml_enc = directory / f"{tag}ppml.enc"
        self.ppml_dec = directory / f"{tag}ppml.dec"
        self.base_enc = directory / f"{tag}base.enc"
        self.base_dec = directory / f"{tag}base.dec"
        self.tag = tag

    def remove(self) -> None:
        for p in self.directory.glob(f"{self.tag}*"):
            p.unlink(missing_ok=True)
        # AtomicOutput's temporaries (".<name>.XXXX.partial") if a run was interrupted.
        for p in self.directory.glob(f".{self.tag}*.partial"):
            p.unlink(missing_ok=True)


Timing = tuple[float, float, float]
"""(wall, user CPU, system CPU) seconds of one timed step."""


def timed(fn: Callable[[], object]) -> Timing:
    os.sync()  # start every timed step with no writeback pending from the previous one
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def in_memory_speed(seconds: float = 1.0) -> float:
    """Bytes/s of AESGCM.encrypt_into on one reused 1 MiB buffer: the codec alone, no I/O."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    plain, out = bytearray(os.urandom(CHUNK)), bytearray(CHUNK + TAG)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for i in range(64):
            aead.encrypt_into(i.to_bytes(NONCE, "big"), plain, None, out)
        best = max(best, 64 * CHUNK / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="input size in MiB (default 1024)")
    parser.add_argument("--dir", type=Path, default=here / ".data", help="data directory (default bench/.data)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the best is reported (default 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds first; the first one verifies (default 1)")
    parser.add_argument("--no-openssl", action="store_true", help="skip the `openssl speed` reference")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.repeat < 1 or args.warmup < 1:
        parser.error("--size-mib, --repeat and --warmup must be at least 1")

    # Turn SIGTERM into an exception so the finally blocks below remove the outputs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    directory = args.dir.resolve()
    src = ensure_input(directory, args.size_mib)
    size = src.stat().st_size
    outputs = Outputs(directory)

    with tempfile.TemporaryDirectory(prefix="ppml-bench-kms-") as kms_dir:
        kms = LocalKeyStore(Path(kms_dir) / "keys")
        key_id = kms.create_primary_key(description="bench").key_id
        base_key = AESGCM.generate_key(bit_length=256)

        def ppml_pair() -> tuple[Timing, Timing]:
            enc = timed(lambda: encrypt_file(src, outputs.ppml_enc, kms=kms, key_id=key_id))
            dec = timed(lambda: decrypt_file(outputs.ppml_enc, outputs.ppml_dec, kms=kms))
            return enc, dec

        def base_pair() -> tuple[Timing, Timing]:
            enc = timed(lambda: baseline_encrypt(src, outputs.base_enc, base_key))
            dec = timed(lambda: baseline_decrypt(outputs.base_enc, outputs.base_dec, base_key))
            return enc, dec

        times: dict[str, list[Timing]] = {k: [] for k in ("ppml_enc", "ppml_dec", "base_enc", "base_dec")}
        try:
            outputs.remove()
            print("verify: hashing the input ...", flush=True)
            want = sha256_file(src)
            # Warm the page cache with the input so the first timed read is not a cold one.
            with open(src, "rb", buffering=0) as f:
                while f.read(8 * MIB):
                    pass
            # Round 0 is an untimed warm-up that also verifies both paths: the first writes of a
            # run touch fresh memory for the page cache (very slow on a VM), which would
            # otherwise land on whichever path happens to go first.
            for r in range(-args.warmup, args.repeat):
                order = ("ppml", "base") if r % 2 == 0 else ("base", "ppml")
                for path in order:
                    if path == "ppml":
                        enc, dec = ppml_pair()
                        enc_out, dec_out = outputs.ppml_enc, outputs.ppml_dec
                        expected_ct = None
                    else:
                        enc, dec = base_pair()
                        enc_out, dec_out = outputs.base_enc, outputs.base_dec
                        expected_ct = size + (NONCE + TAG) * -(-size // CHUNK)
                    if r == -args.warmup:
                        verify(path, src, enc_out, dec_out, want, expected_ct)
                    if r >= 0:
                        times[f"{path}_enc"].append(enc)
                        times[f"{path}_dec"].append(dec)
                    enc_out.unlink()
                    dec_out.unlink()
                if r < 0:
                    print(f"warm-up {r + args.warmup + 1}/{args.warmup}: done (untimed)", flush=True)
                    continue
                print(
                    f"repeat {r + 1}/{args.repeat} ({' then '.join(order)}): "
                    + "  ".join(f"{k} {v[-1][0]:.3f}s" for k, v in times.items()),
                    flush=True,
                )
        finally:
            outputs.remove()

    memory = in_memory_speed()
    ossl = None if args.no_openssl else openssl_speed()
    report(size, times, memory, ossl)
    return 0


def verify(path: str, src: Path, enc_out: Path, dec_out: Path, want: str, expected_ct: int | None) -> None:
    ct_size = enc_out.stat().st_size
    with open(src, "rb") as a, open(enc_out, "rb") as b:
        probe, head_ct = a.read(64), b.read(2 * MIB)
    if ct_size < src.stat().st_size or probe in head_ct:
        raise SystemExit(f"verify: {path} ciphertext is too short or contains the plaintext")
    if expected_ct is not None and ct_size != expected_ct:
        raise SystemExit(f"verify: {path} ciphertext has {ct_size} bytes, expected {expected_ct}")
    got = sha256_file(dec_out)
    if got != want:
        raise SystemExit(f"verify: {path} decrypted output differs from the input ({got} != {want})")
    print(f"verify: {path} ok (sha256 {got[:16]}…, ciphertext {ct_size} bytes)")


def report(size: int, times: dict[str, list[Timing]], memory: float, ossl: float | None) -> None:
    from cryptography.hazmat.backends.openssl import backend

    mib = size / MIB
    best_run = {k: min(v) for k, v in times.items()}  # by wall time
    best = {k: t[0] for k, t in best_run.items()}
    gbs = {k: size / t / 1e9 for k, t in best.items()}
    labels = {
        "ppml_enc": "ppml encrypt_file",
        "base_enc": "baseline AESGCM encrypt",
        "ppml_dec": "ppml decrypt_file",
        "base_dec": "baseline AESGCM decrypt",
    }
    print()
    print(f"{'path':<26}{'MiB':>6}{'seconds':>9}{'GB/s':>7}{'user s':>8}{'sys s':>7}   all runs (wall s)")
    print("-" * 86)
    for k in ("ppml_enc", "base_enc", "ppml_dec", "base_dec"):
        runs = " ".join(f"{t[0]:.3f}" for t in times[k])
        _, user, sys_ = best_run[k]
        print(
            f"{labels[k]:<26}{mib:>6.0f}{best[k]:>9.3f}{gbs[k]:>7.3f}{user:>8.3f}{sys_:>7.3f}   {runs}"
        )
    print("(seconds = best wall time; user/sys = CPU time of that same run)")
    print()
    print("references, no file I/O:")
    print(f"  {'AESGCM.encrypt_into, 1 MiB, in memory':<42}{memory / 1e9:>7.3f} GB/s   "
          f"({backend.openssl_version_text()}, as bundled with cryptography)")
    if ossl is not None:
        print(f"  {'openssl speed -evp aes-256-gcm, 1 MiB':<42}{ossl / 1e9:>7.3f} GB/s   (system openssl CLI)")
    print()
    print(f"target: ratio >= {TARGET}")
    for direction, p, b in (("encrypt", "ppml_enc", "base_enc"), ("decrypt", "ppml_dec", "base_dec")):
        ratio = best[b] / best[p]  # throughput ratio ppml / baseline
        verdict = "PASS" if ratio >= TARGET else "BELOW"
        print(f"  {direction}: ppml/baseline = {ratio:.3f}  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
