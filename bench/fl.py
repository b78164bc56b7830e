"""Federated-learning benchmarks: ppml's DH-PSI (X25519) against openmined-psi on the same sets.

Usage::

    PYTHONPATH=src .venv/bin/python bench/fl.py [--ids 1000000] [--workers W]
        [--modes sequential,threads] [--baseline-venv bench/.venv-openmined] [--no-baseline]

PSI section. Sets of ``--ids`` string ids per side, half shared: A = ``id-0 .. id-(N-1)``,
B = ``id-(N/2) .. id-(3N/2-1)``. The baseline is openmined-psi 2.0.6 (ECC, ``reveal_intersection
=True``, the exact RAW data structure), which is never a ppml dependency (its exact protobuf pin
clashes with Flower's): the bench creates its own virtual environment for it on the first run
(``python -m venv`` + ``pip install openmined.psi==2.0.6``, reused afterwards) and runs
``bench/openmined_psi_baseline.py`` in a subprocess of that venv's Python. ppml runs
:class:`ppml.fl.psi.PsiSession` on the same sets, with both parties in this process
(``sequential``: one call after another) and as two threads over ``ppml.fl.channel.LocalHub``
(``threads``), each party with ``--workers`` processes.

Semantics differ, and the report says so: in openmined's protocol only the client learns the
intersection (the server learns the client's set size); in ppml's both parties learn it. Both
sides' intersections are checked against the expected N/2 ids.

Reported: seconds per phase and in total, ids/s (2N ids over the total), wire bytes per id (every
message's length summed, over 2N), the ratio ppml/openmined against the issue's target
(<= 0.4x, PASS/FAIL), the CPU-seconds of both (this process and its reaped children: a
load-independent view, not the target's measure) and where ppml's time goes: each primitive the
protocol calls per id (the hash to the curve: BLAKE2b and a Legendre symbol, about two tries;
OpenSSL's X25519 twice: blind, then the peer's value; the canonical check), timed on a sample,
times the number of calls, beside the measured phases. The load average is
printed first and last: other work on the machine changes the absolute numbers. The exit status
is 0 whether or not the target is met; a wrong intersection exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ppml.fl import psi
from ppml.fl.channel import Channel, LocalHub, run_parties

BENCH = Path(__file__).resolve().parent
OPENMINED_PSI = "openmined.psi==2.0.6"
PSI_TARGET = 0.4


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def psi_sets(n: int) -> tuple[list[str], list[str], list[str]]:
    """A, B and the expected intersection sorted by id bytes (as ``PsiResult`` lists it)."""
    a = [f"id-{i}" for i in range(n)]
    b = [f"id-{i}" for i in range(n // 2, n + n // 2)]
    common = sorted(f"id-{i}" for i in range(n // 2, n))
    return a, b, common


# ---- openmined-psi, in its own venv ---------------------------------------------------------


def baseline_python(venv: Path) -> Path:
    """The baseline venv's interpreter, creating the venv and installing openmined.psi if needed."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import private_set_intersection.python"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating the baseline venv {venv} ({OPENMINED_PSI}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", OPENMINED_PSI], check=True)
    subprocess.run(probe, check=True)
    return python


