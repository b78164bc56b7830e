"""Contract tests: every ``KeyManagementService`` implementation behaves the same.

:class:`KeyManagementServiceContract` holds the tests; each ``Test*`` subclass provides one
implementation through the ``kms`` fixture (and ``other_tenant_kms``, a second tenant of the same
service):

* ``local:`` — :class:`LocalKeyStore` in a temporary directory (the "other tenant" is a second
  store directory: the only isolation a file store has);
* embedded — :class:`KmsService` in-process, one enrolled app per tenant;
* ``ppml+https://`` — :class:`RemoteKms` against a real ``ppml serve --tls-dev`` subprocess on
  SQLite and on PostgreSQL, TLS verified against the server's development CA;
* ``ehsm+https://`` — :class:`EhsmKms` against the eHSM surface of ``ppml serve``.

Servers start once per module and backend (SQLite: shared by the native and the eHSM classes,
the two surfaces of one server; PostgreSQL: on a fresh database of the session cluster), and
apps are enrolled through the API with the admin credential, as an operator would. ``kms`` is
always built by ``open_kms`` from a URI, so the registry and URI parsing are under test too.
Operator operations only the server has (rotation, disable/enable, scheduled deletion,
durability across a restart) are in :class:`ServerKeyLifecycleTests`, mixed into the two
native-API classes.

Where src deviates from the contract, the test is a strict ``xfail`` naming the bug, so it turns
into a failure (and the mark must go) once the bug is fixed.
"""

from __future__ import annotations

import dataclasses
import io
import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from ppml.core.envelope import EnvelopeHeader, decrypt_bytes, decrypt_file, encrypt_bytes, encrypt_file
from ppml.core.keys import DATA_KEY_SIZE, SECRET_ACCESS, DataKey, KeyInfo
from ppml.errors import (
    InvalidCiphertext,
    KeyDisabled,
    KeyNotFound,
    KeyServiceError,
    KeyStoreUnreadable,
)
from ppml.kms.ehsm_client import EhsmKms
from ppml.kms.embedded import EmbeddedKms
from ppml.kms.local import LocalKeyStore
from ppml.kms.protocol import KeyManagementService
from ppml.kms.registry import open_kms
from ppml.kms.remote import KmsEndpoint, RemoteKms, load_credentials, write_credentials
from ppml.kms.service import KmsService
from ppml.kms.tls import client_context
from ppml.kms.types import Credentials, RequestContext
from server_fixtures import new_database
from servers import KmsServer, PostgresCluster

#: Key ids no key service issues; "#" and "?" are special in a URL, "%2F" is an escaped "/".
MALFORMED_KEY_IDS = ["no-such-key", "#", "x?y", "a#b", "%2F"]

# service.py's wrapped-key layout: version byte, then the primary key version (uint32, big-endian).
_KEY_VERSION = slice(1, 5)


def _key_version(wrapped: bytes) -> int:
    return int.from_bytes(wrapped[_KEY_VERSION], "big")


def _unknown_key_id() -> str:
    # A well-formed id (eHSM checks the UUID shape before it looks anything up) that names no key.
    return str(uuid.uuid4())


