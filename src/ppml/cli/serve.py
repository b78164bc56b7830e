"""``ppml serve``: wire the KMS (and the attestation service) into one app, run it under uvicorn
with TLS."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import sys
import urllib.parse
import warnings
from pathlib import Path

from fastapi import FastAPI

from ppml.asgi import run_https
from ppml.attestation.server import EhsmHandler, add_attestation_routes
from ppml.attestation.service import AttestationService
from ppml.attestation.simulated import SimulatedVerifier
from ppml.core.evidence import EvidenceVerifier
from ppml.core.rootkey import RootKey
from ppml.errors import UnsafeWarning, UsageError
from ppml.kms.http import AppHooks, EhsmAction
from ppml.kms.service import KmsService
from ppml.kms.types import Credentials
from ppml.store import Storage, open_database

__all__ = ["ServeOptions", "issuer_url", "serve"]

log = logging.getLogger("ppml.kms")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 9000
    #: The URL clients reach the service at, the attestation tokens' issuer (default
    #: ``https://HOST:PORT``, wrong when bound to 0.0.0.0 or behind a Service or load balancer).
    public_url: str | None = None
    db_url: str | None = None
    tls_dev: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    open_enrollment: bool = False
    passphrase_file: Path | None = None
    access_log: bool = True
    #: Public keys of simulated-TEE platforms whose evidence the attestation service accepts.
    trusted_simulated_platforms: tuple[Path, ...] = ()
    #: The TEE this service itself runs in, for GenerateQuote ("none", "simulated", ...).
    self_tee: str = "none"
    #: For ``self_tee="simulated"``: the service's own signed enclave and platform key.
    self_enclave_manifest: Path | None = None
    self_enclave_sig: Path | None = None
    self_platform_key: Path | None = None
    #: DCAP collateral: (TCB Info JSON, QE Identity JSON) pairs, signed by Intel's TCB signing key.
    dcap_collateral: tuple[tuple[Path, Path], ...] = ()
    #: Intel SGX Root CA / PCK CA CRLs (DER or PEM) to check revocation with.
    dcap_crls: tuple[Path, ...] = ()
    #: Worker processes (1: serve in this process).
    workers: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 64:
            raise UsageError("--workers must be 1..64")
        if self.tls_dev and (self.tls_cert or self.tls_key):
            raise UsageError("use either --tls-dev or --tls-cert/--tls-key")
        if not self.tls_dev and not (self.tls_cert and self.tls_key):
            raise UsageError("the KMS serves HTTPS only: give --tls-dev or --tls-cert F --tls-key F")
        if self.public_url is not None:
            parts = urllib.parse.urlsplit(self.public_url)
            if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
                raise UsageError(f"--public-url {self.public_url!r} must be an https://HOST[:PORT] URL")
        if self.db_url and "@" in self.db_url and ":" in self.db_url.split("://", 1)[-1].split("@", 1)[0]:
            raise UsageError("no passwords on the command line: put it in ~/.pgpass (or PGPASSFILE) "
                             "and give --db postgresql://user@host/db")


def open_attestation(storage: Storage, root: RootKey, options: ServeOptions) -> AttestationService:
    """The attestation service on the shared database, with the verifiers this host can run."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    verifiers: dict[str, EvidenceVerifier] = {}
    if options.dcap_collateral:
        from ppml.attestation.dcap import verifier_from_files

        verifiers["sgx"] = verifiers["tdx"] = verifier_from_files(options.dcap_collateral,
                                                                  crls=options.dcap_crls)
    if options.trusted_simulated_platforms:
        keys = []
        for path in options.trusted_simulated_platforms:
            key = load_pem_public_key(path.read_bytes())
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise UsageError(f"{path}: not a P-256 public key")
            keys.append(key)
        warnings.warn(f"the attestation service accepts SIMULATED TEE evidence from {len(keys)} platform key(s); "
                      "only policies with allow_simulated match it", UnsafeWarning, stacklevel=1)
        verifiers["simulated"] = SimulatedVerifier(keys)
    return AttestationService.open(storage, root, verifiers,
                                   issuer=issuer_url(options))


