"""Generate the frozen ppml.torch checkpoint v1 vector in ``tests/vectors/torch-checkpoint/``. Kept for
the record.

The vector was generated ONCE and must decode forever; this script refuses to overwrite it. A change
to the checkpoint format needs a new format version and a new vector beside this one.

Usage (from the repository root)::

    .venv/bin/python tests/make_checkpoint_vectors.py

It saves :func:`frozen_state` with :func:`ppml.torch.checkpoint.save` (4 KiB segments, so the
tensors span several) under the envelope vectors' key (``tests/vectors/envelope/keys``), and
records the file's SHA-256 in ``manifest.json``. Data keys, salts and nonces are random, so the
file, not this script, is the vector; ``frozen_state`` is what it must decode to.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import tempfile
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent / "vectors" / "torch-checkpoint"
ENVELOPE_KEYS = Path(__file__).resolve().parent / "vectors" / "envelope" / "keys"
KEY_ID = "ppml-envelope-v1-vectors"
NAME = "checkpoint-v1.ppml"


def frozen_state() -> dict[str, Any]:
    """What the vector holds: every kind of value the format stores, built without randomness."""
    weight = torch.arange(48, dtype=torch.float32).reshape(6, 8) / 7
    model: OrderedDict[str, Any] = OrderedDict([
        ("encoder.weight", weight), ("encoder.bias", torch.linspace(-1, 1, 6)),
        ("decoder.weight", weight),  # tied: the same tensor twice
        ("norm.running_var", torch.ones(6, dtype=torch.float64)),
        ("norm.num_batches_tracked", torch.tensor(17)),
    ])
    model._metadata = OrderedDict([("", {"version": 1}), ("norm", {"version": 2})])  # type: ignore[attr-defined]
    return {
        "model": model,
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": weight.t() * 0.5},
                      2: {"momentum_buffer": torch.arange(6, dtype=torch.bfloat16)}},
            "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08, "amsgrad": False,
                              "foreach": None, "params": [0, 1, 2]}],
        },
        "dtypes": [torch.arange(4, dtype=dtype) for dtype in (torch.float16, torch.int8, torch.uint8, torch.int32)]
        + [torch.tensor([True, False]), torch.zeros(0, 3)],
        "long": torch.arange(3000, dtype=torch.float32).sqrt(),  # the tensors span several segments
        "scalars": {"epoch": 12, "loss": math.inf, "not a number": math.nan, "big": 2**70, "name": "résumé ✓",
                    "ok": True, -1: None},
    }


def main() -> int:
    from make_envelope_vectors import _NamedStore
    from ppml.kms.local import LocalKeyStore
    from ppml.torch.checkpoint import load, save

    if (HERE / NAME).exists():
        print(f"{HERE / NAME} exists; it is frozen and must not be regenerated.")
        return 1
    HERE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        store_dir = Path(scratch) / "keys"
        store_dir.mkdir(mode=0o700)
        shutil.copy(ENVELOPE_KEYS / f"{KEY_ID}.key", store_dir / f"{KEY_ID}.key")
        (store_dir / f"{KEY_ID}.key").chmod(0o600)
        kms = _NamedStore(LocalKeyStore(store_dir))
        save(frozen_state(), HERE / NAME, kms=kms, key_id=KEY_ID, segment_size=4096)
        load(HERE / NAME, kms=kms)
    data = (HERE / NAME).read_bytes()
    manifest = {"format": "ppml torch checkpoint v1", "key_id": KEY_ID, "key_file": f"../envelope/keys/{KEY_ID}.key",
                "generated": datetime.now(UTC).isoformat(), "generator": "tests/make_checkpoint_vectors.py",
                "vector": NAME, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                "decodes_to": "tests/make_checkpoint_vectors.py:frozen_state"}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {HERE / NAME} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
