"""``ppml deploy render``: the Kubernetes manifests of an overlay, checked for a cluster (wiring
only: the tree and the renderer are :mod:`ppml.deploy.manifests`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ppml.errors import OutputExists

__all__ = ["add_commands"]


def cmd_deploy_render(args: argparse.Namespace) -> int:
    from ppml.deploy.manifests import dump_yaml, render

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.force:
        raise OutputExists(out)
    objects, engine = render(args.overlay, values=Path(args.values) if args.values else None, engine=args.engine)
    text = dump_yaml(objects)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"ppml: {len(objects)} objects of the {args.overlay} overlay (rendered by {engine}) written to {out}",
              file=sys.stderr)
    return 0


def add_commands(commands: Any) -> None:
    deploy = commands.add_parser("deploy", help="Kubernetes manifests of the KMS/AS and the Spark jobs namespace",
                                 description="Kubernetes manifests (a kustomize tree shipped with ppml).")
    sub = deploy.add_subparsers(dest="deploy_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "render", help="render an overlay (dev or prod) to YAML for kubectl apply",
        description="Render the dev or prod overlay of ppml's kustomize tree with kubectl kustomize (or, without "
        "kubectl, ppml's own renderer of the same tree), from the tree's values or --values FILE (KEY=VALUE, the "
        "keys of the tree's base/values.env). Refuses values a cluster cannot use, such as a loopback KMS or "
        "attestation URL: in a pod, localhost is the pod itself.")
    p.add_argument("--overlay", required=True, choices=["dev", "prod"])
    p.add_argument("--values", metavar="FILE", help="the values file (default: the tree's base/values.env)")
    p.add_argument("--out", metavar="FILE", help="write the YAML here (default: standard output)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--engine", choices=["auto", "kubectl", "python"], default="auto",
                   help="auto (default): kubectl kustomize when kubectl is on PATH, else ppml's renderer")
    p.set_defaults(func=cmd_deploy_render)
