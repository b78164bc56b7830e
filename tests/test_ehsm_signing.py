"""eHSM request and result signing (ppml.core.signing) against the worked examples of
docs/ehsm-api.md §2.4 and §6.1, and the JavaScript loose-equality skip rules of §2.1.

The vectors are the document's, copied verbatim (the worked example and the four rows after it
in §2.4; both rows of §6.1): a change to the canonical string or the HMAC breaks
interoperability with eHSM and BigDL clients, so these must reproduce forever.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppml.core.signing import ehsm_sign, ehsm_sign_object, ehsm_sort_str

APPID = "2f3a8e1c-5b7d-4e9a-9c1f-0a1b2c3d4e5f"
APIKEY = b"Xk3mP9qR7sT2vW5yZ8bC4dF6gH1jK0nM"
TIMESTAMP = "1700000000000"
KEYID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

# (case, payload, nonce, string to sign, sign) — docs/ehsm-api.md §2.4, strings as printed there.
REQUEST_VECTORS: list[tuple[str, dict[str, Any] | None, str | None, str, str]] = [
    (
        "worked example (GenerateDataKeyWithoutPlaintext)",
        {"keyid": KEYID, "keylen": 32, "aad": "dGVzdA=="},
        None,
        "appid=2f3a8e1c-5b7d-4e9a-9c1f-0a1b2c3d4e5f&payload=aad=dGVzdA==&keyid="
        "7c9e6679-7425-40de-944b-e07fc1f90ae7&keylen=32&timestamp=1700000000000",
        "1t8HHJVene7Op8TJYhUZVigQkIT/cFYz8cjP13Pb0zg=",
    ),
    (
        "CreateKey, BigDL style",
        {"keyspec": "EH_AES_GCM_128", "origin": "EH_INTERNAL_KEY"},
        None,
        "appid=2f3a8e1c-5b7d-4e9a-9c1f-0a1b2c3d4e5f&payload=keyspec=EH_AES_GCM_128"
        "&origin=EH_INTERNAL_KEY&timestamp=1700000000000",
        "IEOslOT7pbSABH6NiXpNiN2eFIQlsRxuOLEx2bvtdls=",
    ),
    (
        "BigDL data key (aad 'test')",
        {"aad": "test", "keyid": KEYID, "keylen": 32},
        None,
        "appid=2f3a8e1c-5b7d-4e9a-9c1f-0a1b2c3d4e5f&payload=aad=test&keyid="
        "7c9e6679-7425-40de-944b-e07fc1f90ae7&keylen=32&timestamp=1700000000000",
        "l4QLSp1Bwz52R2mKXtdw4CybU0HGdWoqjHELYgDcFho=",
    ),
    (
        "no payload (ListKey)",
        None,
        None,
        "appid=2f3a8e1c-5b7d-4e9a-9c1f-0a1b2c3d4e5f&timestamp=1700000000000",
        "HGGEc9WhKGTAnt1GnRIVdEwKaJl2+ybtorpFLen5dDM=",
    ),
    (
        "latest revision, top-level nonce",
        {"keyid": KEYID, "keylen": 32, "aad": "dGVzdA=="},
        "2374462904",
        "appid=2f3a8e1c-5b7d-4e9a-9c1f-0a1b2c3d4e5f&nonce=2374462904&payload=aad=dGVzdA==&keyid="
        "7c9e6679-7425-40de-944b-e07fc1f90ae7&keylen=32&timestamp=1700000000000",
        "dF6GRi8mUz8Y48hMzgUBWiEzp37nUtMka/BRe/glwus=",
    ),
]

# (result object, string to sign, sign) — docs/ehsm-api.md §6.1, VerifyQuote results.
RESULT_VECTORS: list[tuple[dict[str, Any], str, str]] = [
    ({"result": True, "nonce": "dGVzdA=="}, "nonce=dGVzdA==&result=true",
     "C17gmttNoDslUnQhsA/edCZyWpPg3p1T2FsJA7RVcHY="),
    ({"result": 0, "nonce": "dGVzdA=="}, "nonce=dGVzdA==",
     "ZVqf8txrJvWY074sKRXzEIcFnePF9XrgAEamXtCQ7Dk="),
]


@pytest.mark.parametrize(("payload", "nonce", "string_to_sign", "sign"),
                         [v[1:] for v in REQUEST_VECTORS], ids=[v[0] for v in REQUEST_VECTORS])
def test_request_vectors(payload: dict[str, Any] | None, nonce: str | None, string_to_sign: str,
                         sign: str) -> None:
    params = {"appid": APPID, "nonce": nonce, "payload": payload, "timestamp": TIMESTAMP}
    assert ehsm_sort_str(params) == string_to_sign
    assert ehsm_sign(APIKEY, appid=APPID, payload=payload, timestamp=TIMESTAMP, nonce=nonce) == sign
    assert ehsm_sign_object(APIKEY, params) == sign


@pytest.mark.parametrize(("result", "string_to_sign", "sign"), RESULT_VECTORS,
                         ids=["result true", "result 0 (left out)"])
def test_result_vectors(result: dict[str, Any], string_to_sign: str, sign: str) -> None:
    assert ehsm_sort_str(result) == string_to_sign
    assert ehsm_sign_object(APIKEY, result) == sign


def test_payload_key_order_does_not_matter() -> None:
    """BigDL's Scala client writes payload keys in HashMap order; the server sorts them."""
    forward = {"aad": "test", "keyid": KEYID, "keylen": 32}
    backward = dict(reversed(list(forward.items())))
    assert ehsm_sign(APIKEY, appid=APPID, payload=forward, timestamp=TIMESTAMP) == \
        ehsm_sign(APIKEY, appid=APPID, payload=backward, timestamp=TIMESTAMP)


