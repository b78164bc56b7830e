"""The Grafana dashboard names only metrics the services really export: every panel's PromQL is
checked against what a running ``ppml serve`` and a Spark job started by ``ppml submit`` expose
(scraped in this session), and no scrape holds anything secret-looking.

The KMS is driven through a key release, a failed attestation, audit writes and an eHSM error
first, so the series those create exist; the Spark job scrapes its own driver before it ends, so
there is no race with the job stopping."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ppml.attestation.failures import FAILURE_REASONS, failure_reason
from ppml.core.keys import SECRET_ACCESS
from ppml.errors import AttestationFailed, NonceRejected, PolicyNotFound, QuoteFormatError
from ppml.kms.tls import client_context
from ppml.spark.submit import METRICS_NAMESPACE, SubmitOptions, build_submission
from servers import free_port
from test_kms_hardening import Deployment
from test_kms_server import b64

DASHBOARD = Path(__file__).parents[1] / "src" / "ppml" / "deploy" / "grafana" / "ppml-dashboard.json"

# -- a small PromQL metric-name extractor ---------------------------------------------------------

_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and",
                       "or", "unless", "inf", "nan", "atan2", "start", "end"})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_NAME_MATCHER = re.compile(r'__name__\s*(=~|=)\s*"((?:[^"\\]|\\.)*)"')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> tuple[set[str], set[str]]:
    """The metric names (and ``__name__`` regexes) a PromQL expression selects: identifiers that
    are not functions, aggregations, keywords, label names, durations or ``$variables``."""
    regexes = {value for op, value in _NAME_MATCHER.findall(expr) if op == "=~"}
    names = {value for op, value in _NAME_MATCHER.findall(expr) if op == "="}
    text = _MATCHERS.sub(" ", expr)           # label matchers, strings inside them included
    text = _STRING.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)         # by (…), on (…), group_left (…) hold label names
    text = _RANGE.sub(" ", text)              # [5m], [$__rate_interval], [1h:5m]
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # dashboard variables
    text = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?[smhdwy]?\b", " ", text)  # numbers and durations
    for name, call in _IDENTIFIER.findall(text):
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names, regexes


@pytest.mark.parametrize(("expr", "names", "regexes"), [
    ('sum by (route) (rate(ppml_kms_requests_total{job=~"$kms_job"}[$__rate_interval]))',
     {"ppml_kms_requests_total"}, set()),
    ('histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{x="y(z)"}[5m])))', {"a_bucket"}, set()),
    ("x / on (instance) group_left (version) y offset 5m > bool 1e3", {"x", "y"}, set()),
    ('max(m) - max(max_over_time(m{a!~"2.."}[1h]))', {"m"}, set()),
    ('sum({__name__=~"metrics_.*_driver_DAGScheduler_stage_runningStages_Value", job="s"})', set(),
     {"metrics_.*_driver_DAGScheduler_stage_runningStages_Value"}),
    ('{__name__="exact_name"} or up', {"exact_name", "up"}, set()),
    ("rate(m:recorded[$__range]) * 100 unless absent(other)", {"m:recorded", "other"}, set()),
])
def test_metric_name_extractor(expr: str, names: set[str], regexes: set[str]) -> None:
    assert metric_names(expr) == (names, regexes)


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        found += [(panel["title"], target["expr"]) for target in panel.get("targets", [])]
    return found


def test_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    exprs = " ".join(expr for _, expr in _panel_exprs(dashboard))
    for wanted in ("ppml_kms_request_seconds_bucket", "ppml_kms_actions_total", "ppml_kms_key_releases_total",
                   "ppml_attestation_failures_total", "ppml_kms_audit_chain_seq", "metrics_executor_",
                   f"metrics_{METRICS_NAMESPACE}_driver_DAGScheduler"):
        assert wanted in exprs, wanted


# -- ppml submit's Spark settings ----------------------------------------------------------------


def _submitted_conf(tmp_path: Path, *conf: tuple[str, str]) -> dict[str, str]:
    argv, _ = build_submission(SubmitOptions(app="job.py", master="local[1]", conf=conf), tmp_path)
    lines = Path(argv[argv.index("--properties-file") + 1]).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_submit_turns_on_sparks_prometheus_endpoints_unless_told_otherwise(tmp_path: Path) -> None:
    conf = _submitted_conf(tmp_path / "default")
    assert conf["spark.ui.prometheus.enabled"] == "true"
    servlet = "spark.metrics.conf.*.sink.prometheusServlet"
    assert conf[f"{servlet}.class"] == "org.apache.spark.metrics.sink.PrometheusServlet"
    assert conf[f"{servlet}.path"] == "/metrics/prometheus"
    assert conf["spark.metrics.namespace"] == METRICS_NAMESPACE
    own = _submitted_conf(tmp_path / "own", ("spark.metrics.namespace", "${spark.app.name}"),
                          ("spark.ui.prometheus.enabled", "false"), ("spark.ui.enabled", "false"))
    assert own["spark.metrics.namespace"] == "${spark.app.name}" and own["spark.ui.prometheus.enabled"] == "false"
    assert own["spark.ui.enabled"] == "false"


# -- the attestation failure reasons -------------------------------------------------------------


@pytest.mark.parametrize(("exc", "reason"), [
    (QuoteFormatError("quote of 9 bytes"), "malformed_evidence"),
    (NonceRejected("unknown or already used nonce"), "replayed_nonce"),
    (NonceRejected("nonce expired"), "expired_nonce"),
    (PolicyNotFound("p"), "policy_not_found"),
    (AttestationFailed("policy 1234: simulated evidence, and the policy does not allow_simulated"),
     "simulated_refused"),
    (AttestationFailed("policy 1234: mr_enclave aa is not the registered bb"), "policy_mismatch"),
    (AttestationFailed("report data does not bind this nonce and runtime data"), "report_data_mismatch"),
    (AttestationFailed("quote signature is not valid under the attestation key"), "bad_signature"),
    (AttestationFailed("QE report signature is not valid under the PCK certificate's key"), "bad_signature"),
    (AttestationFailed("simulated evidence signature invalid"), "bad_signature"),
    (AttestationFailed("simulated evidence from a platform key this service does not trust"), "untrusted_platform"),
    (AttestationFailed("PCK chain: the chain ends at 'X' (SHA-256 …)"), "untrusted_platform"),
    (AttestationFailed("collateral: TCB Info expired at 2025-01-01T00:00:00+00:00"), "stale_collateral"),
    (AttestationFailed("PCK chain: 'Intel SGX PCK Certificate' is not valid at 2030-01-01"), "stale_collateral"),
    (AttestationFailed("collateral: PCCS https://pccs unreachable (timeout)"), "collateral_unavailable"),
    (AttestationFailed("TCB status Revoked: the platform's TCB level of …"), "revoked"),
    (AttestationFailed("FMSPC mismatch: the PCK certificate's FMSPC 00 has no TCB Info"), "tcb_mismatch"),
    (AttestationFailed("this service does not verify tdx evidence"), "malformed_evidence"),
    (AttestationFailed("something new"), "other"),
])
def test_failure_reasons_are_a_closed_set(exc: AttestationFailed, reason: str) -> None:
    assert failure_reason(exc) == reason
    assert reason in FAILURE_REASONS


# -- scrapes of the real services ----------------------------------------------------------------

_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(\{(.*)\})?\s")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _samples(text: str) -> Iterator[tuple[str, dict[str, str]]]:
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            yield match[1], dict(_LABEL.findall(match[3] or ""))


@pytest.fixture(scope="module")
def kms_scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """``/metrics`` of a real ``ppml serve`` after a key release, a refused attestation, audit
    writes and an eHSM error; and every secret the session handled."""
    world = Deployment(tmp_path_factory.mktemp("monitoring"))
    try:
        allowed = world.register(allow_simulated=True)
        refused = world.register()  # simulated evidence is refused by default
        key_id, plaintext, wrapped = world.gated_key({"policy_ids": [allowed], "allow_simulated": True})
        session = world.session(allowed)
        kms = world.client("ppml+https", session)
        assert kms.unwrap_data_key(key_id, wrapped).export(SECRET_ACCESS) == plaintext
        kms.close()
        with pytest.raises(AttestationFailed):
            world.session(refused)
        answer = world.wire.ehsm(world.app, "Decrypt", {"keyid": key_id, "ciphertext": b64(wrapped)})
        assert answer["code"] == 400  # a gated key without a token: an eHSM error with HTTP 200
        response = httpx.get(f"{world.server.base_url}/metrics", verify=client_context(world.server.ca), timeout=10)
        assert response.status_code == 200
        secrets = [world.app.apikey, world.admin.apikey, session.token, b64(plaintext), plaintext.hex(),
                   b64(wrapped), key_id, world.app.appid, world.admin.appid, allowed, refused]
        yield response.text, secrets
    finally:
        world.close()


SPARK_APP = textwrap.dedent("""
    import sys, urllib.request
    from pyspark.sql import SparkSession
    port, out = sys.argv[1], sys.argv[2]
    spark = SparkSession.builder.getOrCreate()
    assert spark.range(1000).selectExpr("sum(id)").collect()[0][0] == 499500
    texts = []
    for path in ("/metrics/prometheus", "/metrics/executors/prometheus"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            texts.append(response.read().decode())
    open(out, "w").write("\\n".join(texts))
    spark.stop()
""")


@pytest.fixture(scope="module")
def spark_scrape(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The two Prometheus endpoints of a local job's driver, as ``ppml submit`` configures them,
    scraped by the job itself before it stops. (Run after the KMS, not beside it: on two cores the
    overlap was slower than the sum.)"""
    work = tmp_path_factory.mktemp("spark-monitoring")
    app, out, port = work / "scrape.py", work / "scrape.txt", free_port()
    app.write_text(SPARK_APP)
    result = subprocess.run(
        [sys.executable, "-m", "ppml.cli.main", "submit", "--master", "local[1]", "--conf", f"spark.ui.port={port}",
         str(app), str(port), str(out)],
        capture_output=True, text=True, check=False, timeout=240, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return out.read_text()


_SECRET_LOOKING = re.compile(r"^(?:[0-9a-fA-F]{32,}|[A-Za-z0-9+/_-]{40,}={0,2}|eyJ[\w-]+\.[\w-]+\..*)$")
#: Label values that are long hex by nature: Spark's git revision in spark_info, the audit head's
#: MAC prefix (16 digits, under the threshold anyway).
_HEX_BY_NATURE = {("spark_info", "revision")}


def _assert_nothing_secret(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, "a secret value appears in a scrape"
    for name, labels in _samples(text):
        for label, value in labels.items():
            if (name, label) not in _HEX_BY_NATURE:
                assert not _SECRET_LOOKING.match(value), (name, label, value)


@pytest.mark.spark
@pytest.mark.slow
def test_every_dashboard_metric_is_exported(kms_scrape: tuple[str, list[str]], spark_scrape: str) -> None:
    kms_text, secrets = kms_scrape
    spark_text = spark_scrape
    exported = {name for name, _ in _samples(kms_text)} | {name for name, _ in _samples(spark_text)}
    missing = []
    for title, expr in _panel_exprs(_dashboard()):
        names, regexes = metric_names(expr)
        assert names or regexes, f"{title}: no metric in {expr!r}"
        missing += [(title, name) for name in names if name not in exported]
        missing += [(title, regex) for regex in regexes if not any(re.fullmatch(regex, n) for n in exported)]
    for variable in _dashboard()["templating"]["list"]:
        query = variable.get("definition", "")
        if query.startswith("label_values("):
            name = query[len("label_values("):].split(",")[0].strip()
            if name not in exported:
                missing.append((variable["name"], name))
    assert not missing, missing
    _assert_nothing_secret(kms_text, secrets)
    _assert_nothing_secret(spark_text, secrets)


def test_the_kms_counts_what_it_was_asked(kms_scrape: tuple[str, list[str]]) -> None:
    samples = list(_samples(kms_scrape[0]))

    def value_of(name: str, **labels: str) -> bool:
        return any(n == name and all(got.get(k) == v for k, v in labels.items()) for n, got in samples)

    assert value_of("ppml_kms_key_releases_total", result="released")
    assert value_of("ppml_attestation_failures_total", reason="simulated_refused")
    assert value_of("ppml_attestation_verifications_total", operation="attest", result="ok")
    assert value_of("ppml_kms_actions_total", api="ehsm", action="Decrypt", code="400")
    assert value_of("ppml_kms_actions_total", api="native", action="decrypt", code="200")
    seq = [line for line in kms_scrape[0].splitlines() if line.startswith("ppml_kms_audit_chain_seq ")]
    assert seq and float(seq[0].split()[1]) >= 3
    assert value_of("ppml_kms_audit_chain_head_info")
    for name, labels in samples:
        if name == "ppml_kms_audit_chain_head_info":
            assert re.fullmatch(r"[0-9a-f]{16}", labels["mac"])