def cpu_seconds() -> float:
    """User + system CPU of this process and of its reaped children (worker pools, the baseline)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def run_openmined(python: Path, n: int) -> dict:
    script = BENCH / "openmined_psi_baseline.py"
    start = cpu_seconds()
    out = subprocess.run(
        [str(python), str(script), "--ids", str(n), "--data-structure", "raw"],
        check=True, capture_output=True, text=True,
    )
    return {**json.loads(out.stdout), "cpu_seconds": cpu_seconds() - start}


# ---- ppml -----------------------------------------------------------------------------------


def ppml_sequential(a: list[str], b: list[str], workers: int) -> tuple[dict[str, float], list[bytes], list, list]:
    """Both parties in this process, one call after another, each phase timed."""
    times: dict[str, float] = {}

    def timed(phase: str, call: Callable[[], object]) -> object:
        start = time.perf_counter()
        value = call()
        times[phase] = times.get(phase, 0.0) + time.perf_counter() - start
        return value

    alice = timed("hash+blind+sort (both sessions)", lambda: psi.PsiSession(a, workers=workers))
    bob = timed("hash+blind+sort (both sessions)", lambda: psi.PsiSession(b, workers=workers))
    assert isinstance(alice, psi.PsiSession) and isinstance(bob, psi.PsiSession)
    hello_a, hello_b = alice.hello(), bob.hello()
    reply_a = timed("reply: check+exponentiate (both)", lambda: alice.reply(hello_b))
    reply_b = timed("reply: check+exponentiate (both)", lambda: bob.reply(hello_a))
    assert isinstance(reply_a, bytes) and isinstance(reply_b, bytes)
    result_a = timed("finish: match (both)", lambda: alice.finish(reply_b))
    result_b = timed("finish: match (both)", lambda: bob.finish(reply_a))
    assert isinstance(result_a, psi.PsiResult) and isinstance(result_b, psi.PsiResult)
    messages = [hello_a, hello_b, reply_a, reply_b]
    return times, messages, result_a.intersection or [], result_b.intersection or []


def ppml_threads(a: list[str], b: list[str], workers: int) -> tuple[float, list[bytes], list, list]:
    """Two parties as threads over a LocalHub (each party's crypto in its own worker processes)."""
    hub = LocalHub(["alice", "bob"], max_message=1 << 30, timeout=3600.0)

    def role(ids: list[str], peer: str) -> Callable[[Channel], list]:
        def run(channel: Channel) -> list:
            session = psi.PsiSession(ids, workers=workers)
            channel.send(peer, "psi-hello", session.hello())
            channel.send(peer, "psi-reply", session.reply(channel.receive(peer, "psi-hello")))
            return session.finish(channel.receive(peer, "psi-reply")).intersection or []
        return run

    start = time.perf_counter()
    results = run_parties(hub, {"alice": role(a, "bob"), "bob": role(b, "alice")})
    total = time.perf_counter() - start
    return total, [m.payload for m in hub.messages], results["alice"], results["bob"]


def _noop(value: int) -> int:
    return value


def primitive_costs(workers: int, sample: int = 2000) -> dict[str, float]:
    """Seconds per call of each primitive ppml's PSI makes per id, and of one pool start."""
    items = [b"id-%d" % i for i in range(sample)]
    scalar = psi._random_scalar(os.urandom)
    costs: dict[str, float] = {}

    def per_call(name: str, call: Callable[[], object]) -> object:
        start = time.perf_counter()
        value = call()
        costs[name] = (time.perf_counter() - start) / sample
        return value

    digests = per_call("hash to curve (BLAKE2b+Legendre)", lambda: psi._hash_digests(items))
    assert isinstance(digests, list)
    exchange, public = X25519PrivateKey.from_private_bytes(scalar).exchange, X25519PublicKey.from_public_bytes
    blinded = per_call("X25519 (OpenSSL)", lambda: [exchange(public(u)) for u in digests])
    assert isinstance(blinded, list)
    per_call("canonical check (per u)", lambda: psi._require_canonical(b"".join(blinded)))
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_noop, range(workers)))
    costs["pool start+stop"] = time.perf_counter() - start
    return costs


def check(name: str, got: list, expected: list[str]) -> bool:
    ok = got == expected
    print(f"  {name}: intersection of {len(got):,} ids {'OK' if ok else 'WRONG (expected ' + str(len(expected)) + ')'}")
    return ok


