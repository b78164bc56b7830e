"""``ppml enclave …``: argument wiring for the enclave key, manifest, measurement and signature.

Hook it into a parser with :func:`add_enclave_commands`; every command sets ``func`` to a handler
that takes the parsed arguments, returns an exit code and raises :class:`ppml.errors.PpmlError`
subclasses for bad input (the ``ppml`` command turns those into messages and exit codes)::

    ppml enclave keygen OUT
    ppml enclave build --app FILE_OR_DIR [--app …] --entrypoint SCRIPT --out MANIFEST [options]
    ppml enclave measure MANIFEST --key KEY       # stdout: mr_enclave : …  /  mr_signer : …
    ppml enclave sign MANIFEST --key KEY --out SIG
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ppml.errors import OutputExists, UsageError

__all__ = ["add_enclave_commands"]


def _source_note(source: str) -> str:
    from ppml.tee.gramine import SOURCE_GRAMINE

    if source == SOURCE_GRAMINE:
        return "measured by gramine-sgx-sign: this is the MRENCLAVE SGX hardware will report"
    return (
        "measured by ppml's simulated-TEE measurement (gramine-sgx-sign not installed): "
        "it commits to the manifest and its trusted files, but real SGX hardware reports a "
        "different MRENCLAVE"
    )


def cmd_keygen(args: argparse.Namespace) -> int:
    from ppml.core.measurement import generate_enclave_key, mr_signer, write_enclave_key

    out = Path(args.out)
    if out.exists():
        error = OutputExists(out)
        error.hint = "choose another path: ppml never replaces an enclave signing key"
        raise error
    key = generate_enclave_key()
    write_enclave_key(key, out)
    print(f"mr_signer : {mr_signer(key).hex()}")
    print(f"enclave signing key (RSA-3072, e=3) written to {out} (mode 0600); keep it offline",
          file=sys.stderr)
    return 0


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _count(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be non-negative")
    return value


def cmd_build(args: argparse.Namespace) -> int:
    from ppml.progress import Progress
    from ppml.tee.gramine import build_manifest

    out = Path(args.out)
    if out.exists() and not args.force:
        raise OutputExists(out)
    if args.max_threads < 1:
        raise UsageError("--max-threads must be at least 1")
    with Progress("hashing trusted files", unit="files") as progress:
        manifest = build_manifest(
            entrypoint=Path(args.entrypoint),
            app_files=[Path(p) for p in args.app],
            python=Path(args.python) if args.python else None,
            python_paths=[Path(p) for p in args.python_path] if args.python_path else None,
            spark_jars=[Path(p) for p in args.spark_jars],
            argv=args.arg,
            env=dict(args.env),
            enclave_size=args.enclave_size,
            max_threads=args.max_threads,
            debug=args.debug,
            isv_prod_id=args.isv_prod_id,
            isv_svn=args.isv_svn,
            extra_files=[Path(p) for p in args.extra_file],
            include_bytecode=args.include_bytecode,
            loader_entrypoint=args.libos,
            progress=progress.report,
        )
    manifest.write(out, overwrite=args.force)
    print(
        f"manifest written to {out}: {len(manifest.trusted_files)} trusted files, "
        f"enclave size {manifest.enclave_size}, {manifest.max_threads} threads, "
        f"debug {'ON' if manifest.debug else 'off'}",
        file=sys.stderr,
    )
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from ppml.tee.gramine import measure

    result = measure(Path(args.manifest), Path(args.key))
    print(f"mr_enclave : {result.mr_enclave.hex()}")
    print(f"mr_signer : {result.mr_signer.hex()}")
    print(_source_note(result.source), file=sys.stderr)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    from ppml.tee.gramine import sign

    _, result = sign(Path(args.manifest), Path(args.key), Path(args.out), overwrite=args.force)
    print(f"SIGSTRUCT written to {args.out}", file=sys.stderr)
    print(f"mr_enclave : {result.mr_enclave.hex()}", file=sys.stderr)
    print(f"mr_signer : {result.mr_signer.hex()}", file=sys.stderr)
    print(_source_note(result.source), file=sys.stderr)
    return 0


def add_enclave_commands(subparsers: Any) -> None:
    """Add ``enclave`` and its actions to ``subparsers`` (from ``parser.add_subparsers()``)."""
    from ppml.tee.gramine import DEFAULT_LIBOS_URI

    enclave = subparsers.add_parser(
        "enclave",
        help="enclave signing key, Gramine manifest, mr_enclave/mr_signer, SIGSTRUCT",
        description="Build and identify the trusted application: signing key, Gramine manifest, "
        "measurement (mr_enclave, mr_signer) and SIGSTRUCT.",
    )
    actions = enclave.add_subparsers(dest="enclave_command", metavar="ACTION", required=True)

    p = actions.add_parser(
        "keygen", help="generate an enclave signing key (RSA-3072, e=3)",
        description="Write a new enclave signing key (RSA-3072, public exponent 3, as SGX requires) "
        "to OUT with mode 0600 and print its mr_signer.",
    )
    p.add_argument("out", metavar="OUT")
    p.set_defaults(func=cmd_keygen)

    p = actions.add_parser(
        "build", help="build a strict Gramine manifest for a Python application",
        description="Write a Gramine manifest that runs `python SCRIPT ARGS…` with every file it "
        "loads listed in sgx.trusted_files (SHA-256), a strict file policy, argv and environment "
        "fixed in the manifest, and sgx.debug = false unless --debug.",
    )
    p.add_argument("--app", action="append", required=True, metavar="FILE_OR_DIR",
                   help="application file or directory to trust (repeatable)")
    p.add_argument("--entrypoint", required=True, metavar="SCRIPT", help="the Python script to run")
    p.add_argument("--out", required=True, metavar="MANIFEST")
    p.add_argument("--spark-jars", action="append", default=[], metavar="DIR",
                   help="Spark's jars directory to trust (repeatable)")
    p.add_argument("--enclave-size", default="8G", metavar="SIZE",
                   help="sgx.enclave_size, a power of two (default 8G)")
    p.add_argument("--max-threads", type=_count, default=64, metavar="N",
                   help="sgx.max_threads (default 64)")
    p.add_argument("--isv-prod-id", type=_count, default=0, metavar="N")
    p.add_argument("--isv-svn", type=_count, default=0, metavar="N")
    p.add_argument("--python", metavar="PATH", help="interpreter (default: this one)")
    p.add_argument("--python-path", action="append", default=[], metavar="DIR",
                   help="sys.path directory to trust (repeatable; default: this "
                   "interpreter's sys.path)")
    p.add_argument("--extra-file", action="append", default=[], metavar="FILE_OR_DIR",
                   help="other file or directory to trust, e.g. system libraries (repeatable)")
    p.add_argument("--arg", action="append", default=[], metavar="ARG",
                   help="argument passed to SCRIPT, fixed in the manifest (repeatable; write "
                   "--arg=--flag for one that starts with -)")
    p.add_argument("--env", action="append", default=[], type=_env_pair, metavar="NAME=VALUE",
                   help="environment variable fixed in the manifest (repeatable)")
    p.add_argument("--libos", default=DEFAULT_LIBOS_URI, metavar="URI",
                   help=f"loader.entrypoint.uri (default {DEFAULT_LIBOS_URI})")
    p.add_argument("--include-bytecode", action="store_true",
                   help="also trust __pycache__/*.pyc files")
    p.add_argument("--debug", action="store_true",
                   help="DEBUG enclave: the host can read its memory (warns; never for real data)")
    p.add_argument("--force", action="store_true", help="replace MANIFEST if it exists")
    p.set_defaults(func=cmd_build)

    p = actions.add_parser(
        "measure", help="print mr_enclave and mr_signer",
        description="Print mr_enclave and mr_signer for MANIFEST signed with KEY: from "
        "gramine-sgx-sign if it is installed, otherwise from ppml's simulated-TEE measurement "
        "(stderr says which).",
    )
    p.add_argument("manifest", metavar="MANIFEST")
    p.add_argument("--key", required=True, metavar="KEY")
    p.set_defaults(func=cmd_measure)

    p = actions.add_parser(
        "sign", help="write the SIGSTRUCT (.sig) for a manifest",
        description="Write the 1808-byte SGX SIGSTRUCT for MANIFEST's measurement, signed with KEY.",
    )
    p.add_argument("manifest", metavar="MANIFEST")
    p.add_argument("--key", required=True, metavar="KEY")
    p.add_argument("--out", required=True, metavar="SIG")
    p.add_argument("--force", action="store_true", help="replace SIG if it exists")
    p.set_defaults(func=cmd_sign)
