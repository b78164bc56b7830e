"""The ``ppml`` command: argument parsing and wiring only; the work happens in the library."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ppml import __version__
from ppml.cli._args import integer
from ppml.core._files import AtomicOutput, AtomicSink, require_output_directory
from ppml.errors import InputNotFound, NotAFile, OutputExists, PpmlError, UnsafeWarning, UsageError
from ppml.filesystem import FileEntry, Storage, is_object_url, staged_directory, storage_for
from ppml.progress import Progress

__all__ = ["build_parser", "main"]

DEFAULT_KMS_ENV = "PPML_KMS"
LEGACY_MODE = "AES/CBC/PKCS5Padding"
ENVELOPE_MODE = "ppml"


def _default_kms() -> str:
    return os.environ.get(DEFAULT_KMS_ENV, "local:")


def _add_kms(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kms",
        default=None,
        metavar="URI",
        help="key service: local: (store in ~/.ppml/keys), local:DIR, ppml+https://HOST:PORT, "
        f"ehsm+https://HOST:PORT (remote ones take ?credentials=FILE&ca=FILE); default ${DEFAULT_KMS_ENV} "
        "or local:",
    )


def _kms(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ppml.kms.registry import open_kms

    return open_kms(args.kms or _default_kms())


# -- generate-people ---------------------------------------------------------------------------


def cmd_generate_people(args: argparse.Namespace) -> int:
    from ppml.datagen import generate_people

    if args.rows < 0:
        raise UsageError("ROWS must be a non-negative integer")
    summary = generate_people(args.path, args.rows, seed=args.seed)
    print(f"Num of Developer age between 20,40 is {summary.developers_20_40}")
    return 0


# -- key ---------------------------------------------------------------------------------------


def _release_policy(args: argparse.Namespace) -> dict[str, Any] | None:
    """The release policy the flags describe (parsed by the one claims-policy type), or None."""
    from ppml.core.policy import AllOf, Measurements, parse_policy

    parts = []
    if args.release_policy_file:
        path = Path(args.release_policy_file)
        try:
            parts.append(parse_policy(json.loads(path.read_text())))
        except FileNotFoundError:
            raise InputNotFound(path) from None
        except ValueError as exc:
            raise UsageError(f"{path}: not JSON: {exc}") from None
    if args.release_policy:
        parts.append(Measurements(policy_ids=tuple(args.release_policy), allow_simulated=args.allow_simulated,
                                  allow_debug=args.allow_debug))
    elif args.allow_simulated or args.allow_debug:
        raise UsageError("--allow-simulated and --allow-debug go with --release-policy ID")
    if not parts:
        return None
    if args.allow_simulated:
        print("ppml: warning: this key releases data keys to SIMULATED TEEs, which protect nothing",
              file=sys.stderr)
    return (parts[0] if len(parts) == 1 else AllOf(tuple(parts))).to_dict()


def cmd_key_create(args: argparse.Namespace) -> int:
    release_policy = _release_policy(args)
    kms = _kms(args)
    if release_policy is None:
        info = kms.create_primary_key(description=args.description or "")
        print(info.key_id)
        return 0
    from ppml.kms.remote import RemoteKms

    if not isinstance(kms, RemoteKms):
        raise UsageError(f"{kms.uri}: release policies need a key service that attests callers "
                         "(ppml+https://HOST:PORT, i.e. ppml serve)")
    key = kms.request("POST", "/v1/keys", {"description": args.description or "", "release_policy": release_policy})
    print(key["key_id"])
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    for info in _kms(args).list_keys():
        state = "enabled" if info.enabled else "disabled"
        print(f"{info.key_id}\t{info.created.isoformat(timespec='seconds')}\t{state}\t{info.description}")
    return 0


# -- encrypt / decrypt -------------------------------------------------------------------------


ENVELOPE_SUFFIX = ".ppml"


def _add_suffix(name: str) -> str:
    return name + ENVELOPE_SUFFIX


def _strip_suffix(name: str) -> str:
    """``part-0.csv.ppml`` -> ``part-0.csv`` (as Spark's ppml writer names them); other names
    are kept."""
    return name[: -len(ENVELOPE_SUFFIX)] if name.endswith(ENVELOPE_SUFFIX) and name != ENVELOPE_SUFFIX else name


def _plan(source: Storage, src: str, rename: Callable[[str], str] | None = None) -> list[tuple[FileEntry, str]]:
    """(input, output name) pairs: ``src`` alone (output name ""), or every data file under
    the directory or prefix ``src`` with its relative name, its file name passed through
    ``rename``."""
    kind = source.kind(src)
    if kind is None:
        if Path(src).exists() and not is_object_url(src):
            raise NotAFile(src, "not a regular file")
        raise InputNotFound(src)
    if kind == "file":
        return [(source.list_files(src)[0], "")]
    plan: list[tuple[FileEntry, str]] = []
    inputs_of: dict[str, str] = {}
    for entry in source.list_files(src):
        folder, _, name = entry.relative.rpartition("/")
        target = "/".join(filter(None, [folder, rename(name) if rename is not None else name]))
        if target in inputs_of:
            raise UsageError(f"{inputs_of[target]} and {entry.path} would both be written to {target}; "
                             "rename one of them")
        inputs_of[target] = entry.path
        plan.append((entry, target))
    return plan


FileJob = Callable[[Storage, str, Callable[[], AtomicSink], Callable[[int], None] | None], object]
"""Does one file: (its storage, its path, the output to make, a progress callback)."""


def _run_files(args: argparse.Namespace, verb: str, one: FileJob, rename: Callable[[str], str] | None = None) -> int:
    """Run ``one`` for ``args.src`` to ``args.dst`` (each a local path or an s3:// URL; a
    directory or prefix maps file by file), outputs appearing only when all are complete."""
    src, dst = str(args.src), str(args.dst)
    source, target = storage_for(src), storage_for(dst)
    plan = _plan(source, src, rename)
    total = sum(entry.size for entry, _ in plan)
    with Progress(verb, total=total, unit="B") as bar:
        progress = bar.update
        if source.kind(src) == "directory":
            with staged_directory(target, dst, overwrite=args.force) as output:
                for entry, relative in plan:
                    one(source, entry.path, functools.partial(output, relative), progress)
        else:
            one(source, src, lambda: target.atomic_output(dst, overwrite=args.force), progress)
    noun = "file" if len(plan) == 1 else "files"
    print(f"{verb} {len(plan)} {noun} ({total} bytes): {src} -> {dst}", file=sys.stderr)
    return 0


def _legacy_key(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ppml.core.legacy import BigDLPrimaryKey

    if not args.bigdl_primary_key:
        raise UsageError(f"--mode {LEGACY_MODE} needs --bigdl-primary-key FILE")
    if is_object_url(args.src) or is_object_url(args.dst):
        raise UsageError(f"--mode {LEGACY_MODE} reads and writes local files only (migrate them, then upload)")
    return BigDLPrimaryKey.load(args.bigdl_primary_key)


def _local(job: Callable[[Path, Path, Callable[[int], None] | None], object]) -> FileJob:
    """A job on local paths (the legacy format's), as a FileJob: its output's temporary file
    stands in for the output (the legacy recipes make their own atomic output beside it)."""
    def run(_: Storage, path: str, output: Callable[[], AtomicSink],
            progress: Callable[[int], None] | None) -> object:
        sink = output()
        assert isinstance(sink, AtomicOutput)
        try:
            job(Path(path), sink.tmp, progress)
            sink.commit()
        except BaseException:
            sink.discard()
            raise
        return None
    return run


def cmd_encrypt(args: argparse.Namespace) -> int:
    if args.mode == LEGACY_MODE:
        from ppml.core.legacy import encrypt_bigdl_file

        primary = _legacy_key(args)
        return _run_files(
            args,
            "encrypted (legacy BigDL format)",
            _local(lambda s, d, p: encrypt_bigdl_file(s, d, primary_key=primary, overwrite=True, progress=p)),
        )
    from ppml.core.envelope import encrypt_stream

    if not args.key:
        raise UsageError("encrypt needs --key KEY_ID (create one with `ppml key create`)")
    kms = _kms(args)

    def encrypt(source: Storage, path: str, output: Callable[[], AtomicSink],
                progress: Callable[[int], None] | None) -> object:
        with source.open_input(path) as stream:
            return encrypt_stream(stream, output, kms=kms, key_id=args.key, segment_size=args.segment_size,
                                  progress=progress)

    return _run_files(args, "encrypted", encrypt, rename=_add_suffix)


def cmd_decrypt(args: argparse.Namespace) -> int:
    if args.mode == LEGACY_MODE:
        from ppml.core.legacy import decrypt_bigdl_file

        primary = _legacy_key(args)
        return _run_files(
            args,
            "decrypted (legacy BigDL format)",
            _local(lambda s, d, p: decrypt_bigdl_file(
                s, d, primary_key=primary, allow_weak_keys=args.unsafe_allow_weak_legacy_keys,
                overwrite=True, progress=p,
            )),
        )
    if args.unsafe_allow_weak_legacy_keys:
        raise UsageError(f"--unsafe-allow-weak-legacy-keys applies only to --mode {LEGACY_MODE}")
    from ppml.core.envelope import decrypt_stream

    kms = _kms(args)

    def decrypt(source: Storage, path: str, output: Callable[[], AtomicSink],
                progress: Callable[[int], None] | None) -> object:
        return decrypt_stream(source.open_random_access(path), output, kms=kms, progress=progress)

    return _run_files(args, "decrypted", decrypt, rename=_strip_suffix)


# -- serve and kms operator commands -----------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    if args.workers > 1:
        from ppml.cli.workers import prepare_metrics

        prepare_metrics(Path(args.data_dir))
    from ppml.cli.serve import ServeOptions, serve

    return serve(ServeOptions(
        data_dir=Path(args.data_dir), host=args.host, port=args.port, public_url=args.public_url, db_url=args.db,
        tls_dev=args.tls_dev, tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None, open_enrollment=args.open_enrollment,
        passphrase_file=Path(args.root_key_passphrase_file) if args.root_key_passphrase_file else None,
        access_log=not args.no_access_log,
        trusted_simulated_platforms=tuple(Path(p) for p in args.trust_simulated_platform),
        self_tee=args.self_tee,
        self_enclave_manifest=Path(args.self_enclave_manifest) if args.self_enclave_manifest else None,
        self_enclave_sig=Path(args.self_enclave_sig) if args.self_enclave_sig else None,
        self_platform_key=Path(args.self_platform_key) if args.self_platform_key else None,
        dcap_collateral=tuple((Path(a), Path(b)) for a, b in args.dcap_collateral),
        dcap_crls=tuple(Path(p) for p in args.dcap_crl), workers=args.workers,
    ))


def _remote(args: argparse.Namespace, credentials_file: str | None = None):  # type: ignore[no-untyped-def]
    from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials

    uri = args.kms or _default_kms()
    if not uri.startswith(("https://", "ppml+https://")):
        raise UsageError(f"this command needs the native KMS API (ppml+https://HOST:PORT), not {uri!r}")
    endpoint = KmsEndpoint.parse(uri)
    credentials = load_credentials(credentials_file) if credentials_file else None
    return RemoteKms(endpoint, credentials)


def cmd_kms_enroll(args: argparse.Namespace) -> int:
    from ppml.kms.remote import KmsEndpoint, enroll_open, write_credentials

    out = Path(args.out)
    if out.exists() and not args.force:
        raise OutputExists(out)
    require_output_directory(out)  # before enrolling: credentials that cannot be saved are lost
    if args.admin_credentials:
        credentials = _remote(args, args.admin_credentials).enroll()
    else:
        credentials = enroll_open(KmsEndpoint.parse(args.kms or _default_kms()))
    write_credentials(out, credentials.appid, credentials.apikey.decode())
    print(credentials.appid)
    print(f"credentials written to {out} (mode 0600)", file=sys.stderr)
    return 0


def cmd_kms_keys(args: argparse.Namespace) -> int:
    kms = _remote(args)
    for info in kms.list_keys():
        state = "enabled" if info.enabled else "disabled"
        print(f"{info.key_id}\t{info.created.isoformat(timespec='seconds')}\t{state}\t{info.description}")
    return 0


def cmd_kms_rotate(args: argparse.Namespace) -> int:
    result = _remote(args).rotate(args.key_id)
    print(f"{result['key_id']} now at version {result['current_version']}")
    return 0


def cmd_kms_audit_verify(args: argparse.Namespace) -> int:
    from ppml.kms.service import KmsService

    service, _ = KmsService.open(
        data_dir=Path(args.data_dir), db_url=args.db,
        passphrase_file=Path(args.root_key_passphrase_file) if args.root_key_passphrase_file else None,
    )
    try:
        report = service.verify_audit()
    finally:
        service.close()
    if report.ok:
        print(f"audit log intact: {report.records} records, chain verified")
        return 0
    print(f"audit log BROKEN after {report.records} good records: {report.problem}", file=sys.stderr)
    return 7


def cmd_example_simple_query(args: argparse.Namespace) -> int:
    from ppml.spark.examples.simple_query import main as simple_query
    from ppml.spark.session import python_environment

    # Spark inherits these when it starts, in this process: its Python workers run this interpreter.
    os.environ.update(python_environment())
    return simple_query(args.example_args)


def cmd_example_fl(args: argparse.Namespace) -> int:
    from ppml.cli.fl_examples import run_fl_example

    return run_fl_example(args.example, workdir=Path(args.workdir or f".example-{args.example}"), rows=args.rows,
                          seed=args.seed, he=args.he, trees=max(1, args.trees))


def cmd_example_ml(args: argparse.Namespace) -> int:
    from ppml.cli.ml_examples import run_ml_example

    return run_ml_example(args.example, workdir=Path(args.workdir or f".example-{args.example}"), rows=args.rows,
                          seed=args.seed, task=args.task)


# -- demo --------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from ppml.cli.demo import run_demo

    return run_demo(workdir=Path(args.workdir), rows=args.rows, seed=args.seed, jvm=args.jvm)


# -- parser ------------------------------------------------------------------------------------


_non_negative_int = integer(0)


def _segment_size(text: str) -> int:
    from ppml.core.envelope import MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE

    value = _non_negative_int(text)
    if not MIN_SEGMENT_SIZE <= value <= MAX_SEGMENT_SIZE:
        raise argparse.ArgumentTypeError(f"must be in [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppml",
        description="Privacy-preserving big data: encrypted data, keys from a KMS, attested TEEs.",
    )
    parser.add_argument("--version", action="version", version=f"ppml {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "generate-people",
        help="write a synthetic people.csv (name,age,job)",
        description="Write PATH with a header and ROWS random people; print SimpleQuery's answer.",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("rows", metavar="ROWS", type=_non_negative_int)
    p.add_argument("--seed", type=int, default=None, help="random seed for a reproducible file")
    p.set_defaults(func=cmd_generate_people)

    key = commands.add_parser("key", help="manage primary keys", description="Manage primary keys.")
    key_commands = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    p = key_commands.add_parser("create", help="create a primary key and print its id",
                                description="Create an AES-256 primary key; print its id.")
    _add_kms(p)
    p.add_argument("--description", default="", help="free text stored with the key")
    p.add_argument("--release-policy", action="append", metavar="POLICY_ID",
                   help="release data keys only to workloads whose attestation token matched this policy "
                        "(repeat: any of them); without a release policy the key's data keys go to anyone "
                        "holding the app credentials")
    p.add_argument("--release-policy-file", metavar="FILE",
                   help="a JSON claims policy (mr_enclave, mr_signer, mr_td, all_of/any_of, ...; safe defaults: "
                        "no debug, no simulated, TCB UpToDate only); with --release-policy both must hold")
    p.add_argument("--allow-simulated", action="store_true",
                   help="with --release-policy: also release to the SIMULATED TEE (demo/test only)")
    p.add_argument("--allow-debug", action="store_true", help="with --release-policy: also release to debug enclaves")
    p.set_defaults(func=cmd_key_create)
    p = key_commands.add_parser("list", help="list primary keys", description="List primary keys.")
    _add_kms(p)
    p.set_defaults(func=cmd_key_list)

    for name, func, text in (
        ("encrypt", cmd_encrypt, "Encrypt a file, or a directory recursively (in the ppml mode each file "
         "name gets the suffix .ppml, as Spark's ppml writer names its files)."),
        ("decrypt", cmd_decrypt, "Decrypt a file, or a directory recursively (in the ppml mode a trailing "
         ".ppml is removed from each file name)."),
    ):
        p = commands.add_parser(
            name,
            help=text.split(",")[0].lower(),
            description=text + " Output appears only when complete and verified; in directory "
            "mode names starting with '.' or '_' (Hadoop metadata such as _SUCCESS) are skipped.",
        )
        p.add_argument("src", metavar="SRC")
        p.add_argument("dst", metavar="DST")
        _add_kms(p)
        p.add_argument(
            "--mode",
            choices=[ENVELOPE_MODE, LEGACY_MODE],
            default=ENVELOPE_MODE,
            help="ppml (default): the ppml envelope format; AES/CBC/PKCS5Padding: BigDL PPML's "
            "legacy format, for migrating data",
        )
        p.add_argument("--bigdl-primary-key", metavar="FILE",
                       help="BigDL plaintext primary key file (base64), for the legacy mode")
        p.add_argument("--force", action="store_true", help="replace DST if it exists")
        if name == "encrypt":
            p.add_argument("--key", metavar="KEY_ID", help="primary key id (from `ppml key create`)")
            p.add_argument("--segment-size", type=_segment_size, default=1 << 20, metavar="BYTES",
                           help="ciphertext segment size (default 1 MiB)")
        else:
            p.add_argument(
                "--unsafe-allow-weak-legacy-keys",
                action="store_true",
                help="read BigDL files whose keys give no real protection (warns every time)",
            )
        p.set_defaults(func=func)

    p = commands.add_parser(
        "serve",
        help="run the key management service (HTTPS)",
        description="Run the KMS: native API under /v1, eHSM-compatible API under /ehsm, /healthz, "
        "/metrics. On first start it writes DATA_DIR/admin.credentials (0600) and a root key.",
    )
    p.add_argument("--data-dir", required=True, help="state: database, root key, admin credentials, TLS")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--public-url", metavar="URL",
                   help="https://HOST[:PORT] clients reach the service at: the attestation tokens' issuer "
                   "(default https://HOST:PORT as bound; set it behind a Service or when binding 0.0.0.0)")
    p.add_argument("--db", metavar="URL", help="postgresql://user@host/db for shared storage "
                   "(password via ~/.pgpass); default SQLite in DATA_DIR")
    p.add_argument("--tls-dev", action="store_true", help="make (once) a private CA and server certificate "
                   "under DATA_DIR/tls; clients verify against DATA_DIR/tls/ca.pem")
    p.add_argument("--tls-cert", metavar="FILE")
    p.add_argument("--tls-key", metavar="FILE")
    p.add_argument("--open-enrollment", action="store_true",
                   help="let anyone enroll applications without the admin credential (demos only; warns)")
    p.add_argument("--root-key-passphrase-file", metavar="FILE",
                   help="derive the root key from this passphrase (scrypt) instead of DATA_DIR/root.key")
    p.add_argument("--no-access-log", action="store_true", help="do not log one JSON line per request")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes sharing the port and the database (default 1; with PostgreSQL "
                   "one per core serves the most requests, SQLite's single writer gains little)")
    p.add_argument("--trust-simulated-platform", action="append", default=[], metavar="PEM",
                   help="accept SIMULATED TEE evidence from this platform public key (demos/tests; only "
                   "policies with allow_simulated match it)")
    p.add_argument("--dcap-collateral", action="append", default=[], nargs=2, metavar=("TCB_INFO", "QE_IDENTITY"),
                   help="Intel TCB Info and QE Identity JSON (from PCS/PCCS) for SGX/TDX quote verification; "
                   "repeat per FMSPC. Without it the service verifies no hardware quotes.")
    p.add_argument("--dcap-crl", action="append", default=[], metavar="FILE",
                   help="Intel SGX Root CA / PCK CA CRL (PEM or DER); with any, revocation is enforced")
    p.add_argument("--self-tee", default="none", choices=["none", "sgx-gramine", "tdx", "simulated"],
                   help="the TEE this service runs in, for GenerateQuote (default: none; simulated proves nothing)")
    p.add_argument("--self-enclave-manifest", metavar="FILE", help="--self-tee simulated: the service's manifest")
    p.add_argument("--self-enclave-sig", metavar="FILE", help="--self-tee simulated: its SIGSTRUCT")
    p.add_argument("--self-platform-key", metavar="FILE", help="--self-tee simulated: the platform key")
    p.set_defaults(func=cmd_serve)

    kms_parser = commands.add_parser("kms", help="KMS operator commands", description="KMS operator commands.")
    kms_commands = kms_parser.add_subparsers(dest="kms_command", metavar="ACTION", required=True)
    p = kms_commands.add_parser("enroll", help="enroll an application; write its credentials file",
                                description="Enroll an application and write {appid, apikey} to OUT (0600).")
    _add_kms(p)
    p.add_argument("--admin-credentials", metavar="FILE", help="the server's admin.credentials")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the new credentials")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_kms_enroll)
    p = kms_commands.add_parser("keys", help="list this app's keys", description="List this app's keys.")
    _add_kms(p)
    p.set_defaults(func=cmd_kms_keys)
    p = kms_commands.add_parser("rotate", help="add a new version to a primary key",
                                description="Rotate a primary key: new wraps use a new version; old "
                                "versions still unwrap.")
    _add_kms(p)
    p.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(func=cmd_kms_rotate)
    audit = kms_commands.add_parser("audit", help="the audit log", description="The KMS audit log.")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    p = audit_commands.add_parser("verify", help="verify the hash chain of the audit log",
                                  description="Verify that no audit record was altered, deleted or reordered "
                                  "(reads the database directly; needs the root key).")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--db", metavar="URL")
    p.add_argument("--root-key-passphrase-file", metavar="FILE")
    p.set_defaults(func=cmd_kms_audit_verify)

    from ppml.cli.attest import add_commands as add_attestation_commands

    add_attestation_commands(commands)
    from ppml.cli.submit import add_commands as add_submit_commands

    add_submit_commands(commands)
    from ppml.cli.enclave import add_enclave_commands

    add_enclave_commands(commands)
    from ppml.cli.image import add_commands as add_image_commands

    add_image_commands(commands)
    from ppml.cli.serve_model import add_commands as add_serve_model_commands

    add_serve_model_commands(commands)
    from ppml.cli.fl import add_commands as add_fl_commands

    add_fl_commands(commands)
    from ppml.cli.doctor import add_commands as add_doctor_commands

    add_doctor_commands(commands)
    from ppml.cli.deploy import add_commands as add_deploy_commands

    add_deploy_commands(commands)

    example = commands.add_parser("example", help="run an example job",
                                  description="Run an example job in this process (Spark local mode unless "
                                  "--master is given); use `ppml submit examples/...` for TEE modes.")
    example_commands = example.add_subparsers(dest="example", metavar="EXAMPLE", required=True)
    p = example_commands.add_parser("simple-query", help="developers aged 20-40 in people.csv (BigDL's SimpleQuery)",
                                    add_help=False)
    p.add_argument("example_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_example_simple_query)
    p = example_commands.add_parser(
        "simple-query-jvm", help="the Java SimpleQuery end to end: Spark's own csv reader over envelopes",
        description="The whole workflow (as ppml demo) with the Java SimpleQuery of ppml's JVM library, run "
        "by ppml submit --class: Spark's own csv reader and writer over ppml envelopes, keys from the key agent.")
    p.add_argument("--workdir", default=".demo-jvm", help="where the example keeps its files")
    p.add_argument("--rows", type=_non_negative_int, default=100_000)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_demo, jvm=True)
    for name, summary in (
        ("ml-pipeline", "Spark MLlib Pipeline (LogisticRegression or GBTRegressor) on encrypted data"),
        ("xgboost", "distributed XGBoost (xgboost.spark, 2 workers) on encrypted data; booster scored without Spark"),
        ("lightgbm", "LightGBM trained inside the TEE on data decrypted into Arrow"),
        ("torch-digits", "a small CNN on scikit-learn's 8x8 digits, PyTorch DDP on 2 processes (TorchDistributor)"),
        ("torch-tabular", "an MLP on synthetic tabular data, PyTorch DDP on 2 processes (TorchDistributor)"),
    ):
        p = example_commands.add_parser(
            name, help=summary,
            description=f"{summary}, end to end: generate data with a known signal (offline), encrypt it, train "
            "through ppml submit --tee simulated (attestation first, gated keys), save the model encrypted under "
            "WORKDIR/model, reload it in a new attested process and print the held-out metric (AUC, RMSE or "
            "accuracy); check the reloaded model predicts exactly what the trained one did.")
        p.add_argument("--workdir", help=f"where the example keeps its files (default .example-{name})")
        p.add_argument("--rows", type=_non_negative_int, default=0 if name == "torch-digits" else 100_000,
                       help="rows generated, a fifth held out (torch-digits: 0, all 1,797 images)")
        p.add_argument("--seed", type=int, default=7)
        if not name.startswith("torch-"):
            p.add_argument("--task", choices=["classification", "regression"], default="classification")
        p.set_defaults(func=cmd_example_ml, task="classification")

    for name, summary in (
        ("fl-psi", "two parties find their shared ids by ECDH-PSI through the attested FL coordinator"),
        ("fl-vfl-lr", "vertical logistic regression with Paillier-protected gradients (coordinator + 2 parties)"),
        ("fl-vfl-nn", "a split neural network across two parties (coordinator + 2 parties)"),
        ("fl-fgboost", "FGBoost: vertical gradient-boosted trees with Paillier-encrypted gradients (2 parties)"),
    ):
        p = example_commands.add_parser(
            name, help=summary,
            description=f"{summary}: the coordinator and each party in its own process behind the simulated TEE "
            "gate on loopback; data generated offline and encrypted per party; results written encrypted.")
        p.add_argument("--workdir", help=f"where the example keeps its files (default .example-{name})")
        p.add_argument("--seed", type=int, default=7)
        if name == "fl-psi":
            p.add_argument("--rows", type=_non_negative_int, default=10_000, help="ids per party (half shared)")
        if name == "fl-vfl-lr":
            p.add_argument("--he", choices=["paillier", "ckks"], default="paillier")
        if name == "fl-fgboost":
            p.add_argument("--trees", type=_non_negative_int, default=5, help="boosting rounds (XGBoost gets as many)")
        p.set_defaults(func=cmd_example_fl, rows=10_000, he="paillier", trees=5)

    from ppml.cli.fl_flower import add_example as add_hfl_example

    add_hfl_example(example_commands)

    p = commands.add_parser(
        "demo",
        help="run the whole workflow on embedded defaults",
        description="Generate people.csv, create a key, encrypt, decrypt and compare.",
    )
    p.add_argument("--workdir", default=".demo", help="where the demo keeps its files")
    p.add_argument("--rows", type=_non_negative_int, default=1_000_000)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--jvm", action="store_true", help="run the Java SimpleQuery (Spark's own csv reader over "
                   "envelopes) instead of the Python one")
    p.set_defaults(func=cmd_demo)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    print(f"ppml: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv[:2] == ["example", "simple-query"]:
        # The example owns its arguments (BigDL's names, --help included).
        args = argparse.Namespace(func=cmd_example_simple_query, example_args=argv[2:])
    else:
        args = parser.parse_args(argv)
    warnings.simplefilter("always", UnsafeWarning)
    warnings.showwarning = _show_warning
    try:
        return int(args.func(args))
    except PpmlError as exc:
        print(f"ppml: error: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ppml: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