def psi_section(args: argparse.Namespace) -> bool:
    """ppml PSI vs openmined-psi; returns False if an intersection was wrong."""
    n, workers = args.ids, args.workers
    a, b, expected = psi_sets(n)
    ids = len(a) + len(b)
    print(f"== PSI: {n:,} ids per side, {len(expected):,} shared; ppml workers={workers}; {load()}")
    ok = True

    base_total = None
    if args.no_baseline:
        print("openmined-psi: skipped (--no-baseline)")
    else:
        python = baseline_python(Path(args.baseline_venv).expanduser())
        base = run_openmined(python, n)
        base_total = base["total_seconds"]
        base_bytes = sum(base["bytes"].values())
        print(f"openmined-psi {base['version']} (ECC, reveal_intersection, RAW; one process, single-threaded):")
        for phase, seconds in base["seconds"].items():
            print(f"  {phase:<34}{seconds:>9.2f} s")
        print(f"  {'total':<34}{base_total:>9.2f} s = {ids / base_total:,.0f} ids/s; "
              f"wire {base_bytes:,} B = {base_bytes / ids:.1f} B/id ({base['bytes']})")
        good = base["intersection_ok"]
        print(f"  client: intersection of {base['intersection_size']:,} ids {'OK' if good else 'WRONG'} "
              "(the server learns only the client's set size)")
        ok &= good

    modes = args.modes.split(",")
    totals: dict[str, float] = {}
    cpus: dict[str, float] = {}
    if "sequential" in modes:
        start = cpu_seconds()
        times, messages, got_a, got_b = ppml_sequential(a, b, workers)
        cpus["sequential"] = cpu_seconds() - start
        total = totals["sequential"] = sum(times.values())
        wire = sum(map(len, messages))
        print(f"ppml PsiSession, both parties in this process, sequential calls (workers={workers} each):")
        for phase, seconds in times.items():
            print(f"  {phase:<34}{seconds:>9.2f} s")
        print(f"  {'total':<34}{total:>9.2f} s = {ids / total:,.0f} ids/s; wire {wire:,} B = {wire / ids:.1f} B/id")
        ok &= check("alice", got_a, expected) & check("bob", got_b, expected)
    if "threads" in modes:
        start = cpu_seconds()
        total, messages, got_a, got_b = ppml_threads(a, b, workers)
        cpus["threads"] = cpu_seconds() - start
        totals["threads"] = total
        wire = sum(map(len, messages))
        print(f"ppml over LocalHub, two party threads (workers={workers} each, {2 * workers} processes):")
        print(f"  {'total':<34}{total:>9.2f} s = {ids / total:,.0f} ids/s; wire {wire:,} B = {wire / ids:.1f} B/id")
        ok &= check("alice", got_a, expected) & check("bob", got_b, expected)

    if base_total is not None and totals:
        for mode, total in totals.items():
            ratio = total / base_total
            verdict = "PASS" if ratio <= PSI_TARGET else "FAIL"
            print(f"ratio ppml ({mode}) / openmined-psi: {ratio:.2f}x  (target <= {PSI_TARGET}x: {verdict})")
        # Other work on the machine takes more from ppml's W processes than from the one-process
        # baseline; CPU-seconds show what the run would take on W idle cores (not the target's measure).
        for mode, cpu in cpus.items():
            print(f"CPU-seconds ppml ({mode}) {cpu:.1f} s / openmined-psi {base['cpu_seconds']:.1f} s: "
                  f"{cpu / base['cpu_seconds']:.2f}x; ppml's CPU over {workers} cores / openmined's: "
                  f"{cpu / workers / base['cpu_seconds']:.2f}x (a bound for idle cores, not the measured ratio)")

    costs = primitive_costs(workers)
    per_id = {name: cost for name, cost in costs.items() if not name.startswith("pool")}
    print(f"where ppml's time goes (one core, sample of 2,000; x {ids:,} ids = CPU-seconds over both parties):")
    for name, cost in per_id.items():
        print(f"  {name:<34}{cost * 1e6:>7.1f} us/id  {cost * ids:>9.1f} s")
    crypto = sum(per_id.values()) + costs["X25519 (OpenSSL)"]  # blind, then the peer's value
    print(f"  {'(X25519 twice: blind + peer value)':<34}{'':>7}        {costs['X25519 (OpenSSL)'] * ids:>9.1f} s")
    print(f"  {'crypto per id per party':<34}{crypto * 1e6:>7.1f} us    {crypto * ids:>9.1f} s CPU, "
          f"{crypto * ids / workers:.1f} s on {workers} cores at best")
    print(f"  {'process pool start+stop':<34}{costs['pool start+stop'] * 1e3:>7.1f} ms  x 4 per run")
    if base_total is not None:
        print(f"  the crypto calls alone need {crypto * ids / workers / base_total:.2f}x openmined's time on "
              f"{workers} cores; the rest of ppml's time is Python (sort, dicts, slicing) and the pools")
    print(f"   {load()}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_000_000, help="ids per side")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="ppml worker processes per party")
    parser.add_argument("--modes", default="sequential,threads", help="ppml runs: sequential,threads")
    parser.add_argument("--baseline-venv", default=str(BENCH / ".venv-openmined"),
                        help="where the openmined-psi venv lives (created if missing)")
    parser.add_argument("--no-baseline", action="store_true", help="skip openmined-psi")
    args = parser.parse_args()
    ok = psi_section(args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
