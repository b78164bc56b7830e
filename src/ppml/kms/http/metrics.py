"""The KMS's Prometheus metrics: one place that names every series the service exports.

=========================================  ==========================  ===================================
series                                     labels                      what
=========================================  ==========================  ===================================
``ppml_kms_requests_total``                route, status               HTTP requests (route template or
                                                                       ``/ehsm?Action=…``; HTTP status)
``ppml_kms_request_seconds`` (histogram)   route                       HTTP request latency
``ppml_kms_actions_total``                 api, action, code           requests by action: ``api`` is
                                                                       ``native`` or ``ehsm``; ``action``
                                                                       the native route's name or the eHSM
                                                                       ``Action``; ``code`` the HTTP status
                                                                       (native) or eHSM's body code, which
                                                                       is the only place eHSM errors show
``ppml_kms_key_releases_total``            result                      attested key releases to a TEE:
                                                                       ``released`` or the ppml error class
``ppml_kms_audit_chain_seq`` (gauge)       —                           the audit chain head's sequence
``ppml_kms_audit_chain_head_info``         mac                         1, labelled with the head MAC's first
                                                                       16 hex digits
=========================================  ==========================  ===================================

Every label value comes from a closed set (route templates, known actions, status codes, error
class names); none is ever a key id, app id, token or request value, so clients cannot mint series
and nothing secret reaches a scrape. The audit head is read from the database at scrape time, so
every worker and replica answers the same, current head.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from typing import Final, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from ppml.errors import PpmlError

__all__ = ["HEAD_MAC_DIGITS", "AuditChainCollector", "KmsMetrics"]

T = TypeVar("T")
#: How much of the audit head's MAC the info series shows: enough to compare with an anchor kept
#: elsewhere, and one short label value.
HEAD_MAC_DIGITS: Final = 16
LATENCY_BUCKETS: Final = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


@dataclasses.dataclass(frozen=True, slots=True)
class KmsMetrics:
    """The KMS's counters and histogram, registered once on one registry."""

    requests: Counter
    latency: Histogram
    actions: Counter
    releases: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> KmsMetrics:
        return cls(
            requests=Counter("ppml_kms_requests_total", "HTTP requests", ["route", "status"], registry=registry),
            latency=Histogram("ppml_kms_request_seconds", "HTTP request latency", ["route"], registry=registry,
                              buckets=LATENCY_BUCKETS),
            actions=Counter("ppml_kms_actions_total",
                            "Requests by API and action, with the HTTP status (native) or eHSM body code",
                            ["api", "action", "code"], registry=registry),
            releases=Counter("ppml_kms_key_releases_total",
                             "Attested data-key releases to a TEE: released, or the error class that refused it",
                             ["result"], registry=registry),
        )

    async def count_release(self, work: Awaitable[T]) -> T:
        """Await an attested release (``release_to_tee``, ``generate_data_key_for_tee``), counting
        its result: ``released``, or the class of the ppml error that refused it."""
        try:
            result = await work
        except PpmlError as exc:
            self.releases.labels(type(exc).__name__).inc()
            raise
        self.releases.labels("released").inc()
        return result


class AuditChainCollector(Collector):
    """The audit chain's head, read at scrape time through ``read_head`` (seq, MAC); a storage
    failure leaves the two series out of that scrape rather than failing ``/metrics``."""

    def __init__(self, read_head: Callable[[], tuple[int, bytes]]) -> None:
        self.read_head = read_head

    def describe(self) -> list[Metric]:
        return []  # read at collect time only (no database read at registration)

    def collect(self) -> Iterator[Metric]:
        try:
            seq, mac = self.read_head()
        except PpmlError:
            return
        gauge = GaugeMetricFamily("ppml_kms_audit_chain_seq", "Sequence number of the audit chain's head record")
        gauge.add_metric([], seq)
        yield gauge
        info = InfoMetricFamily("ppml_kms_audit_chain_head", "The audit chain head's MAC (first hex digits)")
        info.add_metric([], {"mac": mac.hex()[:HEAD_MAC_DIGITS]})
        yield info
