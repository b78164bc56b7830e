"""Regenerate the golden renders in ``tests/vectors/kustomize/`` with kubectl after a change to the
kustomize tree (``src/ppml/deploy/kustomize``); tests/test_kustomize.py compares ppml's own renderer
(and kubectl, where present) with them.

Usage (from the repository root, kubectl with kustomize v5 on PATH)::

    .venv/bin/python tests/make_kustomize_vectors.py
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "src" / "ppml" / "deploy" / "kustomize"
OUT = ROOT / "tests" / "vectors" / "kustomize"


def main() -> None:
    version = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True, check=True).stdout
    for overlay in ("dev", "prod"):
        rendered = subprocess.run(["kubectl", "kustomize", str(TREE / "overlays" / overlay)], capture_output=True,
                                  text=True, check=True).stdout
        header = (f"# kubectl kustomize src/ppml/deploy/kustomize/overlays/{overlay}\n"
                  f"# {' / '.join(line.strip() for line in version.splitlines() if line.strip())}\n"
                  "# Regenerate with tests/make_kustomize_vectors.py after changing the tree.\n")
        (OUT / f"{overlay}.yaml").write_text(header + rendered, encoding="utf-8")
        print(f"wrote {OUT / f'{overlay}.yaml'}")


if __name__ == "__main__":
    main()