def test_empty_payload_is_signed_as_payload_equals() -> None:
    """§2.1: a present but empty payload adds ``payload=``; an absent one adds nothing."""
    assert ehsm_sort_str({"appid": APPID, "payload": {}, "timestamp": TIMESTAMP}) == \
        f"appid={APPID}&payload=&timestamp={TIMESTAMP}"
    assert ehsm_sign(APIKEY, appid=APPID, payload={}, timestamp=TIMESTAMP) != \
        ehsm_sign(APIKEY, appid=APPID, payload=None, timestamp=TIMESTAMP)


# JavaScript's ``v != '' && v != undefined && v != null`` (checked with Node, §2.1).
SKIPPED: list[Any] = [0, 0.0, False, "", None, []]
KEPT: list[tuple[Any, str]] = [
    ("0", "0"), (True, "true"), ({}, ""), (32, "32"), (-1, "-1"), (" ", " "), ("false", "false"),
    ([0], ""), (["a", "b"], "0=a&1=b"), ({"z": 1, "a": 0}, "z=1"),
]


@pytest.mark.parametrize("value", SKIPPED, ids=repr)
def test_loosely_empty_values_are_skipped(value: Any) -> None:
    assert ehsm_sort_str({"a": "x", "m": value, "z": "y"}) == "a=x&z=y"


@pytest.mark.parametrize(("value", "rendered"), KEPT, ids=[repr(v) for v, _ in KEPT])
def test_other_values_are_kept(value: Any, rendered: str) -> None:
    assert ehsm_sort_str({"a": "x", "m": value, "z": "y"}) == f"a=x&m={rendered}&z=y"


def test_keys_sort_in_ascii_order_and_nothing_is_escaped() -> None:
    """Upper case before lower case (``policyId`` between ``nonce`` and ``quote``); base64
    ``+ / =`` and spaces go into the string as they are."""
    params = {"quote": "a+b/c==", "policyId": "p", "nonce": "n n", "Zed": "&"}
    assert ehsm_sort_str(params) == "Zed=&&nonce=n n&policyId=p&quote=a+b/c=="


def test_sign_is_standard_base64_of_hmac_sha256_and_case_sensitive() -> None:
    """§2.2: 44 characters of standard base64; the documented ``.upper()`` never matches."""
    payload = {"keyspec": "EH_AES_GCM_128", "origin": "EH_INTERNAL_KEY"}
    sign = ehsm_sign(APIKEY, appid=APPID, payload=payload, timestamp=TIMESTAMP)
    message = ehsm_sort_str({"appid": APPID, "payload": payload, "timestamp": TIMESTAMP}).encode()
    digest = hmac.new(APIKEY, message, hashlib.sha256).digest()
    assert base64.b64decode(sign, validate=True) == digest
    assert len(sign) == 44
    assert sign.upper() != sign


# -- an independent oracle: the reference code printed in docs/ehsm-api.md §2.4 ----------------


def _doc_canon(d: dict[str, Any]) -> str:
    parts = []
    for k in sorted(d):
        v = d[k]
        if v is None or v == "" or v is False or (type(v) in (int, float) and v == 0) or v == []:
            continue
        if isinstance(v, dict):
            v = _doc_canon(v)
        elif v is True:
            v = "true"
        parts.append(f"{k}={v}")
    return "&".join(parts)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53),
                     st.text(alphabet="ab019+/= Z_-", max_size=6))
_keys = st.text(alphabet="abcAB_09", min_size=1, max_size=4)
_objects = st.recursive(_scalars, lambda inner: st.dictionaries(_keys, inner, max_size=4),
                        max_leaves=12)


@given(st.dictionaries(_keys, _objects, max_size=6))
def test_canonical_string_matches_the_documented_reference(params: dict[str, Any]) -> None:
    """Over strings, integers, booleans, null and nested objects (the shapes eHSM payloads
    have), ``ehsm_sort_str`` equals the document's own reference implementation."""
    assert ehsm_sort_str(params) == _doc_canon(params)
