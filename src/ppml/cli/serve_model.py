"""``ppml serve-model``: attest, load the encrypted weights with keys released to this TEE, then
serve predictions over HTTPS (wiring only: the app is :mod:`ppml.torch.serving`).

The order is the guarantee: the TEE gate runs first, through the same code as ``ppml submit
--tee`` and ``ppml tee run`` (``Attestation Success!`` is the first line on stdout); only then is
the user's ``--module`` imported, the checkpoint decrypted (its key released to the attested
session only, as JWE to the TEE's key) and checked against the model, and only then is the port
bound. A failed attestation prints ``Attestation Fail! Application killed!`` and exits 1; a
checkpoint that does not decrypt or fit exits with ppml's error; neither ever listens.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from ppml.cli._args import add_attestation_options, integer
from ppml.errors import InputNotFound, PpmlError, UnsafeWarning, UsageError

__all__ = ["add_commands"]

log = logging.getLogger("ppml.serving")


def _builder(reference: str, app_dir: Path) -> Any:
    module_name, _, function_name = reference.partition(":")
    if not module_name or not function_name.isidentifier():
        raise UsageError(f"--module takes pkg.module:function, not {reference!r}")
    sys.path.insert(0, str(app_dir.absolute()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--module {reference}: cannot import {module_name} from {app_dir} or the Python path "
                         f"({exc}); --app-dir names where it lives") from None
    builder = getattr(module, function_name, None)
    if not callable(builder):
        raise UsageError(f"--module {reference}: {module_name} has no function {function_name}")
    return builder


def _build(reference: str, app_dir: Path, spec_override: Any) -> tuple[Any, Any]:
    """The module and its input spec from the user's builder (``--input-shape`` wins over its spec)."""
    import torch

    from ppml.torch.serving import InputSpec

    built = _builder(reference, app_dir)()
    model, spec = built if isinstance(built, tuple) and len(built) == 2 else (built, None)
    if not isinstance(model, torch.nn.Module) or not (spec is None or isinstance(spec, InputSpec)):
        raise UsageError(f"--module {reference} returned a value of type {type(built).__name__}: a builder returns a "
                         "torch.nn.Module, or (module, ppml.torch.serving.InputSpec)")
    spec = spec_override or spec
    if spec is None:
        raise UsageError(f"{reference} declares no input: return (module, InputSpec(shape=..., dtype=...)) or pass "
                         "--input-shape (and --input-dtype)")
    return model, spec


def _tls(args: argparse.Namespace) -> tuple[Path, Path]:
    if bool(args.tls_dev) == bool(args.tls_cert or args.tls_key) or bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("the model server serves HTTPS only: give --tls-dev DIR or --tls-cert FILE --tls-key FILE")
    if args.tls_dev:
        from ppml.kms.tls import ensure_dev_tls

        tls = ensure_dev_tls(Path(args.tls_dev), args.host)
        log.info("ppml serve-model: development TLS; clients verify against the CA certificate %s", tls.ca_cert)
        return tls.server_cert, tls.server_key
    for path in (Path(args.tls_cert), Path(args.tls_key)):
        if not path.is_file():
            raise InputNotFound(path)
    return Path(args.tls_cert), Path(args.tls_key)


