"""The embedded KMS: apps, primary keys with versions, data keys, and the audit chain.

This is the one implementation of the KMS logic; the HTTP server (native and eHSM surfaces)
and the in-process client both call it. Every key operation runs in one database transaction
together with its audit record, so an acknowledged operation is durable and audited, and a
failed one leaves no state but a failure record. Replay stamps of signed requests are spent by
the HTTP layer when it authenticates a request (:meth:`KmsService.spend_replay_stamps`), before
any operation runs.

The wrapped-key format is drawn in :mod:`ppml.kms.wrapping`, the audit chain in :mod:`ppml.kms.audit`;
the value types are in :mod:`ppml.kms.types`, and :mod:`ppml.kms.embedded` is the in-process client.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, bindparam, delete, insert, select, update

from ppml.core._files import write_private
from ppml.core.keys import DATA_KEY_SIZE
from ppml.core.rootkey import RootKey
from ppml.errors import (
    InvalidCiphertext,
    KeyDisabled,
    KeyNotFound,
    KmsRequestRejected,
    PermissionDenied,
    PpmlError,
    TokenRejected,
    UsageError,
)
from ppml.kms import audit, wrapping
from ppml.kms import storage as db
from ppml.kms.dialects import KmsDialect, dialect_for
from ppml.kms.release import AttestedCaller, ReleaseGate, check_release, seal_for_tee, validate_release_policy
from ppml.kms.replay import stamp_rows
from ppml.kms.types import (
    DISABLED,
    ENABLED,
    KEYSPECS,
    MAX_AAD,
    MAX_DATA_KEY_LEN,
    ORIGINS,
    PENDING_DELETION,
    AuditReport,
    Credentials,
    DataKeyRequest,
    KeyDescription,
    RequestContext,
    describe_row,
)
from ppml.store import Storage, open_database

__all__ = ["KmsService"]

_ROLE_ADMIN, _ROLE_APP = "admin", "app"

# Statements built once: building SQLAlchemy constructs per call cost more than the SQL itself.
_SELECT_KEY = select(db.keys).where(db.keys.c.key_id == bindparam("key_id"))
_SELECT_MATERIAL = select(db.key_versions.c.material_sealed).where(
    db.key_versions.c.key_id == bindparam("key_id"), db.key_versions.c.version == bindparam("version")
)



class KmsService:
    """The KMS logic over a :class:`Storage` and a :class:`RootKey`. Thread-safe."""

    def __init__(
        self, storage: Storage, root: RootKey, *, now: Callable[[], float] = time.time,
        release_gate: ReleaseGate | None = None,
    ) -> None:
        self.storage = storage
        self._root = root
        self._now = now
        self._release_gate = release_gate
        self._materials: dict[tuple[str, int], AESGCM] = {}
        self._apikeys: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._replay_inserts = 0
        self._dialect: KmsDialect = dialect_for(storage)

    @property
    def runs_inline(self) -> bool:
        """Whether short database work should run on the caller's event loop (SQLite) rather than a
        thread (PostgreSQL's network round trips); the HTTP layer asks this, not which database."""
        return self._dialect.runs_inline

    # -- start-up ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        *,
        data_dir: Path,
        db_url: str | None = None,
        passphrase_file: Path | None = None,
        now: Callable[[], float] = time.time,
        release_gate: ReleaseGate | None = None,
    ) -> tuple[KmsService, Credentials | None]:
        """Open (and on first start, initialise) the database, the root key and the KMS in
        ``data_dir`` (:func:`ppml.store.open_database`, then :meth:`attach`).

        Raises:
            RootKeyMismatch: the database was created under another root key.
        """
        storage, root = open_database(data_dir=data_dir, db_url=db_url, passphrase_file=passphrase_file)
        return cls.attach(storage, root, data_dir=data_dir, now=now, release_gate=release_gate)

    @classmethod
    def attach(cls, storage: Storage, root: RootKey, *, data_dir: Path, now: Callable[[], float] = time.time,
               release_gate: ReleaseGate | None = None) -> tuple[KmsService, Credentials | None]:
        """The KMS on an open database: migrates its tables and, on first start, writes the admin
        credentials to ``data_dir/admin.credentials`` (0600), which it returns (None afterwards).
        ``release_gate`` verifies attestation tokens for keys with a release policy (None: such
        keys never release)."""
        db.migrate(storage)
        service = cls(storage, root, now=now, release_gate=release_gate)
        admin = service._bootstrap_admin(data_dir / "admin.credentials")
        return service, admin

    def _bootstrap_admin(self, path: Path) -> Credentials | None:
        with self.storage.transaction() as conn:
            exists = conn.execute(select(db.apps.c.appid).where(db.apps.c.role == _ROLE_ADMIN)).first()
            if exists:
                return None
            credentials = self._insert_app(conn, _ROLE_ADMIN)
            self._append_audit(conn, RequestContext(appid=credentials.appid), "Bootstrap", None, None, "ok")
        write_private(path, (credentials.to_json() + "\n").encode())
        return credentials

    @property
    def root_key(self) -> RootKey:
        """For wiring a co-hosted service onto the same database (it seals its own secrets)."""
        return self._root

    def close(self) -> None:
        self.storage.dispose()

    # -- apps ----------------------------------------------------------------------------------

    def _insert_app(self, conn: Connection, role: str) -> Credentials:
        appid = str(uuid.uuid4())
        apikey = secrets.token_urlsafe(32)
        conn.execute(
            insert(db.apps).values(
                appid=appid,
                apikey_sealed=self._root.seal(apikey.encode(), "apps", appid),
                role=role,
                created=self._datetime(),
                enabled=True,
            )
        )
        return Credentials(appid, apikey)

    def enroll(self, ctx: RequestContext | None = None) -> Credentials:
        """Create an app. ``ctx`` is the admin's request (None when enrollment is open)."""
        if ctx is not None and self.role(ctx.appid) != _ROLE_ADMIN:
            raise PermissionDenied("only the admin credential may enroll applications")
        actor = ctx or RequestContext(appid="")

        def op(conn: Connection) -> Credentials:
            credentials = self._insert_app(conn, _ROLE_APP)
            return credentials

        credentials = self._run(actor, "Enroll", None, op)
        return credentials

    def apikey(self, appid: str) -> bytes | None:
        """The app's apikey (for request signatures), or None if unknown or disabled."""
        cached = self._apikeys.get(appid)
        if cached is not None:
            return cached
        with self.storage.transaction() as conn:
            row = conn.execute(
                select(db.apps.c.apikey_sealed, db.apps.c.enabled).where(db.apps.c.appid == appid)
            ).first()
        if row is None or not row.enabled:
            return None
        apikey = self._root.open(bytes(row.apikey_sealed), "apps", appid)
        self._apikeys[appid] = apikey
        return apikey

    def role(self, appid: str) -> str | None:
        with self.storage.transaction() as conn:
            row = conn.execute(select(db.apps.c.role).where(db.apps.c.appid == appid)).first()
        return row.role if row else None

    # -- keys ----------------------------------------------------------------------------------

    def create_key(
        self,
        ctx: RequestContext,
        *,
        keyspec: str = "EH_AES_GCM_256",
        origin: str = "EH_INTERNAL_KEY",
        description: str = "",
        release_policy: dict[str, Any] | None = None,
    ) -> KeyDescription:
        if keyspec not in KEYSPECS:
            raise KmsRequestRejected(f"unsupported keyspec {keyspec!r}; use one of {sorted(KEYSPECS)}")
        if origin not in ORIGINS:
            raise KmsRequestRejected(f"unsupported origin {origin!r}; use EH_INTERNAL_KEY")
        if len(description) > 1024:
            raise KmsRequestRejected("description longer than 1024 characters")
        try:
            release_policy = validate_release_policy(release_policy)
        except UsageError as exc:
            raise KmsRequestRejected(f"release policy: {exc}") from None
        key_id = str(uuid.uuid4())

        def op(conn: Connection) -> KeyDescription:
            now = self._datetime()
            conn.execute(
                insert(db.keys).values(
                    key_id=key_id, owner=ctx.appid, keyspec=keyspec, origin=origin,
                    description=description, state=ENABLED, deletion_time=None, current_version=1,
                    created=now, release_policy=json.dumps(release_policy) if release_policy else None,
                )
            )
            self._insert_version(conn, key_id, ctx.appid, 1, KEYSPECS[keyspec], now)
            return self._describe(conn, ctx.appid, key_id)

        return self._run(ctx, "CreateKey", key_id, op)

    def _insert_version(self, conn: Connection, key_id: str, owner: str, version: int, size: int,
                        now: datetime) -> None:
        material = os.urandom(size)
        conn.execute(
            insert(db.key_versions).values(
                key_id=key_id, version=version, created=now,
                material_sealed=self._root.seal(material, "key_versions", key_id, owner, version),
            )
        )

    def list_keys(self, ctx: RequestContext) -> list[KeyDescription]:
        def op(conn: Connection) -> list[KeyDescription]:
            self._purge_expired(conn, ctx.appid)
            rows = conn.execute(
                select(db.keys).where(db.keys.c.owner == ctx.appid).order_by(db.keys.c.created)
            ).all()
            return [describe_row(row) for row in rows]

        return self._run(ctx, "ListKey", None, op, audit_success=False, durable=False)

    def describe_key(self, ctx: RequestContext, key_id: str) -> KeyDescription:
        return self._run(ctx, "DescribeKey", key_id, lambda conn: self._describe(conn, ctx.appid, key_id),
                         audit_success=False, durable=False)

    def set_enabled(self, ctx: RequestContext, key_id: str, enabled: bool) -> KeyDescription:
        def op(conn: Connection) -> KeyDescription:
            current = self._describe(conn, ctx.appid, key_id)
            if current.state == PENDING_DELETION:
                raise KeyDisabled(key_id, "pending deletion (cancel the deletion first)")
            conn.execute(
                update(db.keys).where(db.keys.c.key_id == key_id)
                .values(state=ENABLED if enabled else DISABLED)
            )
            return self._describe(conn, ctx.appid, key_id)

        return self._run(ctx, "EnableKey" if enabled else "DisableKey", key_id, op)

    def schedule_deletion(self, ctx: RequestContext, key_id: str, *, days: int = 7) -> KeyDescription | None:
        """Make the key unusable now and delete it after ``days`` (0: delete at once)."""
        if not 0 <= days <= 365:
            raise KmsRequestRejected("deletion window must be 0..365 days")

        def op(conn: Connection) -> KeyDescription | None:
            self._describe(conn, ctx.appid, key_id)
            if days == 0:
                self._delete_key(conn, key_id)
                return None
            conn.execute(
                update(db.keys).where(db.keys.c.key_id == key_id).values(
                    state=PENDING_DELETION, deletion_time=self._datetime() + timedelta(days=days)
                )
            )
            return self._describe(conn, ctx.appid, key_id)

        return self._run(ctx, "DeleteKey", key_id, op)

    def delete_all_keys(self, ctx: RequestContext) -> list[str]:
        """Delete every key of the app at once, in ONE transaction with one audit record per key;
        returns the deleted key ids."""

        def op(conn: Connection) -> list[str]:
            rows = conn.execute(select(db.keys.c.key_id).where(db.keys.c.owner == ctx.appid)
                                .order_by(db.keys.c.created, db.keys.c.key_id)).all()
            deleted = [row.key_id for row in rows]
            for key_id in deleted:
                self._delete_key(conn, key_id)
            self._append_audits(conn, [(ctx, "DeleteKey", key_id, None, "ok") for key_id in deleted])
            return deleted

        return self._run(ctx, "DeleteAllKey", None, op, audit_success=False)

    def cancel_deletion(self, ctx: RequestContext, key_id: str) -> KeyDescription:
        def op(conn: Connection) -> KeyDescription:
            current = self._describe(conn, ctx.appid, key_id)
            if current.state != PENDING_DELETION:
                raise KmsRequestRejected(f"key {key_id!r} is not pending deletion")
            conn.execute(
                update(db.keys).where(db.keys.c.key_id == key_id)
                .values(state=DISABLED, deletion_time=None)
            )
            return self._describe(conn, ctx.appid, key_id)

        return self._run(ctx, "CancelKeyDeletion", key_id, op)

    def rotate(self, ctx: RequestContext, key_id: str) -> KeyDescription:
        """Add a new version for new wraps; older versions still unwrap."""

        def op(conn: Connection) -> KeyDescription:
            current = self._usable(conn, ctx.appid, key_id)
            version = current.current_version + 1
            self._insert_version(conn, key_id, ctx.appid, version, KEYSPECS[current.keyspec], self._datetime())
            conn.execute(update(db.keys).where(db.keys.c.key_id == key_id).values(current_version=version))
            return self._describe(conn, ctx.appid, key_id)

        return self._run(ctx, "RotateKey", key_id, op)

    # -- cryptographic operations --------------------------------------------------------------

    def generate_data_key(
        self, ctx: RequestContext, key_id: str, *, length: int = DATA_KEY_SIZE,
        aad: bytes = b"", with_plaintext: bool = True,
    ) -> tuple[bytes | None, bytes]:
        """A fresh random data key: (plaintext or None, wrapped)."""
        request = DataKeyRequest.generate(ctx, key_id, length=length, aad=aad, with_plaintext=with_plaintext)
        wrapped = self._one(request)
        return (request.data if with_plaintext else None), wrapped

    def encrypt(self, ctx: RequestContext, key_id: str, plaintext: bytes, aad: bytes = b"") -> bytes:
        return self._one(DataKeyRequest.encrypt(ctx, key_id, plaintext, aad))

    def decrypt(self, ctx: RequestContext, key_id: str, ciphertext: bytes, aad: bytes = b"") -> bytes:
        """Unwrap a data key (or decrypt a small ciphertext) made under ``key_id``.

        Raises PermissionDenied for a key with a release policy: use :meth:`release_to_tee`.
        """
        return self._one(DataKeyRequest.decrypt(ctx, key_id, ciphertext, aad))

    def _one(self, request: DataKeyRequest) -> bytes:
        (result,) = self.run_data_key_batch([request])
        if isinstance(result, PpmlError):
            raise result
        return result

    def run_data_key_batch(self, requests: Sequence[DataKeyRequest]) -> list[bytes | PpmlError]:
        """Run data-key operations (generate, encrypt, decrypt) in ONE transaction: group commit.

        Each request keeps its own outcome — its result (wrapped key or ciphertext; plaintext for
        Decrypt) or its error — and its own audit record, exactly as if it ran alone (replay
        stamps were spent when the request was authenticated); a batch only shares the commit
        and the statements. A storage fault fails every
        request in the batch and leaves no state.
        """
        results: list[bytes | PpmlError | None] = [None] * len(requests)
        try:
            with self.storage.transaction(durable=False) as conn:
                keys, head = self._dialect.begin_batch(conn, _well_formed({r.key_id for r in requests}))
                audits: list[tuple[RequestContext, str, str | None, int | None, str]] = []
                for index, request in enumerate(requests):
                    try:
                        value, version = self._data_key_op(conn, keys, request)
                    except PpmlError as exc:
                        results[index] = exc
                        audits.append((request.ctx, request.operation, request.key_id, None, type(exc).__name__))
                    else:
                        results[index] = value
                        audits.append((request.ctx, request.operation, request.key_id, version, "ok"))
                self._append_audits(conn, audits, head=head)
        except PpmlError as exc:  # the storage is down: nothing of the batch happened
            return [exc] * len(requests)
        return [r for r in results if r is not None]

    def _data_key_op(self, conn: Connection, keys: dict[str, Any], request: DataKeyRequest) -> tuple[bytes, int]:
        key = self._usable(conn, request.ctx.appid, request.key_id, prefetched=keys)
        if request.operation == "Decrypt":
            plaintext, version = self._open_with(conn, key, request.data, request.aad)
            if key.release_policy is not None:
                raise PermissionDenied(
                    f"key {request.key_id!r} releases data keys only to attested TEEs: present an attestation token"
                )
            return plaintext, version
        wrapped = self._wrap(conn, key, request.data, request.aad)
        return wrapped, key.current_version

    def release_to_tee(self, ctx: RequestContext, key_id: str, ciphertext: bytes, aad: bytes = b"", *,
                       token: str) -> str:
        """Unwrap a data key for an attested TEE: returns it as a JWE to the token's TEE key."""
        self._check_aad(aad)
        ctx, caller = self._attested(ctx, token)

        def op(conn: Connection) -> str:
            plaintext, key = self._open(conn, ctx, key_id, ciphertext, aad)
            return self._release(key, caller, plaintext)

        return self._run(ctx, "DecryptForTee", key_id, op, version_of=lambda _: wrapping.version_of(ciphertext),
                         durable=False)

    def generate_data_key_for_tee(self, ctx: RequestContext, key_id: str, *, length: int = DATA_KEY_SIZE,
                                  aad: bytes = b"", token: str) -> tuple[str, bytes]:
        """A fresh data key for an attested TEE: (JWE of the plaintext, wrapped)."""
        if not 1 <= length <= MAX_DATA_KEY_LEN:
            raise KmsRequestRejected(f"keylen must be 1..{MAX_DATA_KEY_LEN}")
        self._check_aad(aad)
        ctx, caller = self._attested(ctx, token)
        plaintext = os.urandom(length)

        def op(conn: Connection) -> tuple[str, bytes]:
            key = self._usable(conn, ctx.appid, key_id)
            return self._release(key, caller, plaintext), self._wrap(conn, key, plaintext, aad)

        return self._run(ctx, "GenerateDataKeyForTee", key_id, op, version_of=lambda r: wrapping.version_of(r[1]),
                         durable=False)

    def _attested(self, ctx: RequestContext, token: str) -> tuple[RequestContext, AttestedCaller]:
        if self._release_gate is None:
            raise PermissionDenied("this KMS has no attestation service configured to verify tokens")
        try:
            caller = self._release_gate.verify(token, now=self._now())
        except TokenRejected as exc:
            self._audit_failure(ctx, "VerifyToken", None, f"TokenRejected: {exc.reason}"[:48])
            raise
        claims = caller.claims.to_dict() if hasattr(caller.claims, "to_dict") else dict(caller.claims)
        presented = {"token_id": caller.token_id, "policy_ids": list(caller.policy_ids),
                     "simulated": caller.simulated, "claims": claims}
        return dataclasses.replace(ctx, claims=presented), caller

    @staticmethod
    def _release(key: KeyDescription, caller: AttestedCaller, plaintext: bytes) -> str:
        if key.release_policy is not None:
            check_release(key.release_policy, caller)
        public = caller.tee_public_key
        if public is None:
            raise TokenRejected("the token names no TEE public key to release the key to")
        return seal_for_tee(plaintext, public)

    def rewrap(self, ctx: RequestContext, key_id: str, ciphertext: bytes, aad: bytes = b"") -> bytes:
        """Re-wrap under the key's newest version without returning the plaintext."""
        self._check_aad(aad)

        def op(conn: Connection) -> bytes:
            plaintext, described = self._open(conn, ctx, key_id, ciphertext, aad)
            return self._wrap(conn, described, plaintext, aad)

        return self._run(ctx, "ReEncrypt", key_id, op, durable=False)

    def _wrap(self, conn: Connection, key: KeyDescription, plaintext: bytes, aad: bytes) -> bytes:
        version = key.current_version
        return wrapping.seal(self._material(conn, key, version), key_id=key.key_id, owner=key.owner,
                             version=version, plaintext=plaintext, aad=aad)

    def _open(self, conn: Connection, ctx: RequestContext, key_id: str, ciphertext: bytes,
              aad: bytes) -> tuple[bytes, KeyDescription]:
        key = self._usable(conn, ctx.appid, key_id)
        return self._open_with(conn, key, ciphertext, aad)[0], key

    def _open_with(self, conn: Connection, key: KeyDescription, ciphertext: bytes, aad: bytes) -> tuple[bytes, int]:
        version = wrapping.wrapped_version(ciphertext, newest=key.current_version)
        plaintext = wrapping.unseal(self._material(conn, key, version), ciphertext, key_id=key.key_id,
                                    owner=key.owner, version=version, aad=aad)
        return plaintext, version

    @staticmethod
    def _check_aad(aad: bytes) -> None:
        if len(aad) > MAX_AAD:
            raise KmsRequestRejected(f"aad longer than {MAX_AAD} bytes")

    # -- lookups -------------------------------------------------------------------------------

    def _describe(self, conn: Connection, appid: str, key_id: str, *,
                  prefetched: dict[str, Any] | None = None) -> KeyDescription:
        if not key_id or len(key_id) > 64:
            raise KeyNotFound(key_id[:64])
        if prefetched is not None:
            row = prefetched.get(key_id)
        else:
            row = conn.execute(_SELECT_KEY, {"key_id": key_id}).first()
        if row is None or row.owner != appid:
            # Unknown and foreign key ids look the same.
            raise KeyNotFound(key_id)
        described = describe_row(row)
        expired = described.deletion_time is not None and described.deletion_time <= self._datetime()
        if described.state == PENDING_DELETION and expired:
            self._delete_key(conn, key_id)
            if prefetched is not None:
                prefetched.pop(key_id, None)
            raise KeyNotFound(key_id)
        return described

    def _usable(self, conn: Connection, appid: str, key_id: str, *,
                prefetched: dict[str, Any] | None = None) -> KeyDescription:
        described = self._describe(conn, appid, key_id, prefetched=prefetched)
        if described.state != ENABLED:
            raise KeyDisabled(key_id, "disabled" if described.state == DISABLED else "pending deletion")
        return described

    def _material(self, conn: Connection, key: KeyDescription, version: int) -> AESGCM:
        cache_key = (key.key_id, version)
        aead = self._materials.get(cache_key)
        if aead is None:
            row = conn.execute(_SELECT_MATERIAL, {"key_id": key.key_id, "version": version}).first()
            if row is None:
                raise InvalidCiphertext()
            aead = AESGCM(self._root.open(bytes(row[0]), "key_versions", key.key_id, key.owner, version))
            self._materials[cache_key] = aead
        return aead

    def _delete_key(self, conn: Connection, key_id: str) -> None:
        conn.execute(delete(db.key_versions).where(db.key_versions.c.key_id == key_id))
        conn.execute(delete(db.keys).where(db.keys.c.key_id == key_id))
        with self._lock:
            for cached in [k for k in self._materials if k[0] == key_id]:
                del self._materials[cached]

    def _purge_expired(self, conn: Connection, appid: str) -> None:
        expired = conn.execute(
            select(db.keys.c.key_id).where(
                db.keys.c.owner == appid, db.keys.c.state == PENDING_DELETION,
                db.keys.c.deletion_time <= self._datetime(),
            )
        ).all()
        for (key_id,) in expired:
            self._delete_key(conn, key_id)

    # -- transactions, replay and audit --------------------------------------------------------

    def _datetime(self) -> datetime:
        return datetime.fromtimestamp(self._now(), UTC)

    def _run(
        self,
        ctx: RequestContext,
        operation: str,
        key_id: str | None,
        op: Callable[[Connection], Any],
        *,
        audit_success: bool = True,
        version_of: Callable[[Any], int | None] | None = None,
        durable: bool = True,
    ) -> Any:
        """Run ``op`` in one transaction with its audit record (a failure is audited too)."""
        try:
            with self.storage.transaction(durable=durable) as conn:
                result = op(conn)
                if audit_success:
                    version = version_of(result) if version_of else None
                    self._append_audit(conn, ctx, operation, key_id, version, "ok")
                return result
        except PpmlError as exc:
            self._audit_failure(ctx, operation, key_id, type(exc).__name__)
            raise

    def _audit_failure(self, ctx: RequestContext, operation: str, key_id: str | None, outcome: str) -> None:
        try:
            with self.storage.transaction() as conn:
                self._append_audit(conn, ctx, operation, key_id, None, outcome)
        except PpmlError:
            pass  # the storage is down: the original error is what the caller needs

    def record_rejected_request(self, ctx: RequestContext, operation: str, outcome: str) -> None:
        """Audit a request refused before it reached an operation (bad signature, replay)."""
        self._audit_failure(ctx, operation, None, outcome)

    def spend_replay_stamps(self, contexts: Sequence[RequestContext]) -> list[bool]:
        """Spend each authenticated request's replay stamp (its timestamp/nonce), in ONE
        transaction: True where the stamp was fresh, False for a replay (seen before, or earlier
        in ``contexts``). The HTTP layer calls this for every authenticated request before it
        does anything else (``ppml.kms.http.auth``), so a stamp is spent exactly once whatever the
        route and whatever happens to the request afterwards; operations never look at stamps.

        Raises:
            ServiceUnavailable: the storage is down (no stamp was spent).
        """
        if not any(ctx.replay_stamp is not None for ctx in contexts):
            return [True] * len(contexts)
        with self.storage.statements() as conn:  # one INSERT … RETURNING: atomic alone
            return self._consume_replay_stamps(conn, contexts)

    def _consume_replay_stamps(self, conn: Connection, contexts: Sequence[RequestContext]) -> list[bool]:
        """Record each request's stamp; False for a stamp seen before (in the database or earlier
        in ``contexts``). One statement whatever the number: ``INSERT … ON CONFLICT DO NOTHING``
        returns the rows it inserted, and on PostgreSQL a concurrent insert of the same stamp by
        another replica waits for that transaction, then counts as seen."""
        fresh, rows, params = stamp_rows(contexts)
        inserted = self._dialect.insert_stamps(conn, params) if params else set()
        return self._stamps_seen(conn, fresh, rows, inserted)

    def _stamps_seen(self, conn: Connection, fresh: list[bool], rows: dict[tuple[str, str], int],
                     inserted: set[tuple[str, str]]) -> list[bool]:
        for row, index in rows.items():
            fresh[index] = row in inserted
        self._replay_inserts += len(rows)
        if self._replay_inserts >= 1000:
            self._replay_inserts = 0
            conn.execute(delete(db.replay).where(db.replay.c.expires < int(self._now())))
        return fresh

    def _append_audit(self, conn: Connection, ctx: RequestContext, operation: str, key_id: str | None,
                      key_version: int | None, outcome: str) -> None:
        self._append_audits(conn, [(ctx, operation, key_id, key_version, outcome)])

    def _append_audits(self, conn: Connection,
                       entries: Sequence[tuple[RequestContext, str, str | None, int | None, str]], *,
                       head: tuple[int, bytes] | None = None) -> None:
        """Append records to the chain: the head row is read (locked on PostgreSQL) — unless the
        caller already did, in this transaction — and updated once, the records inserted in one
        statement."""
        if not entries:
            return
        records, new_head = audit.chain(entries, head if head is not None else self._dialect.read_head(conn),
                                        when=self._datetime(), mac=self._root.audit_mac)
        self._dialect.append_audit(conn, records, new_head)

    def audit_head(self) -> tuple[int, bytes]:
        """The audit chain's head: the last record's sequence number and MAC ((0, 32 zero bytes)
        for an empty chain). Not secret: the MAC is keyed by the root key, so knowing it lets
        nobody forge a record; watched from outside (metrics), it anchors the chain's history."""
        with self.storage.transaction(durable=False) as conn:
            head = conn.execute(select(db.audit_head.c.seq, db.audit_head.c.mac)).one()
        return int(head.seq), bytes(head.mac)

    def verify_audit(self) -> AuditReport:
        """Walk the chain: any altered, deleted, inserted or reordered record breaks it."""
        with self.storage.transaction() as conn:
            head = conn.execute(select(db.audit_head.c.seq, db.audit_head.c.mac)).one()
            rows = conn.execute(select(db.audit).order_by(db.audit.c.seq))
            return audit.verify_chain(rows, (int(head.seq), bytes(head.mac)), mac=self._root.audit_mac)

    def audit_records(self, *, limit: int = 100) -> list[dict[str, Any]]:
        with self.storage.transaction() as conn:
            rows = conn.execute(select(db.audit).order_by(db.audit.c.seq.desc()).limit(limit)).all()
        return [
            {k: getattr(r, k) for k in audit.FIELDS}
            for r in reversed(rows)
        ]


def _well_formed(key_ids: set[str]) -> list[str]:
    """Key ids that could exist (the column holds 64 characters): the others match no row."""
    return [k for k in key_ids if k and len(k) <= 64]