def _tamperings(wrapped: bytes) -> Iterator[tuple[str, bytes]]:
    for position in range(len(wrapped)):
        flipped = bytearray(wrapped)
        flipped[position] ^= 0x01
        yield f"bit 0 of byte {position} flipped", bytes(flipped)
    for position in (0, len(wrapped) // 2, len(wrapped) - 1):
        flipped = bytearray(wrapped)
        flipped[position] ^= 0x80
        yield f"bit 7 of byte {position} flipped", bytes(flipped)
    for keep in (len(wrapped) - 1, len(wrapped) - 16, len(wrapped) // 2, 1):
        yield f"truncated to {keep} bytes", wrapped[:keep]
    yield "one byte appended", wrapped + b"\0"
    yield "doubled", wrapped + wrapped


def _error_shape(exc: BaseException, key_id: str) -> tuple[Any, ...]:
    """Everything a caller can observe of an error, with the key id it was about blanked out."""
    assert isinstance(exc, KeyServiceError)
    blank = lambda value: value.replace(key_id, "<key id>") if isinstance(value, str) else value  # noqa: E731
    fields = {name: blank(value) for name, value in vars(exc).items()}
    return type(exc), blank(str(exc)), blank(exc.diagnostics()), exc.exit_code, tuple(sorted(fields.items()))


class RecordingTransport(httpx.HTTPTransport):
    """A verified-TLS transport that keeps every response's status and body (for wire checks)."""

    def __init__(self, ca: Path) -> None:
        super().__init__(verify=client_context(ca))
        self.responses: list[tuple[int, bytes]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.responses.append((response.status_code, response.read()))
        return response


class KeyManagementServiceContract:
    """What every ``KeyManagementService`` promises. Subclasses provide the fixtures:

    ``kms``               the implementation under test
    ``other_tenant_kms``  the same service as seen by another tenant (another app)
    ``wire_log``          responses ``other_tenant_kms`` received over HTTP, or None
    ``secrets``           strings that must never show in a repr or a file (apikeys, key material)
    ``private_paths``     paths that must never be recorded in a file header (credentials, CA)
    """

    @pytest.fixture
    def kms(self) -> KeyManagementService:
        raise NotImplementedError("a contract subclass provides the kms fixture")

    @pytest.fixture
    def other_tenant_kms(self) -> KeyManagementService:
        raise NotImplementedError("a contract subclass provides the other_tenant_kms fixture")

    @pytest.fixture
    def wire_log(self) -> list[tuple[int, bytes]] | None:
        return None

    @pytest.fixture
    def secrets(self) -> list[str]:
        return []

    @pytest.fixture
    def private_paths(self) -> list[Path]:
        return []

    @pytest.fixture
    def key_id(self, kms: KeyManagementService) -> str:
        return kms.create_primary_key(description="contract test key").key_id

    # -- shape ------------------------------------------------------------------------------

    def test_is_a_key_management_service(self, kms: KeyManagementService) -> None:
        assert isinstance(kms, KeyManagementService)

    def test_repr_and_str_hide_secrets(self, kms: KeyManagementService, key_id: str,
                                       secrets: list[str]) -> None:
        for text in (repr(kms), str(kms)):
            for secret in secrets:
                assert secret not in text

    # -- primary keys -----------------------------------------------------------------------

    def test_created_key_is_listed_and_enabled(self, kms: KeyManagementService) -> None:
        info = kms.create_primary_key(description="listed")
        assert isinstance(info, KeyInfo)
        assert info.key_id
        assert info.enabled
        listed = {k.key_id: k for k in kms.list_keys()}
        assert info.key_id in listed
        assert listed[info.key_id].enabled

    def test_created_keys_have_distinct_ids(self, kms: KeyManagementService) -> None:
        first, second = kms.create_primary_key(), kms.create_primary_key()
        assert first.key_id != second.key_id
        assert {first.key_id, second.key_id} <= {k.key_id for k in kms.list_keys()}

    def test_listed_key_matches_the_created_one(self, kms: KeyManagementService) -> None:
        info = kms.create_primary_key(description="payroll 2024")
        listed = {k.key_id: k for k in kms.list_keys()}[info.key_id]
        assert info.description == listed.description == "payroll 2024"
        assert info.enabled and listed.enabled

    # -- data keys --------------------------------------------------------------------------

    def test_generate_data_key_is_32_bytes_and_wrapped_hides_it(self, kms: KeyManagementService,
                                                                key_id: str) -> None:
        generated = kms.generate_data_key(key_id)
        plaintext = generated.data_key.export(SECRET_ACCESS)
        assert generated.key_id == key_id
        assert len(plaintext) == DATA_KEY_SIZE == 32
        assert generated.wrapped
        assert plaintext not in generated.wrapped
        assert plaintext[:16] not in generated.wrapped and plaintext[16:] not in generated.wrapped

    def test_unwrap_returns_the_generated_key(self, kms: KeyManagementService, key_id: str) -> None:
        generated = kms.generate_data_key(key_id)
        unwrapped = kms.unwrap_data_key(key_id, generated.wrapped)
        assert isinstance(unwrapped, DataKey)
        assert unwrapped == generated.data_key
        assert unwrapped.export(SECRET_ACCESS) == generated.data_key.export(SECRET_ACCESS)

    def test_each_generation_is_fresh(self, kms: KeyManagementService, key_id: str) -> None:
        first, second = kms.generate_data_key(key_id), kms.generate_data_key(key_id)
        assert first.data_key != second.data_key
        assert first.wrapped != second.wrapped
        assert kms.unwrap_data_key(key_id, first.wrapped) == first.data_key
        assert kms.unwrap_data_key(key_id, second.wrapped) == second.data_key

    # -- associated data --------------------------------------------------------------------

    def test_associated_data_must_match(self, kms: KeyManagementService, key_id: str) -> None:
        generated = kms.generate_data_key(key_id, associated_data=b"ctx")
        assert kms.unwrap_data_key(key_id, generated.wrapped, associated_data=b"ctx") == generated.data_key
        for wrong in (b"ctx2", b"CTX", b"ct", b"\0ctx"):
            with pytest.raises(InvalidCiphertext):
                kms.unwrap_data_key(key_id, generated.wrapped, associated_data=wrong)
        with pytest.raises(InvalidCiphertext):
            kms.unwrap_data_key(key_id, generated.wrapped)

    def test_associated_data_cannot_be_added_later(self, kms: KeyManagementService, key_id: str) -> None:
        generated = kms.generate_data_key(key_id)
        with pytest.raises(InvalidCiphertext):
            kms.unwrap_data_key(key_id, generated.wrapped, associated_data=b"ctx")
        assert kms.unwrap_data_key(key_id, generated.wrapped) == generated.data_key

    # -- tampering --------------------------------------------------------------------------

    def test_tampered_wrapped_key_is_invalid_ciphertext(self, kms: KeyManagementService, key_id: str) -> None:
        generated = kms.generate_data_key(key_id)
        accepted = []
        for what, tampered in _tamperings(generated.wrapped):
            try:
                kms.unwrap_data_key(key_id, tampered)
            except InvalidCiphertext:
                continue
            except KeyServiceError as exc:
                accepted.append(f"{what}: {type(exc).__name__}: {exc}")
            else:
                accepted.append(f"{what}: unwrapped")
        assert accepted == []
        assert kms.unwrap_data_key(key_id, generated.wrapped) == generated.data_key

    # -- key ids ----------------------------------------------------------------------------

    def test_unknown_key_id_is_key_not_found(self, kms: KeyManagementService, key_id: str) -> None:
        wrapped = kms.generate_data_key(key_id).wrapped
        unknown = _unknown_key_id()
        with pytest.raises(KeyNotFound) as generate_error:
            kms.generate_data_key(unknown)
        with pytest.raises(KeyNotFound) as unwrap_error:
            kms.unwrap_data_key(unknown, wrapped)
        assert generate_error.value.key_id == unknown
        assert unwrap_error.value.key_id == unknown

    @pytest.mark.parametrize("malformed", MALFORMED_KEY_IDS)
    def test_malformed_key_id_is_key_not_found(self, kms: KeyManagementService, key_id: str,
                                               malformed: str) -> None:
        # Key ids arrive from file headers, which anyone can write.
        generated = kms.generate_data_key(key_id)
        with pytest.raises(KeyNotFound):
            kms.generate_data_key(malformed)
        with pytest.raises(KeyNotFound):
            kms.unwrap_data_key(malformed, generated.wrapped)
        forged = EnvelopeHeader(kms=kms.uri, key_id=malformed, wrapped_data_key=generated.wrapped)
        with pytest.raises(InvalidCiphertext):
            decrypt_bytes(forged.to_bytes() + bytes(64), kms=kms)

    def test_wrapped_key_is_bound_to_its_primary_key(self, kms: KeyManagementService, key_id: str) -> None:
        other_key = kms.create_primary_key().key_id
        generated = kms.generate_data_key(key_id)
        with pytest.raises(InvalidCiphertext):
            kms.unwrap_data_key(other_key, generated.wrapped)
        generated_ad = kms.generate_data_key(key_id, associated_data=b"ctx")
        with pytest.raises(InvalidCiphertext):
            kms.unwrap_data_key(other_key, generated_ad.wrapped, associated_data=b"ctx")

    # -- tenants ----------------------------------------------------------------------------

    def test_other_tenant_cannot_use_a_key(self, kms: KeyManagementService,
                                           other_tenant_kms: KeyManagementService, key_id: str) -> None:
        wrapped = kms.generate_data_key(key_id).wrapped
        own_key = other_tenant_kms.create_primary_key().key_id
        with pytest.raises(KeyNotFound):
            other_tenant_kms.generate_data_key(key_id)
        with pytest.raises(KeyNotFound):
            other_tenant_kms.unwrap_data_key(key_id, wrapped)
        # Presented under the other tenant's own key, the wrapped key does not authenticate.
        with pytest.raises(InvalidCiphertext):
            other_tenant_kms.unwrap_data_key(own_key, wrapped)
        assert key_id not in {k.key_id for k in other_tenant_kms.list_keys()}
        assert own_key not in {k.key_id for k in kms.list_keys()}

    def test_foreign_key_is_indistinguishable_from_unknown(
        self, kms: KeyManagementService, other_tenant_kms: KeyManagementService, key_id: str,
        wire_log: list[tuple[int, bytes]] | None,
    ) -> None:
        wrapped = kms.generate_data_key(key_id).wrapped
        unknown = _unknown_key_id()

        def observe(target: str) -> tuple[Any, ...]:
            if wire_log is not None:
                wire_log.clear()
            shapes: list[Any] = []
            for call in (lambda: other_tenant_kms.generate_data_key(target),
                         lambda: other_tenant_kms.unwrap_data_key(target, wrapped)):
                with pytest.raises(KeyServiceError) as error:
                    call()
                shapes.append(_error_shape(error.value, target))
            if wire_log is not None:
                assert len(wire_log) == 2
                shapes += [(status, body.replace(target.encode(), b"<key id>")) for status, body in wire_log]
            return tuple(shapes)

        foreign, not_there = observe(key_id), observe(unknown)
        assert foreign == not_there
        assert foreign[0][0] is KeyNotFound

    # -- the envelope format over this KMS --------------------------------------------------

    def test_envelope_bytes_round_trip(self, kms: KeyManagementService, key_id: str,
                                       other_tenant_kms: KeyManagementService,
                                       private_paths: list[Path]) -> None:
        plaintext = b"contract test " * 1000
        envelope = encrypt_bytes(plaintext, kms=kms, key_id=key_id, associated_data=b"table=people")
        header, _ = EnvelopeHeader.read_from(io.BytesIO(envelope))
        self._check_header(header, kms, key_id, private_paths)
        assert decrypt_bytes(envelope, kms=kms) == plaintext
        assert decrypt_bytes(envelope, kms=kms, associated_data=b"table=people") == plaintext
        with pytest.raises(InvalidCiphertext):
            decrypt_bytes(envelope, kms=kms, associated_data=b"table=other")
        with pytest.raises(InvalidCiphertext):
            decrypt_bytes(envelope, kms=other_tenant_kms)

    def test_envelope_file_round_trip(self, kms: KeyManagementService, key_id: str, tmp_path: Path,
                                      secrets: list[str], private_paths: list[Path]) -> None:
        src, encrypted, decrypted = tmp_path / "plain.csv", tmp_path / "data.ppml", tmp_path / "out.csv"
        src.write_bytes(b"id,name\n" + b"".join(b"%d,person %d\n" % (i, i) for i in range(5000)))
        header = encrypt_file(src, encrypted, kms=kms, key_id=key_id, segment_size=4096)
        with encrypted.open("rb") as f:
            stored, _ = EnvelopeHeader.read_from(f)
        assert stored == header
        self._check_header(stored, kms, key_id, private_paths)
        data = encrypted.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data
        assert decrypt_file(encrypted, decrypted, kms=kms) == header
        assert decrypted.read_bytes() == src.read_bytes()

    @staticmethod
    def _check_header(header: EnvelopeHeader, kms: KeyManagementService, key_id: str,
                      private_paths: list[Path]) -> None:
        assert header.kms == kms.uri
        assert header.key_id == key_id
        assert urlsplit(header.kms).query == ""
        assert "?" not in header.kms and "credentials" not in header.kms and "ca=" not in header.kms
        for path in private_paths:
            assert str(path) not in header.kms
            assert path.name not in header.kms


# -- 1. local: ---------------------------------------------------------------------------------


class TestLocalKeyStore(KeyManagementServiceContract):
    @pytest.fixture
    def kms(self, tmp_path: Path) -> LocalKeyStore:
        return LocalKeyStore(tmp_path / "keys")

    @pytest.fixture
    def other_tenant_kms(self, tmp_path: Path) -> LocalKeyStore:
        # A store that exists (as an enrolled app does): a missing directory is KeyStoreUnreadable.
        store = LocalKeyStore(tmp_path / "other-keys")
        store.create_primary_key(description="the other store's own key")
        return store

    @pytest.fixture
    def secrets(self, kms: LocalKeyStore, key_id: str) -> list[str]:
        return [json.loads(p.read_text())["material"] for p in kms.directory.glob("*.key")]


# -- 2. embedded -------------------------------------------------------------------------------


@dataclasses.dataclass
class EmbeddedDeployment:
    service: KmsService
    admin: Credentials
    app: Credentials
    other_app: Credentials


class TestEmbedded(KeyManagementServiceContract):
    @pytest.fixture
    def deployment(self, tmp_path: Path) -> Iterator[EmbeddedDeployment]:
        service, admin = KmsService.open(data_dir=tmp_path / "kms")
        assert admin is not None
        try:
            ctx = RequestContext(appid=admin.appid)
            yield EmbeddedDeployment(service, admin, service.enroll(ctx), service.enroll(ctx))
        finally:
            service.close()

    @pytest.fixture
    def kms(self, deployment: EmbeddedDeployment) -> KeyManagementService:
        return EmbeddedKms.for_app(deployment.service, deployment.app)

    @pytest.fixture
    def other_tenant_kms(self, deployment: EmbeddedDeployment) -> KeyManagementService:
        return EmbeddedKms.for_app(deployment.service, deployment.other_app)

    @pytest.fixture
    def secrets(self, deployment: EmbeddedDeployment) -> list[str]:
        return [deployment.admin.apikey, deployment.app.apikey, deployment.other_app.apikey]


# -- 3.-5. over TLS against `ppml serve` -------------------------------------------------------


@dataclasses.dataclass
class ServerDeployment:
    """A running ``ppml serve`` with two apps enrolled through the API by the admin."""

    server: KmsServer
    app: Path
    other_app: Path
    apikeys: list[str]

    def uri(self, scheme: str, credentials: Path) -> str:
        return self.server.uri(scheme, credentials=credentials)


def _deploy(server: KmsServer, directory: Path) -> ServerDeployment:
    admin = RemoteKms(KmsEndpoint.parse(server.uri()), load_credentials(server.admin_credentials))
    try:
        paths, apikeys = [], [server.admin()["apikey"]]
        for name in ("app", "other-app"):
            credentials = admin.enroll()
            path = directory / f"{name}.credentials"
            write_credentials(path, credentials.appid, credentials.apikey.decode())
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            paths.append(path)
            apikeys.append(credentials.apikey.decode())
    finally:
        admin.close()
    return ServerDeployment(server, paths[0], paths[1], apikeys)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerDeployment]:
    directory = tmp_path_factory.mktemp("kms-sqlite")
    server = KmsServer(directory / "data")
    try:
        yield _deploy(server, directory)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory: pytest.TempPathFactory,
                    pg_cluster: PostgresCluster) -> Iterator[ServerDeployment]:
    directory = tmp_path_factory.mktemp("kms-postgres")
    server = KmsServer(directory / "data", db_url=new_database(pg_cluster))
    try:
        yield _deploy(server, directory)
    finally:
        server.stop()


class ServerBackedContract(KeyManagementServiceContract):
    """Clients of a class-wide server: ``kms`` through ``open_kms`` (the URI path), the other
    tenant through the constructor with a recording transport."""

    scheme: str

    @pytest.fixture
    def deployment(self) -> ServerDeployment:
        raise NotImplementedError

    @pytest.fixture
    def kms(self, deployment: ServerDeployment) -> Iterator[KeyManagementService]:
        client = open_kms(deployment.uri(self.scheme, deployment.app))
        try:
            yield client
        finally:
            client.close()  # type: ignore[attr-defined]

    @pytest.fixture
    def recorder(self, deployment: ServerDeployment) -> RecordingTransport:
        return RecordingTransport(deployment.server.ca)

    @pytest.fixture
    def other_tenant_kms(self, deployment: ServerDeployment,
                         recorder: RecordingTransport) -> Iterator[KeyManagementService]:
        endpoint = KmsEndpoint.parse(deployment.uri(self.scheme, deployment.other_app))
        client = (RemoteKms if self.scheme == "ppml+https" else EhsmKms)(endpoint, transport=recorder)
        try:
            yield client
        finally:
            client.close()

    @pytest.fixture
    def wire_log(self, recorder: RecordingTransport) -> list[tuple[int, bytes]]:
        return recorder.responses

    @pytest.fixture
    def secrets(self, deployment: ServerDeployment) -> list[str]:
        return deployment.apikeys

    @pytest.fixture
    def private_paths(self, deployment: ServerDeployment) -> list[Path]:
        return [deployment.app, deployment.other_app, deployment.server.ca]

    def test_open_kms_resolves_the_scheme(self, kms: KeyManagementService,
                                          deployment: ServerDeployment) -> None:
        assert type(kms) is (RemoteKms if self.scheme == "ppml+https" else EhsmKms)
        assert kms.uri == f"{self.scheme}://127.0.0.1:{deployment.server.port}"

    def test_credentials_file_readable_by_others_is_refused(self, deployment: ServerDeployment,
                                                            tmp_path: Path) -> None:
        loose = tmp_path / "loose.credentials"
        loose.write_bytes(deployment.app.read_bytes())
        loose.chmod(0o644)
        with pytest.raises(KeyStoreUnreadable, match="too open"):
            open_kms(deployment.uri(self.scheme, loose))


class ServerKeyLifecycleTests:
    """Operator operations of ``ppml serve``'s native API, through :class:`RemoteKms`."""

    @pytest.fixture
    def remote(self, kms: KeyManagementService) -> RemoteKms:
        assert isinstance(kms, RemoteKms)
        return kms

    def test_rotation_keeps_old_wraps_and_uses_the_new_version(self, remote: RemoteKms, key_id: str) -> None:
        before = remote.generate_data_key(key_id, associated_data=b"ctx")
        assert _key_version(before.wrapped) == 1
        assert remote.describe_key(key_id)["current_version"] == 1
        rotated = remote.rotate(key_id)
        assert rotated["current_version"] == 2
        assert remote.describe_key(key_id)["current_version"] == 2
        assert remote.unwrap_data_key(key_id, before.wrapped, associated_data=b"ctx") == before.data_key
        after = remote.generate_data_key(key_id)
        assert _key_version(after.wrapped) == 2
        assert remote.unwrap_data_key(key_id, after.wrapped) == after.data_key

        rewrapped = remote.rewrap(key_id, before.wrapped, associated_data=b"ctx")
        assert rewrapped != before.wrapped
        assert _key_version(rewrapped) == 2
        assert remote.unwrap_data_key(key_id, rewrapped, associated_data=b"ctx") == before.data_key
        with pytest.raises(InvalidCiphertext):
            remote.unwrap_data_key(key_id, rewrapped)
        with pytest.raises(InvalidCiphertext):
            remote.rewrap(key_id, before.wrapped)  # without its associated data

    def test_disable_and_enable(self, remote: RemoteKms, key_id: str) -> None:
        generated = remote.generate_data_key(key_id)
        assert remote.set_enabled(key_id, False)["state"] == "Disabled"
        assert not {k.key_id: k for k in remote.list_keys()}[key_id].enabled
        with pytest.raises(KeyDisabled) as generate_error:
            remote.generate_data_key(key_id)
        with pytest.raises(KeyDisabled) as unwrap_error:
            remote.unwrap_data_key(key_id, generated.wrapped)
        assert generate_error.value.key_id == unwrap_error.value.key_id == key_id
        assert unwrap_error.value.state == "disabled"
        with pytest.raises(KeyDisabled):
            remote.rotate(key_id)

        assert remote.set_enabled(key_id, True)["state"] == "Enabled"
        assert {k.key_id: k for k in remote.list_keys()}[key_id].enabled
        assert remote.unwrap_data_key(key_id, generated.wrapped) == generated.data_key
        fresh = remote.generate_data_key(key_id)
        assert remote.unwrap_data_key(key_id, fresh.wrapped) == fresh.data_key

    def test_schedule_deletion_makes_the_key_unusable(self, remote: RemoteKms, key_id: str) -> None:
        generated = remote.generate_data_key(key_id)
        scheduled = remote.schedule_deletion(key_id, days=7)
        assert scheduled["state"] == "PendingDeletion"
        assert scheduled["deletion_time"]
        assert not {k.key_id: k for k in remote.list_keys()}[key_id].enabled
        # service.py: a key pending deletion still exists for its owner, so it is disabled, not unknown.
        with pytest.raises(KeyDisabled) as generate_error:
            remote.generate_data_key(key_id)
        with pytest.raises(KeyDisabled) as unwrap_error:
            remote.unwrap_data_key(key_id, generated.wrapped)
        assert generate_error.value.state == unwrap_error.value.state == "pending deletion"
        with pytest.raises(KeyDisabled):
            remote.set_enabled(key_id, True)  # cancel the deletion first

        cancelled = remote.request("POST", f"/v1/keys/{key_id}/cancel-deletion", key_id=key_id)
        assert cancelled["state"] == "Disabled" and cancelled["deletion_time"] is None
        remote.set_enabled(key_id, True)
        assert remote.unwrap_data_key(key_id, generated.wrapped) == generated.data_key

    def test_deletion_without_window_forgets_the_key(self, remote: RemoteKms, key_id: str) -> None:
        generated = remote.generate_data_key(key_id)
        assert remote.schedule_deletion(key_id, days=0)["state"] == "Deleted"
        assert key_id not in {k.key_id for k in remote.list_keys()}
        with pytest.raises(KeyNotFound):
            remote.unwrap_data_key(key_id, generated.wrapped)
        with pytest.raises(KeyNotFound):
            remote.generate_data_key(key_id)

    def test_other_tenant_cannot_manage_a_key(self, remote: RemoteKms, other_tenant_kms: RemoteKms,
                                              key_id: str) -> None:
        generated = remote.generate_data_key(key_id)
        for operation in (lambda: other_tenant_kms.rotate(key_id),
                          lambda: other_tenant_kms.set_enabled(key_id, False),
                          lambda: other_tenant_kms.schedule_deletion(key_id, days=0),
                          lambda: other_tenant_kms.describe_key(key_id),
                          lambda: other_tenant_kms.rewrap(key_id, generated.wrapped)):
            with pytest.raises(KeyNotFound):
                operation()
        assert remote.describe_key(key_id)["state"] == "Enabled"
        assert remote.describe_key(key_id)["current_version"] == 1
        assert remote.unwrap_data_key(key_id, generated.wrapped) == generated.data_key

    def test_wrapped_keys_survive_a_restart(self, deployment: ServerDeployment) -> None:
        uri = deployment.uri("ppml+https", deployment.app)
        before = open_kms(uri)
        assert isinstance(before, RemoteKms)
        try:
            key_id = before.create_primary_key(description="survives restarts").key_id
            generated = before.generate_data_key(key_id, associated_data=b"ctx")
            before.rotate(key_id)
            rotated = before.generate_data_key(key_id)
        finally:
            # An idle keep-alive TLS connection holds up a graceful stop for uvicorn's whole
            # graceful-shutdown timeout (5 s), so the client goes before the server does.
            before.close()
        deployment.server.stop()
        deployment.server.start()
        after = open_kms(uri)
        assert isinstance(after, RemoteKms)
        try:
            unwrapped = after.unwrap_data_key(key_id, generated.wrapped, associated_data=b"ctx")
            assert unwrapped == generated.data_key
            assert after.unwrap_data_key(key_id, rotated.wrapped) == rotated.data_key
            assert after.describe_key(key_id)["current_version"] == 2
            assert key_id in {k.key_id for k in after.list_keys()}
            # A crash (no shutdown handlers) loses nothing acknowledged either, and the same
            # client reconnects after its pooled connection died with the server.
            after.set_enabled(key_id, False)
            deployment.server.kill()
            deployment.server.start()
            with pytest.raises(KeyDisabled):
                after.unwrap_data_key(key_id, rotated.wrapped)
            after.set_enabled(key_id, True)
            assert after.unwrap_data_key(key_id, rotated.wrapped) == rotated.data_key
        finally:
            after.close()


class NativeApiContract(ServerKeyLifecycleTests, ServerBackedContract):
    scheme = "ppml+https"

    @pytest.mark.parametrize("malformed", MALFORMED_KEY_IDS)
    def test_malformed_key_id_is_key_not_found(self, kms: KeyManagementService, key_id: str,
                                               malformed: str) -> None:
        super().test_malformed_key_id_is_key_not_found(kms, key_id, malformed)


class TestRemoteSqlite(NativeApiContract):
    @pytest.fixture
    def deployment(self, sqlite_server: ServerDeployment) -> ServerDeployment:
        return sqlite_server


@pytest.mark.postgres
class TestRemotePostgres(NativeApiContract):
    @pytest.fixture
    def deployment(self, postgres_server: ServerDeployment) -> ServerDeployment:
        return postgres_server


class TestEhsmClient(ServerBackedContract):
    scheme = "ehsm+https"

    @pytest.fixture
    def deployment(self, sqlite_server: ServerDeployment) -> ServerDeployment:
        return sqlite_server

    def test_listed_key_matches_the_created_one(self, kms: KeyManagementService) -> None:
        """eHSM's CreateKey has no description field: the key is listed, enabled, undescribed."""
        created = kms.create_primary_key(description="not carried by the eHSM protocol")
        listed = {k.key_id: k for k in kms.list_keys()}[created.key_id]
        assert listed.enabled and listed.description == ""

    def test_two_clients_of_one_app_do_not_collide(self, deployment: ServerDeployment) -> None:
        """Same appid, same millisecond: the signed random nonce keeps both requests valid."""
        import threading

        clients = [open_kms(deployment.uri("ehsm+https", deployment.app)) for _ in range(2)]
        failures: list[BaseException] = []

        def hammer(client: KeyManagementService) -> None:
            try:
                for _ in range(150):
                    client.list_keys()
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=hammer, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []

    @pytest.fixture
    def native(self, deployment: ServerDeployment) -> Iterator[RemoteKms]:
        client = RemoteKms.from_uri(deployment.uri("ppml+https", deployment.app))
        try:
            yield client
        finally:
            client.close()

    def test_both_surfaces_share_keys(self, kms: EhsmKms, native: RemoteKms) -> None:
        key_id = kms.create_primary_key().key_id
        assert key_id in {k.key_id for k in native.list_keys()}
        over_ehsm = kms.generate_data_key(key_id, associated_data=b"ctx")
        assert native.unwrap_data_key(key_id, over_ehsm.wrapped, associated_data=b"ctx") == over_ehsm.data_key
        over_native = native.generate_data_key(key_id)
        assert kms.unwrap_data_key(key_id, over_native.wrapped) == over_native.data_key

    def test_disabled_key_is_key_disabled(self, kms: EhsmKms, key_id: str) -> None:
        generated = kms.generate_data_key(key_id)
        kms.call("DisableKey", {"keyid": key_id}, key_id=key_id)
        assert not {k.key_id: k for k in kms.list_keys()}[key_id].enabled
        with pytest.raises(KeyDisabled):
            kms.generate_data_key(key_id)
        with pytest.raises(KeyDisabled):
            kms.unwrap_data_key(key_id, generated.wrapped)
        kms.call("EnableKey", {"keyid": key_id}, key_id=key_id)
        assert kms.unwrap_data_key(key_id, generated.wrapped) == generated.data_key

    def test_deleted_key_is_key_not_found(self, kms: EhsmKms, key_id: str) -> None:
        generated = kms.generate_data_key(key_id)
        kms.call("DeleteKey", {"keyid": key_id}, key_id=key_id)
        assert key_id not in {k.key_id for k in kms.list_keys()}
        with pytest.raises(KeyNotFound):
            kms.unwrap_data_key(key_id, generated.wrapped)