def _gate(args: argparse.Namespace) -> tuple[bool, Any]:
    """(passed, the attested session: None under --tee none); a refusal is already reported."""
    from ppml.tee.launcher import attestation_for
    from ppml.tee.runtime import FAIL_MESSAGE, attest_or_report

    if args.tee == "none":
        warnings.warn("--tee none: nothing attests this server; the model's key is released to the app's "
                      "credentials alone", UnsafeWarning, stacklevel=1)
        return True, None
    try:
        gate = attestation_for(
            args.tee, attestation_url=args.attestation_url or os.environ.get("PPML_AS_URL"),
            policy_ids=args.policy or (), attestation_ca=_path(args.attestation_ca or os.environ.get("PPML_AS_CA")),
            enclave_manifest=_path(args.enclave_manifest), enclave_sig=_path(args.enclave_sig),
            platform_key=_path(args.platform_key),
        )
    except PpmlError as exc:
        print(f"ppml: {exc.diagnostics()}", file=sys.stderr)
        print(FAIL_MESSAGE, flush=True)
        return False, None
    session = attest_or_report(*gate)
    return session is not None, session


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def cmd_serve_model(args: argparse.Namespace) -> int:
    try:
        from ppml.torch.checkpoint import load_into
        from ppml.torch.serving import BearerToken, InputSpec, create_app
    except ImportError as exc:
        raise UsageError(f"ppml serve-model needs PyTorch: pip install 'ppml[dl]' ({exc})") from None
    from ppml.asgi import run_https
    from ppml.kms.registry import open_kms

    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)  # ppml.serving's lines and its access log, not every library's
    logging.getLogger("ppml.serving.access").setLevel(logging.WARNING if args.no_access_log else logging.INFO)
    checkpoint = Path(args.model)
    if not checkpoint.is_file():
        raise InputNotFound(checkpoint)
    spec_override = InputSpec.parse(args.input_shape, args.input_dtype) if args.input_shape else None
    token = BearerToken.from_file(Path(args.token_file), create=True)
    cert, key = _tls(args)

    passed, session = _gate(args)  # nothing of the user's runs before the gate
    if not passed:
        return 1
    kms = open_kms(args.kms or os.environ.get("PPML_KMS", "local:"), attestation=session)
    model, spec = _build(args.module, Path(args.app_dir), spec_override)
    load_into(model, checkpoint, kms=kms, strict=True, state_key=args.state_key)
    app = create_app(model, spec, token=token, max_body=args.max_body_bytes, workers=args.inference_threads,
                     max_queue=args.max_queue)
    log.info("ppml serve-model: %s from %s, %s; listening on https://%s:%d", args.module, checkpoint, spec,
             args.host, args.port)
    run_https(app, host=args.host, port=args.port, cert=cert, key=key)
    return 0


def add_commands(commands: Any) -> None:
    p = commands.add_parser(
        "serve-model", help="attest, load an encrypted PyTorch checkpoint, serve predictions over HTTPS",
        description="Attest this TEE (Attestation Success! first), import --module's builder, load the encrypted "
        "checkpoint into its model with keys released to the attested session, then serve POST /v1/predict "
        "(JSON or safetensors; bearer token), /healthz and /metrics over HTTPS. A failed attestation or a "
        "checkpoint that does not decrypt or fit exits without ever listening.",
    )
    p.add_argument("--model", required=True, metavar="CHECKPOINT", help="the checkpoint (ppml.torch.checkpoint.save)")
    p.add_argument("--module", required=True, metavar="PKG.MOD:FUNCTION",
                   help="a builder returning the torch.nn.Module, or (module, ppml.torch.serving.InputSpec)")
    p.add_argument("--app-dir", default=".", metavar="DIR", help="where --module is imported from (default: here)")
    p.add_argument("--state-key", metavar="KEY", help="the model's state under this key of the checkpoint "
                   "(e.g. model, for {\"model\": ..., \"optimizer\": ...}); default: the whole checkpoint")
    p.add_argument("--input-shape", metavar="SIZES", help="one example's shape without the batch dimension, e.g. "
                   "4 or 3,32,32 (overrides the builder's InputSpec)")
    p.add_argument("--input-dtype", default="float32", metavar="DTYPE", help="with --input-shape (default float32)")
    p.add_argument("--kms", metavar="URI", help="the key service of the checkpoint's key (ppml+https://HOST:PORT?"
                   "ca=FILE&credentials=FILE, ehsm+https://…); default $PPML_KMS")
    p.add_argument("--token-file", required=True, metavar="FILE", help="the bearer token clients send (0600; "
                   "created with a fresh token if missing)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=integer(0), default=8443)
    p.add_argument("--tls-dev", metavar="DIR", help="make (once) a private CA and server certificate in DIR; "
                   "clients verify against DIR/ca.pem")
    p.add_argument("--tls-cert", metavar="FILE")
    p.add_argument("--tls-key", metavar="FILE")
    p.add_argument("--max-body-bytes", type=integer(1), default=16 << 20, metavar="N",
                   help="larger request bodies get 413 (default 16 MiB)")
    p.add_argument("--inference-threads", type=integer(1), default=1, metavar="N",
                   help="threads running the model (default 1; each forward uses torch's own intra-op threads)")
    p.add_argument("--max-queue", type=integer(0), default=64, metavar="N",
                   help="requests that may wait for a thread; more get 503 (default 64)")
    p.add_argument("--no-access-log", action="store_true", help="do not log one JSON line per request")
    tee = p.add_argument_group("TEE and attestation (as ppml submit)")
    tee.add_argument("--tee", required=True, choices=["simulated", "sgx-gramine", "tdx", "none"],
                     help="the TEE backend; none serves without attestation (warns)")
    add_attestation_options(tee)
    p.set_defaults(func=cmd_serve_model)