def issuer_url(options: ServeOptions) -> str:
    """The attestation tokens' ``iss``: what parties compare with the URL they reach the service
    at (``--public-url``), else ``https://HOST:PORT`` as bound."""
    if options.public_url is not None:
        return options.public_url.rstrip("/")
    return f"https://{options.host}:{options.port}"


def _self_evidence(options: ServeOptions):  # type: ignore[no-untyped-def]
    if options.self_tee == "none":
        return None
    from ppml.tee.registry import open_backend

    if options.self_tee == "simulated":
        if not (options.self_enclave_manifest and options.self_enclave_sig):
            raise UsageError("--self-tee simulated needs --self-enclave-manifest and --self-enclave-sig")
        backend = open_backend("simulated", manifest=options.self_enclave_manifest,
                               sigstruct=options.self_enclave_sig, platform_key_path=options.self_platform_key)
    else:
        backend = open_backend(options.self_tee)
    return backend.get_evidence


def serve(options: ServeOptions) -> int:
    """Run the service until SIGINT/SIGTERM: in this process, or in ``options.workers`` forked
    worker processes sharing one listening socket and the database (like replicas)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    service, attestation, admin = _open_services(options)
    if admin is not None:
        log.info("ppml kms: first start; admin credentials written to %s (mode 0600)",
                 options.data_dir / "admin.credentials")
    if options.open_enrollment:
        warnings.warn("--open-enrollment: anyone who can reach this port can enroll an application",
                      UnsafeWarning, stacklevel=1)
    if options.tls_dev:
        from ppml.kms.tls import ensure_dev_tls

        tls = ensure_dev_tls(options.data_dir / "tls", options.host)
        cert, key = tls.server_cert, tls.server_key
        log.info("ppml kms: development TLS; clients verify against the CA certificate %s", tls.ca_cert)
    else:
        assert options.tls_cert and options.tls_key
        cert, key = options.tls_cert, options.tls_key
    if options.workers == 1:
        return _run(service, attestation, options, cert, key)
    # The first open above created or migrated the schemas, the root key check and the admin
    # credential; each worker opens its own engine after the fork (connections and threads
    # must not cross it).
    service.close()
    from ppml.cli.workers import run_workers

    return run_workers(options.host, options.port, options.workers, lambda sock: _run_worker(options, cert, key, sock))


def _open_services(options: ServeOptions) -> tuple[KmsService, AttestationService, Credentials | None]:
    """The database and root key, the attestation service on them, and the KMS with the
    attestation service's token verifier as its release gate."""
    storage, root = open_database(data_dir=options.data_dir, db_url=options.db_url,
                                  passphrase_file=options.passphrase_file)
    attestation = open_attestation(storage, root, options)
    service, admin = KmsService.attach(storage, root, data_dir=options.data_dir,
                                       release_gate=attestation.token_verifier())
    return service, attestation, admin


def _run_worker(options: ServeOptions, cert: Path, key: Path, sock: socket.socket) -> int:
    service, attestation, _ = _open_services(options)
    return _run(service, attestation, options, cert, key, sock)


def _run(service: KmsService, attestation: AttestationService, options: ServeOptions, cert: Path, key: Path,
         sock: socket.socket | None = None) -> int:
    from ppml.kms.http import create_app

    service.storage.checkpoint_in_background()

    def extend(app: FastAPI, hooks: AppHooks) -> None:
        def add_ehsm_action(name: str, handler: EhsmHandler, fields: frozenset[str]) -> None:
            hooks.ehsm_actions[name] = EhsmAction(handler, fields)

        add_attestation_routes(app, attestation, authenticated=hooks.authenticated, call=hooks.call,
                               apikey_of=hooks.apikey_of, add_ehsm_action=add_ehsm_action,
                               self_evidence=_self_evidence(options), registry=hooks.registry)

    app = create_app(service, open_enrollment=options.open_enrollment, extend=extend)
    if sock is None or os.environ.get("PPML_WORKER_INDEX") == "0":
        log.info("ppml kms: storage %s; listening on https://%s:%d%s", service.storage.display_url,
                 options.host, options.port, f" ({options.workers} workers)" if sock is not None else "")
    logging.getLogger("ppml.kms.access").setLevel(logging.INFO if options.access_log else logging.WARNING)
    try:
        run_https(app, host=options.host, port=options.port, cert=cert, key=key, sock=sock)
    finally:
        service.close()
    return 0
