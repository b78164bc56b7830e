"""``ppml image …``: argument wiring for application image build contexts (wiring only).

::

    ppml image context --app DIR --enclave-key KEY --out CTX [--root /] [--base-image REF]
        # stdout: mr_enclave: …  /  mr_signer: …   (register them: ppml attest register)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_commands"]


def cmd_image_context(args: argparse.Namespace) -> int:
    from ppml.cli.enclave import _source_note
    from ppml.deploy.context import build_image_context
    from ppml.progress import Progress

    with Progress("hashing trusted files", unit="files") as progress:
        context = build_image_context(
            app_dir=Path(args.app), enclave_key=Path(args.enclave_key), out=Path(args.out), root=Path(args.root),
            base_image=args.base_image, enclave_size=args.enclave_size, max_threads=args.max_threads,
            isv_prod_id=args.isv_prod_id, isv_svn=args.isv_svn, progress=progress.report,
        )
    print(f"mr_enclave: {context.measurement.mr_enclave.hex()}")
    print(f"mr_signer: {context.measurement.mr_signer.hex()}")
    print(f"build context written to {context.directory}: {context.trusted_files} trusted files; build it with "
          f"`docker build -t IMAGE {context.directory}` (no key needed), then register the measurement with "
          "`ppml attest register --mr-enclave … --mr-signer …`", file=sys.stderr)
    print(_source_note(context.measurement.source), file=sys.stderr)
    return 0


def add_commands(commands: Any) -> None:
    """Add ``image`` and its actions to ``commands`` (from ``parser.add_subparsers()``)."""
    from ppml.cli.enclave import _count

    image = commands.add_parser("image", help="container images: the signed build context of an application image",
                                description="Container images for ppml applications (docs/deploy-images.md).")
    actions = image.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "context", help="write a custom image's build context: Dockerfile, Gramine manifest, SIGSTRUCT",
        description="Write CTX: a Dockerfile FROM the ppml base image that copies the application to /ppml/app "
        "and the enclave to /ppml/enclave, the Gramine manifest trusting the application, Python, the JVM and "
        "Spark at their image paths, and its SIGSTRUCT signed with KEY. Run it inside the base image (--root /) "
        "so the runtime files hashed are the image's own. Prints mr_enclave and mr_signer to register. The key "
        "never enters CTX; a key or any PEM private key inside --app is refused.")
    p.add_argument("--app", required=True, metavar="DIR", help="the application directory (copied to /ppml/app)")
    p.add_argument("--enclave-key", required=True, metavar="KEY", help="enclave signing key (ppml enclave keygen)")
    p.add_argument("--out", required=True, metavar="CTX", help="the build context to write (must not exist)")
    p.add_argument("--root", default="/", metavar="DIR", help="the base image's root file system (default /: run "
                   "inside the base image)")
    p.add_argument("--base-image", default="ppml-base:latest", metavar="REF", help="the Dockerfile's FROM (pin it by "
                   "digest: the manifest commits to that image's files)")
    p.add_argument("--enclave-size", default="8G", metavar="SIZE", help="sgx.enclave_size (default 8G)")
    p.add_argument("--max-threads", type=_count, default=64, metavar="N", help="sgx.max_threads (default 64)")
    p.add_argument("--isv-prod-id", type=_count, default=0, metavar="N")
    p.add_argument("--isv-svn", type=_count, default=0, metavar="N")
    p.set_defaults(func=cmd_image_context)
