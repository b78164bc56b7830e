"""Issue 9's security points against a real ``ppml serve`` (TLS, SQLite, the simulated platform
trusted): release policies with safe defaults on the native and eHSM paths; every authenticated
route spends its replay stamp once; eHSM bodies cannot be reused as another action; ``Action`` is
parsed once; no 5xx from any input; ``/ehsm/`` as eHSM's SDK sends it; ``DeleteAllKey``."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey

from ppml.attestation.client import AttestationClient
from ppml.core import signing
from ppml.core.evidence import Evidence, report_data_for
from ppml.core.simulated import SimulatedReport, sign_report
from ppml.errors import PermissionDenied, TokenRejected
from ppml.kms.ehsm_client import EhsmKms
from ppml.kms.registry import open_kms
from ppml.kms.remote import ClientCredentials, KmsEndpoint, RemoteKms, write_credentials
from ppml.kms.tls import client_context
from ppml.tee.backends import load_or_create_platform_key
from ppml.tee.session import TeeSession
from servers import KmsServer
from test_kms_server import App, Wire, b64, envelope, ok, reply

MR_ENCLAVE = hashlib.sha256(b"hardening enclave").digest()
MR_SIGNER = hashlib.sha256(b"hardening signer").digest()


class Deployment:
    """One server for the module, with the simulated platform trusted and an app enrolled."""

    def __init__(self, base: Path) -> None:
        self.platform_path = base / "platform" / "platform-key.pem"
        self.platform = load_or_create_platform_key(self.platform_path)
        self.server = KmsServer(base / "kms", extra=["--trust-simulated-platform",
                                                     str(self.platform_path.with_name("platform-public.pem"))])
        self.wire = Wire(self.server)
        self.admin = App(**self.server.admin())
        self.app = self.wire.enroll(self.admin)
        self.credentials = base / "app.json"
        write_credentials(self.credentials, self.app.appid, self.app.apikey)
        self.owner = RemoteKms(KmsEndpoint.parse(self.server.uri()), ClientCredentials(self.app.appid, self.app.key))

    def close(self) -> None:
        self.owner.close()
        self.wire.close()
        self.server.stop()

    def register(self, **policy: Any) -> str:
        body = {"mr_enclave": MR_ENCLAVE.hex(), "mr_signer": MR_SIGNER.hex(), **policy}
        return str(ok(self.wire.native(self.app, "POST", "/v1/attestation/policies", body))["policy_id"])

    def session(self, policy_id: str, *, debug: bool = False) -> TeeSession:
        """Attest over HTTPS with simulated evidence (signed by the trusted platform key)."""
        client = AttestationClient(self.server.base_url, ca_path=self.server.ca)
        key = ECKey.generate_key("P-256", private=True)
        runtime = {"tee_public_key": key.as_dict(private=False)}
        nonce = client.nonce()
        report = SimulatedReport(mr_enclave=MR_ENCLAVE, mr_signer=MR_SIGNER, debug=debug,
                                 report_data=report_data_for(nonce.encode(), runtime))
        evidence = Evidence(tee="simulated", data=sign_report(report, self.platform))
        try:
            result = client.attest(evidence, nonce=nonce, runtime_data=runtime, policy_ids=[policy_id])
        finally:
            client.close()  # a refused attestation too: an open connection holds up the server's stop
        return TeeSession(token=result["token"], private_key=key, claims=result["claims"],
                          policy_ids=list(result["policy_ids"]), attestation_url=self.server.base_url)

    def gated_key(self, release_policy: dict[str, Any]) -> tuple[str, bytes, bytes]:
        """A key with ``release_policy`` and a data key wrapped under it (plaintext, wrapped)."""
        key_id = str(self.owner.request("POST", "/v1/keys", {"release_policy": release_policy})["key_id"])
        generated = self.owner.request("POST", f"/v1/keys/{key_id}/generate-data-key", {"length": 32})
        return key_id, base64.b64decode(generated["plaintext"]), base64.b64decode(generated["ciphertext"])

    def client(self, scheme: str, session: TeeSession) -> Any:
        return open_kms(self.server.uri(scheme, credentials=self.credentials), attestation=session)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    world = Deployment(tmp_path_factory.mktemp("hardening"))
    try:
        yield world
    finally:
        world.close()


SCHEMES = ["ppml+https", "ehsm+https"]


# -- 1. release policies: safe defaults, opt-ins by name, on both paths ------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(
    ("release", "debug", "refusal"),
    [
        ({"claims": {"mr_enclave": MR_ENCLAVE.hex()}}, False, "allow_simulated"),  # the reported form
        ({"mr_enclave": MR_ENCLAVE.hex()}, False, "allow_simulated"),
        ({"policy_ids": ["{policy}"]}, False, "allow_simulated"),
        ({"policy_ids": ["{policy}"], "allow_simulated": True}, True, "allow_debug"),
        ({"all_of": [{"mr_signer": MR_SIGNER.hex(), "allow_simulated": True},
                     {"mr_enclave": MR_ENCLAVE.hex()}]}, False, "allow_simulated"),
    ],
)
def test_release_refused_by_default(deployment: Deployment, scheme: str, release: dict[str, Any],
                                    debug: bool, refusal: str) -> None:
    policy_id = deployment.register(allow_simulated=True, allow_debug=True)
    release = json.loads(json.dumps(release).replace("{policy}", policy_id))
    key_id, _, wrapped = deployment.gated_key(release)
    kms = deployment.client(scheme, deployment.session(policy_id, debug=debug))
    with pytest.raises(TokenRejected, match=refusal):
        kms.unwrap_data_key(key_id, wrapped)
    with pytest.raises(TokenRejected, match=refusal):
        kms.generate_data_key(key_id)
    kms.close()


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(
    ("release", "debug"),
    [
        ({"mr_enclave": MR_ENCLAVE.hex(), "allow_simulated": True}, False),
        ({"claims": {"mr_enclave": MR_ENCLAVE.hex()}, "allow_simulated": True}, False),
        ({"policy_ids": ["{policy}"], "allow_simulated": True}, False),
        ({"policy_ids": ["{policy}"], "allow_simulated": True, "allow_debug": True}, True),
        ({"any_of": [{"mr_enclave": "00" * 32}, {"policy_ids": ["{policy}"], "allow_simulated": True}]}, False),
    ],
)
def test_release_with_opt_ins(deployment: Deployment, scheme: str, release: dict[str, Any], debug: bool) -> None:
    from ppml.core.keys import SECRET_ACCESS

    policy_id = deployment.register(allow_simulated=True, allow_debug=True)
    release = json.loads(json.dumps(release).replace("{policy}", policy_id))
    key_id, plaintext, wrapped = deployment.gated_key(release)
    kms = deployment.client(scheme, deployment.session(policy_id, debug=debug))
    assert kms.unwrap_data_key(key_id, wrapped).export(SECRET_ACCESS) == plaintext
    fresh = kms.generate_data_key(key_id)
    assert kms.unwrap_data_key(key_id, fresh.wrapped).export(SECRET_ACCESS) == fresh.data_key.export(SECRET_ACCESS)
    kms.close()


def test_ehsm_without_a_token_never_sees_a_gated_key(deployment: Deployment) -> None:
    policy_id = deployment.register(allow_simulated=True)
    key_id, _, wrapped = deployment.gated_key({"policy_ids": [policy_id], "allow_simulated": True})
    answer = deployment.wire.ehsm(deployment.app, "Decrypt", {"keyid": key_id, "ciphertext": b64(wrapped)})
    assert answer["code"] == 400 and "plaintext" not in answer["result"]


@pytest.mark.parametrize("policy", [{"all_of": []}, {"any_of": []}, {"mr_enclave": "zz"},
                                    {"claims": {"isv_svn": 3}, "policy_ids": ["p"]}, {"allow_simulated": True},
                                    {"policy_ids": ["p"], "allow_debug": "yes"}])
def test_malformed_release_policies_are_refused_at_creation(deployment: Deployment, policy: dict[str, Any]) -> None:
    response = deployment.wire.native(deployment.app, "POST", "/v1/keys", {"release_policy": policy})
    assert response.status_code == 400, response.text
    assert "release policy" in response.json()["message"]


def test_attestation_policies_take_the_same_language(deployment: Deployment) -> None:
    composite = ok(deployment.wire.native(deployment.app, "POST", "/v1/attestation/policies", {
        "any_of": [{"mr_enclave": MR_ENCLAVE.hex(), "allow_simulated": True}, {"mr_td": "ab" * 48}]}))
    assert composite["policy"]["any_of"][0]["accepted_tcb_statuses"] == ["UpToDate"]
    assert deployment.session(composite["policy_id"]).token
    for bad in ({"all_of": []}, {"policy_ids": ["x"], "mr_enclave": MR_ENCLAVE.hex()}):
        response = deployment.wire.native(deployment.app, "POST", "/v1/attestation/policies", bad)
        assert response.status_code == 400, response.text


# -- 2. every authenticated route spends its stamp once ----------------------------------------


def _native_replay(wire: Wire, app: App, method: str, path: str, payload: Any = None,
                   extra_headers: dict[str, str] | None = None) -> tuple[httpx.Response, httpx.Response]:
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = signing.native_headers(app.appid, app.key, method=method, path=path, body=body)
    headers.update(extra_headers or {})
    if body:
        headers["Content-Type"] = "application/json"
    first = wire.http.request(method, path, content=body or None, headers=headers)
    again = wire.http.request(method, path, content=body or None, headers=headers)
    return first, again


def test_every_native_route_spends_its_stamp(deployment: Deployment) -> None:
    wire, app = deployment.wire, deployment.app
    key_id = wire.new_key(app)
    wrapped = wire.data_key(app, key_id)["ciphertext"]
    policy_id = deployment.register(allow_simulated=True)
    routes: list[tuple[str, str, Any, dict[str, str] | None]] = [
        ("POST", "/v1/attestation/policies", {"mr_enclave": MR_ENCLAVE.hex()}, None),
        ("GET", f"/v1/attestation/policies/{policy_id}", None, None),
        ("POST", "/v1/attestation/verify", {"evidence": {"tee": "simulated", "data": b64(b"x")}}, None),
        ("GET", "/v1/keys", None, None),
        ("GET", f"/v1/keys/{key_id}", None, None),
        ("POST", "/v1/keys", {"description": "replayed?"}, None),
        ("POST", f"/v1/keys/{key_id}/generate-data-key", {}, None),
        ("POST", f"/v1/keys/{key_id}/decrypt", {"ciphertext": wrapped}, None),
        # a request whose attestation header is refused has still spent its stamp
        ("POST", f"/v1/keys/{key_id}/decrypt", {"ciphertext": wrapped}, {"X-PPML-Attestation": "a.b.c"}),
        ("POST", f"/v1/keys/{key_id}/rewrap", {"ciphertext": wrapped}, None),
        ("POST", f"/v1/keys/{uuid.uuid4()!s}/enable", None, None),  # refused (unknown key): still spent
    ]
    for method, path, payload, extra in routes:
        first, again = _native_replay(wire, app, method, path, payload, extra)
        assert first.status_code != 401, (path, first.text)
        assert again.status_code == 401 and again.json()["error"] == "ReplayedRequest", (path, again.text)


def _ehsm_replay(wire: Wire, app: App, action: str, payload: dict[str, Any] | None,
                 nonce: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    body = wire.ehsm_body(app, payload, nonce=nonce)
    return wire.ehsm_post(action, body), wire.ehsm_post(action, body)


def test_every_ehsm_action_spends_its_stamp(deployment: Deployment) -> None:
    wire, app = deployment.wire, deployment.app
    key_id = wire.ehsm_key(app)
    policy_id = deployment.register(allow_simulated=True)
    wrapped = wire.ehsm_ok(app, "GenerateDataKeyWithoutPlaintext", {"keyid": key_id, "keylen": 32})["ciphertext"]
    calls: list[tuple[str, dict[str, Any] | None]] = [
        ("UploadQuotePolicy", {"mr_enclave": MR_ENCLAVE.hex(), "mr_signer": MR_SIGNER.hex()}),
        ("GetQuotePolicy", {"policyId": policy_id}),
        ("VerifyQuote", {"quote": b64(b"not a quote at all"), "nonce": b64(b"n")}),
        ("GenerateQuote", {"challenge": b64(b"c")}),  # refused (no TEE here): still spent
        ("ListKey", None),
        ("CreateKey", {"keyspec": "EH_AES_GCM_256", "origin": "EH_INTERNAL_KEY"}),
        ("GenerateDataKey", {"keyid": key_id, "keylen": 16}),
        ("Decrypt", {"keyid": key_id, "ciphertext": wrapped}),
        ("Encrypt", {"keyid": key_id, "plaintext": b64(b"hello")}),
        ("DisableKey", {"keyid": key_id}),
        ("EnableKey", {"keyid": key_id}),
    ]
    for action, payload in calls:
        first, again = _ehsm_replay(wire, app, action, payload)
        assert first["message"] != "Timestamp can't be repeated in 20 minutes", (action, first)
        assert again == reply("Timestamp can't be repeated in 20 minutes"), (action, again)


def test_a_captured_ehsm_body_is_not_another_action(deployment: Deployment) -> None:
    wire, app, admin = deployment.wire, deployment.app, deployment.admin
    key_id = wire.ehsm_key(app)
    wrapped = wire.ehsm_ok(app, "GenerateDataKeyWithoutPlaintext", {"keyid": key_id, "keylen": 32})["ciphertext"]
    # A Decrypt body (never sent as Decrypt) offered as DisableKey: foreign fields, refused.
    body = wire.ehsm_body(app, {"keyid": key_id, "ciphertext": wrapped})
    answer = wire.ehsm_post("DisableKey", body)
    assert answer["code"] == 400 and "ciphertext" in answer["message"]
    assert wire.ehsm_ok(app, "ListKey")["list"][0]["keyState"] == 1  # still enabled
    # A payload-less body bound to ListKey by its nonce, offered as DeleteAllKey or Enroll: refused.
    for action, signer in (("DeleteAllKey", app), ("Enroll", admin)):
        bound = wire.ehsm_body(signer, None, nonce=f"ListKey.{os.urandom(16).hex()}")
        answer = wire.ehsm_post(action, bound)
        assert answer["code"] == 400 and "ListKey" in answer["message"], answer
    assert [k["keyid"] for k in wire.ehsm_ok(app, "ListKey")["list"]].count(key_id) == 1
    # ...and accepted under its own action.
    assert "list" in wire.ehsm_ok(app, "ListKey", nonce=f"ListKey.{os.urandom(16).hex()}")
    # A body with a field no action takes is refused, whatever the action.
    assert wire.ehsm(app, "ListKey", {"keyid": key_id})["code"] == 400
    assert wire.ehsm(app, "CreateKey", {"keyspec": "EH_AES_GCM_256", "origin": "EH_INTERNAL_KEY",
                                        "extra": "1"})["code"] == 400


def test_ppml_ehsm_client_binds_its_requests_to_the_action(deployment: Deployment) -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"code": 200, "message": "successful", "result": {"list": []}})

    client = EhsmKms(KmsEndpoint.parse(deployment.server.uri("ehsm+https")),
                     ClientCredentials(deployment.app.appid, deployment.app.key), transport=httpx.MockTransport(answer))
    client.list_keys()
    client.close()
    body = json.loads(sent[-1].content)
    assert body["nonce"].startswith("ListKey.") and len(body["nonce"]) <= 64
    # and the real server accepts such a request under its own action (asserted above) only


# -- 3. Action is parsed once ------------------------------------------------------------------


def test_a_repeated_action_is_refused(deployment: Deployment) -> None:
    wire, app = deployment.wire, deployment.app
    key_id = wire.ehsm_key(app)
    wrapped = wire.ehsm_ok(app, "GenerateDataKeyWithoutPlaintext", {"keyid": key_id, "keylen": 32})["ciphertext"]
    body = wire.ehsm_body(app, {"keyid": key_id, "ciphertext": wrapped})
    response = wire.http.post("/ehsm?Action=Decrypt&Action=DisableKey", content=json.dumps(body).encode(),
                              headers={"Content-Type": "application/json"})
    answer = envelope(response)
    assert answer["code"] == 400 and "Action" in answer["message"]
    assert wire.ehsm_ok(app, "ListKey")["list"]  # the key is still there and enabled:
    assert {k["keyid"]: k["keyState"] for k in wire.ehsm_ok(app, "ListKey")["list"]}[key_id] == 1
    # A percent-encoded Action is decoded once, and that one value is dispatched and measured.
    body = wire.ehsm_body(app, None)
    response = wire.http.post("/ehsm?Action=List%4Bey", content=json.dumps(body).encode(),
                              headers={"Content-Type": "application/json"})
    assert envelope(response)["code"] == 200
    metrics = wire.http.get("/metrics").text
    assert 'route="/ehsm?Action=ListKey"' in metrics and "Action=Decrypt&" not in metrics


# -- 4. no 5xx from input ----------------------------------------------------------------------


def test_deep_nesting_is_refused_in_ehsm_and_native_shapes(deployment: Deployment) -> None:
    wire = deployment.wire
    deep = b"[" * 10_000 + b"]" * 10_000
    answer = envelope(wire.http.post("/ehsm", params={"Action": "CreateKey"}, content=deep))
    assert answer["code"] == 400 and "nested" in answer["message"]
    for path in ("/v1/keys", "/v1/attestation/attest", f"/v1/keys/{uuid.uuid4()}/decrypt"):
        response = wire.http.post(path, content=deep, headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and "nested" in response.json()["message"], (path, response.text)
    # Nesting inside a JSON string is not nesting.
    body = wire.ehsm_body(deployment.app, {"keyspec": "[" * 100, "origin": "EH_INTERNAL_KEY"})
    assert "nested" not in wire.ehsm_post("CreateKey", body)["message"]
    assert "Traceback" not in deployment.server.log()


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda inner: (st.lists(inner, max_size=4)
                                    | st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/ehsm", "/ehsm/", "/v1/keys", "/v1/apps", "/v1/attestation/attest",
                             "/v1/attestation/policies", "/v1/keys/00000000-0000-0000-0000-000000000000/decrypt",
                             "/v1/keys/x/generate-data-key", "/v1/attestation/verify"]),
       action=st.sampled_from(["", "Decrypt", "CreateKey", "Enroll", "VerifyQuote", "ListKey", "GetVersion",
                               "DeleteAllKey", "UploadQuotePolicy", "x" * 300]),
       body=st.one_of(_json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200),
                      st.fixed_dictionaries({"appid": st.text(max_size=40), "timestamp": st.text(max_size=14),
                                             "sign": st.text(max_size=44), "payload": _json,
                                             "nonce": st.none() | st.text(max_size=70)})
                      .map(lambda v: json.dumps(v).encode())),
       headers=st.dictionaries(st.sampled_from(["X-PPML-App", "X-PPML-Timestamp", "X-PPML-Nonce",
                                                "X-PPML-Signature", "X-PPML-Attestation", "Content-Type"]),
                               st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
                               max_size=6),
       method=st.sampled_from(["POST", "GET"]))
def test_random_requests_never_get_a_server_error(deployment: Deployment, path: str, action: str, body: bytes,
                                                  headers: dict[str, str], method: str) -> None:
    params = {"Action": action} if path.startswith("/ehsm") else None
    response = deployment.wire.http.request(method, path, params=params, content=body if method == "POST" else None,
                                            headers=headers)
    assert response.status_code < 500, (path, action, body[:80], response.status_code, response.text[:200])
    assert response.headers.get("content-type", "").startswith("application/json"), response.text[:200]


def test_no_traceback_in_the_log_after_the_fuzzing(deployment: Deployment) -> None:
    log = deployment.server.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]


# -- 5. eHSM's Python SDK, as it sends requests -------------------------------------------------


def _sdk_params(payload: dict[str, Any] | None, appid: str, apikey: str) -> dict[str, Any]:
    """Our own rendering of the shape eHSM's ``sdk/python`` sends (``ehsm/utils.py`` prepare_params):
    appid, timestamp, the payload (signed as its urlencoded sorted string) and sign — no nonce."""
    from urllib.parse import unquote_plus, urlencode

    def sort_str(params: dict[str, Any]) -> str:
        return unquote_plus(urlencode(sorted((k, v) for k, v in params.items() if v is not None)))

    signed: dict[str, Any] = {"appid": appid, "timestamp": str(int(time.time() * 1000))}
    if payload is not None:
        signed["payload"] = sort_str(payload)
    import hmac as hmac_

    sign = base64.b64encode(hmac_.new(apikey.encode(), sort_str(signed).encode(), hashlib.sha256).digest()).decode()
    body = {**signed, "sign": sign}
    if payload is not None:
        body["payload"] = payload
    return body


def test_ehsm_python_sdk_requests_work_unchanged(deployment: Deployment) -> None:
    # The SDK's client is httpx with base_url ".../ehsm" and url "": requests go to /ehsm/.
    app = deployment.app
    sdk_base = f"{deployment.server.base_url}/ehsm"
    with httpx.Client(base_url=sdk_base, verify=client_context(deployment.server.ca)) as sdk:
        version = sdk.get("", params={"Action": "GetVersion"})
        assert version.request.url.path == "/ehsm/" and version.status_code == 200 and version.json()["code"] == 200

        def post(action: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
            time.sleep(0.002)  # one request per millisecond: the SDK sends no nonce
            response = sdk.post("", params={"Action": action}, json=_sdk_params(payload, app.appid, app.apikey))
            response.raise_for_status()
            assert response.request.url.path == "/ehsm/"
            return dict(response.json())

        created = post("CreateKey", {"keyspec": "EH_AES_GCM_256", "origin": "EH_INTERNAL_KEY",
                                     "keyusage": "EH_KEYUSAGE_ENCRYPT_DECRYPT"})
        assert created["code"] == 200, created
        keyid = created["result"]["keyid"]
        aad = b64(b"sdk aad")
        generated = post("GenerateDataKey", {"keylen": 32, "keyid": keyid, "aad": aad})["result"]
        decrypted = post("Decrypt", {"aad": aad, "keyid": keyid, "ciphertext": generated["ciphertext"]})
        assert decrypted["result"]["plaintext"] == generated["plaintext"]
        assert keyid in [k["keyid"] for k in post("ListKey")["result"]["list"]]
        assert post("DisableKey", {"keyid": keyid})["code"] == 200
        assert post("DeleteALLKey")["code"] == 200
        assert post("ListKey")["result"]["list"] == []


# -- 6. DeleteAllKey ---------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 4])
def test_delete_all_key_deletes_every_key(deployment: Deployment, count: int) -> None:
    wire = deployment.wire
    app = wire.enroll(deployment.admin)
    other = wire.enroll(deployment.admin)
    keys = [wire.ehsm_key(app) for _ in range(count)]
    wrapped = [wire.ehsm_ok(app, "GenerateDataKeyWithoutPlaintext", {"keyid": k, "keylen": 32})["ciphertext"]
               for k in keys]
    others = wire.ehsm_key(other)
    before = _audit_count(deployment)
    assert wire.ehsm_ok(app, "DeleteAllKey") == {}
    assert wire.ehsm_ok(app, "ListKey")["list"] == []
    for key_id, ciphertext in zip(keys, wrapped):
        assert wire.ehsm(app, "Decrypt", {"keyid": key_id, "ciphertext": ciphertext}) == reply("keyid error")
    assert [k["keyid"] for k in wire.ehsm_ok(other, "ListKey")["list"]] == [others]  # another app's keys stay
    # one audit record per deleted key, all in one transaction (the records are consecutive)
    records = _audit_since(deployment, before)
    deleted = [r for r in records if r["operation"] == "DeleteKey" and r["appid"] == app.appid]
    assert sorted(r["key_id"] for r in deleted) == sorted(keys)
    seqs = [r["seq"] for r in deleted]
    assert seqs == list(range(seqs[0], seqs[0] + count)) if count else True


def _audit_rows(deployment: Deployment) -> list[dict[str, Any]]:
    import sqlite3

    with sqlite3.connect(deployment.server.data_dir / "kms.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT seq, appid, operation, key_id, outcome FROM audit ORDER BY seq")]


def _audit_count(deployment: Deployment) -> int:
    rows = _audit_rows(deployment)
    return rows[-1]["seq"] if rows else 0


def _audit_since(deployment: Deployment, seq: int) -> list[dict[str, Any]]:
    return [r for r in _audit_rows(deployment) if r["seq"] > seq]


def test_release_policy_unit_refusals_for_tcb() -> None:
    """TCB status at the release gate (simulated evidence carries none, so this one is a unit check
    with the real token type): out of date is refused unless accepted by name."""
    from ppml.attestation.tokens import AttestationToken
    from ppml.core.evidence import Claims
    from ppml.kms.release import check_release

    claims = Claims(tee="sgx", report_data="00" * 64, debug=False, tcb_status="OutOfDate",
                    mr_enclave=MR_ENCLAVE.hex(), mr_signer=MR_SIGNER.hex())
    token = AttestationToken(raw="x", issuer="as", token_id="t", issued_at=0, expires_at=1, nonce="n",
                             policy_ids=("p",), claims=claims, simulated=False,
                             runtime_data={"tee_public_key": {"kty": "EC"}})
    with pytest.raises(TokenRejected, match="TCB status OutOfDate"):
        check_release({"policy_ids": ["p"]}, token)
    check_release({"policy_ids": ["p"], "accepted_tcb_statuses": ["UpToDate", "OutOfDate"]}, token)
    with pytest.raises(TokenRejected, match="matched none"):
        check_release({"policy_ids": ["q"], "accepted_tcb_statuses": ["OutOfDate"]}, token)
    current = dataclasses.replace(token, claims=dataclasses.replace(claims, tcb_status="UpToDate"))
    check_release({"policy_ids": ["p"]}, current)


# -- 9. gated keys from the CLI ----------------------------------------------------------------


def _ppml(*args: str) -> Any:
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "ppml.cli.main", *args], capture_output=True, text=True,
                          check=False, timeout=60)


def test_key_create_with_a_release_policy(deployment: Deployment, tmp_path: Path) -> None:
    from ppml.core.keys import SECRET_ACCESS

    uri = deployment.server.uri(credentials=deployment.credentials)
    policy_id = deployment.register(allow_simulated=True)
    strict = _ppml("key", "create", "--kms", uri, "--release-policy", policy_id)
    assert strict.returncode == 0, strict.stderr
    lenient = _ppml("key", "create", "--kms", uri, "--release-policy", policy_id, "--allow-simulated")
    assert lenient.returncode == 0 and "SIMULATED" in lenient.stderr, lenient.stderr
    policy_file = tmp_path / "policy.json"
    policy_file.write_text(json.dumps({"mr_enclave": MR_ENCLAVE.hex(), "allow_simulated": True}))
    from_file = _ppml("key", "create", "--kms", uri, "--release-policy-file", str(policy_file))
    assert from_file.returncode == 0, from_file.stderr
    described = {k: deployment.owner.request("GET", f"/v1/keys/{k}")["release_policy"]
                 for k in (strict.stdout.strip(), lenient.stdout.strip(), from_file.stdout.strip())}
    assert all(described.values())
    session = deployment.session(policy_id)
    kms = deployment.client("ppml+https", session)
    for key_id, policy in described.items():
        wrapped = deployment.owner.generate_data_key(key_id).wrapped
        with pytest.raises(PermissionDenied, match="attested TEEs"):  # none leaves unattested, CLI-made or not
            deployment.owner.unwrap_data_key(key_id, wrapped)
        if policy.get("allow_simulated"):
            assert len(kms.unwrap_data_key(key_id, wrapped).export(SECRET_ACCESS)) == 32
        else:
            with pytest.raises(TokenRejected, match="allow_simulated"):
                kms.unwrap_data_key(key_id, wrapped)
    kms.close()
    for bad, message in ((["--allow-simulated"], "--release-policy ID"),
                         (["--release-policy-file", str(tmp_path / "none.json")], "none.json")):
        refused = _ppml("key", "create", "--kms", uri, *bad)
        assert refused.returncode != 0 and message in refused.stderr, refused.stderr
    local = _ppml("key", "create", "--kms", f"local:{tmp_path / 'store'}", "--release-policy", policy_id)
    assert local.returncode != 0 and "attests callers" in local.stderr, local.stderr


def test_policy_parsing_is_bounded_and_strict() -> None:
    from ppml.core.policy import MAX_POLICY_DEPTH, AllOf, AnyOf, Measurements, parse_policy
    from ppml.errors import UsageError

    leaf: dict[str, Any] = {"mr_signer": MR_SIGNER.hex()}
    deep: dict[str, Any] = leaf
    for _ in range(MAX_POLICY_DEPTH + 1):
        deep = {"all_of": [deep]}
    with pytest.raises(UsageError, match="deeper"):
        parse_policy(deep)
    for bad in ({"all_of": []}, {"any_of": []}, {"all_of": [leaf], "mr_enclave": "00" * 32}, [leaf],
                {"mr_signer": MR_SIGNER.hex(), "accepted_tcb_statuses": "UpToDate"},
                {"mr_signer": MR_SIGNER.hex(), "accepted_tcb_statuses": ["Fine"]},
                {"claims": {"mr_signer": MR_SIGNER.hex()}, "mr_signer": MR_SIGNER.hex()}):
        with pytest.raises(UsageError):
            parse_policy(bad)
    parsed = parse_policy({"any_of": [leaf, {"all_of": [{"mr_td": "ab" * 48, "allow_debug": True}]}]})
    assert isinstance(parsed, AnyOf) and isinstance(parsed.members[1], AllOf)
    assert parse_policy(parsed.to_dict()) == parsed  # the stored form reads back as the same policy
    assert isinstance(parse_policy({"policy_ids": ["p"], "claims": {"mr_enclave": MR_ENCLAVE.hex()}}), Measurements)
