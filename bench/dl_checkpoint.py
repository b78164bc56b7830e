"""Encrypted checkpoints against plaintext ones: ``ppml.torch.checkpoint.save`` + ``load`` of a model's
state against ``torch.save`` + ``torch.load`` of the same state in the clear, same directory.

    .venv/bin/python bench/dl_checkpoint.py [--size-mib 50] [--repeat 5] [--dir DIR]

The state is a ``state_dict()`` of 6 square ``Linear`` layers sized to ``--size-mib`` of float32
(about 50 MB by default) plus an epoch number, as a training loop checkpoints it; keys come from a
``local:`` key store (one unwrap per load: the KMS round trip is bench/kms.py's subject). Each
round saves and loads both ways, alternating which goes first; best of N wall clock per step. An
untimed first round checks that both load back what was saved. ppml's save is durable (an fsync
of the file and of its directory before and after the rename); ``torch.save`` is not, so the
baseline is given that fsync too, to compare the same guarantee.

Where the time goes: safetensors serialises into a buffer of its own and copies it into bytes
(two fresh buffers the size of the state) and loading decrypts into one buffer, copies the tensor
part into bytes (safetensors' load takes only bytes) and copies each tensor out of it; fresh
memory costs page faults, which on these VMs cost more than AES-GCM at ~8 GB/s per core.
``torch.save`` writes from the tensors' own memory and ``torch.load`` reads into it, and in a loop
reuses the memory the previous round freed; so loading is also timed once per new process (the
resume after a restart), imports excluded.

``checkpoint_rows()`` returns the rows for ``bench/dl.py``.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def model_state(size_mib: float) -> dict[str, Any]:
    """A ``state_dict()`` of 6 square Linear layers holding about ``size_mib`` MiB of float32."""
    import torch

    width = int(math.sqrt(size_mib * (1 << 20) / 4 / 6))
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(6)))
    return {"model": model.state_dict(), "epoch": 3}


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _timed(step: Callable[[], Any], times: list[float]) -> Any:
    started = time.perf_counter()
    value = step()
    times.append(time.perf_counter() - started)
    return value


_FRESH_LOAD = """
import sys, time
import torch
from ppml.kms.local import LocalKeyStore
from ppml.torch.checkpoint import load

kind, path, keys = sys.argv[1:]
started = time.perf_counter()
torch.load(path) if kind == "torch" else load(path, kms=LocalKeyStore(keys))
print(time.perf_counter() - started)
"""


def _fresh_load(kind: str, path: Path, keys: Path) -> float:
    """Seconds of one load in a new process (imports excluded): resuming after a restart, with no
    freed memory to reuse."""
    result = subprocess.run([sys.executable, "-c", _FRESH_LOAD, kind, str(path), str(keys)], capture_output=True,
                            text=True, check=True)
    return float(result.stdout.split()[-1])


def checkpoint_rows(*, size_mib: float = 50, repeat: int = 5, directory: Path | None = None) -> list[dict[str, Any]]:
    """Rows ``{"name", "ppml_s", "plaintext_s", "ratio", "mib"}``, encrypted vs plaintext, of a
    ~``size_mib`` MiB state: save, load, and save + load in this process (best of ``repeat``), and
    load in a new process (best of ``repeat // 2``)."""
    import torch

    from ppml.kms.local import LocalKeyStore
    from ppml.torch.checkpoint import load, save

    state = model_state(size_mib)
    mib = sum(t.numel() * t.element_size() for t in state["model"].values()) / (1 << 20)
    with tempfile.TemporaryDirectory(prefix="ppml-bench-ckpt-", dir=directory) as tmp:
        work = Path(tmp)
        store = LocalKeyStore(work / "keys")
        key_id = store.create_primary_key(description="bench").key_id
        encrypted, plain = work / "model.ckpt", work / "model.pt"

        def ppml_save() -> None:
            save(state, encrypted, kms=store, key_id=key_id, overwrite=True)

        def torch_save() -> None:
            torch.save(state, plain)
            _fsync(plain)

        times: dict[str, list[float]] = {name: [] for name in ("ppml save", "ppml load", "torch save", "torch load")}
        for round_index in range(repeat + 1):
            order = [("ppml", ppml_save, lambda: load(encrypted, kms=store)),
                     ("torch", torch_save, lambda: torch.load(plain))]
            for name, save_step, load_step in order if round_index % 2 else order[::-1]:
                saved, loaded = times[f"{name} save"], times[f"{name} load"]
                _timed(save_step, saved)
                back = _timed(load_step, loaded)
                if round_index == 0:  # the untimed warm-up checks what comes back
                    del saved[:], loaded[:]
                    assert all(torch.equal(back["model"][k], v) for k, v in state["model"].items()), name
        fresh = {kind: min(_fresh_load(kind, path, store.directory) for _ in range(max(repeat // 2, 1)))
                 for kind, path in (("ppml", encrypted), ("torch", plain))}
    rows = []
    for step in ("save", "load"):
        ppml_s, plain_s = min(times[f"ppml {step}"]), min(times[f"torch {step}"])
        rows.append({"name": f"checkpoint {step}", "ppml_s": ppml_s, "plaintext_s": plain_s,
                     "ratio": ppml_s / plain_s, "mib": mib})
    total_ppml, total_plain = rows[0]["ppml_s"] + rows[1]["ppml_s"], rows[0]["plaintext_s"] + rows[1]["plaintext_s"]
    rows.append({"name": "checkpoint save+load", "ppml_s": total_ppml, "plaintext_s": total_plain,
                 "ratio": total_ppml / total_plain, "mib": mib})
    rows.append({"name": "checkpoint load, new process", "ppml_s": fresh["ppml"], "plaintext_s": fresh["torch"],
                 "ratio": fresh["ppml"] / fresh["torch"], "mib": mib})
    return rows


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(f"{'(' + format(rows[0]['mib'], '.0f') + ' MiB of float32)':<32}{'ppml (encrypted)':>18}"
          f"{'torch (plaintext)':>19}{'ratio':>8}")
    for row in rows:
        print(f"{row['name']:<32}{row['ppml_s'] * 1000:>15.0f} ms{row['plaintext_s'] * 1000:>16.0f} ms"
              f"{row['ratio']:>7.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=float, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="where the files go (default: the system's temporary directory)")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; best of {args.repeat}")
    print_rows(checkpoint_rows(size_mib=args.size_mib, repeat=args.repeat, directory=args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
