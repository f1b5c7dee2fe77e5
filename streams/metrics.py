"""Prometheus metrics of consentgate's workers, each in its own registry (so tests read them exactly).

Every label takes its values from a set fixed by code or by the catalog (purposes, categories,
drop reasons, record error classes, actions, finding kinds), never from input: a value outside
the set is counted under one fallback label (``unknown`` or ``other``), so no input can grow the
number of exported series. The families, their labels and what they mean are listed in
``deploy/METRICS.md``.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, write_to_textfile

from consentgate.connectors.retry import Failure
from consentgate.model import DropReason
from consentgate.ops.endpoints import MetricsServer, serve
from consentgate.ops.labels import OTHER, UNKNOWN, BoundedMetric, LabelValues
from consentgate.schemas.errors import RecordError

if TYPE_CHECKING:
    from consentgate.catalog import Catalog

Clock = Callable[[], float]
RESULTS = ("passed", *(r.value for r in DropReason))
# The gate's own causes, then the retry policy's classes of Kafka errors.
ABORT_CAUSES = ("consent_view", "registry", *(f.value for f in Failure), "other")
CONSENT_ACTIONS = ("grant", "revoke", "erase", "tier", "gpc_opt_out")
FINDING_KINDS = ("wrong_outcome", "missing_outcome", "unjustified_output", "missing_output", "offset_gap",
                 "duplicate", "unkept_field", "missing_retraction")
MAX_PARTITIONS = 1024
LATENCY_BUCKETS = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)


def record_error_classes() -> frozenset[str]:
    """Names of every RecordError subclass defined so far: the DLQ's error classes (a code-bounded set)."""
    names: set[str] = set()
    todo: list[type] = [RecordError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


def error_class_label() -> LabelValues:
    # A predicate, not a snapshot: subclasses defined by modules imported later still count as known.
    return LabelValues(lambda name: name in record_error_classes(), OTHER)


def partition_label() -> LabelValues:
    return LabelValues(lambda p: p.isdigit() and int(p) < MAX_PARTITIONS, OTHER, cap=MAX_PARTITIONS)


def purpose_label(catalog: Catalog | None) -> LabelValues:
    return LabelValues(catalog.purposes if catalog is not None else (lambda p: True), UNKNOWN, cap=64)


class WorkerMetrics:
    """A worker's own registry, served over HTTP and registered for ``consentgate top``."""

    kind = "worker"

    def __init__(self, clock: Clock = time.time) -> None:
        self.registry = CollectorRegistry()
        self.clock = clock
        self.server: MetricsServer | None = None
        self._lag_partitions: set[int] = set()

    def serve(self, port: int, host: str = "127.0.0.1", *, data_dir: Path | None = None,
              worker: str | None = None) -> MetricsServer:
        """Serve on host:port (127.0.0.1 unless told otherwise); with ``data_dir``, register the endpoint."""
        self.server = serve(self.registry, port, host, kind=self.kind, worker=worker, data_dir=data_dir)
        return self.server

    def _lag_gauge(self) -> BoundedMetric:
        raise NotImplementedError(f"{type(self).__name__} exports no consumer lag")

    def record_lag(self, lags: Mapping[int, int]) -> None:
        """Set the lag of every assigned partition; partitions no longer assigned stop being exported."""
        for partition in self._lag_partitions - set(lags):
            self._lag_gauge().remove(str(partition))
        for partition, lag in lags.items():
            self._lag_gauge().labels(str(partition)).set(max(lag, 0))
        self._lag_partitions = set(lags)

    def observe_consumer_lag(self, consumer: Any) -> None:
        """Lag from the consumer's own positions and its last fetched high watermarks (no broker call)."""
        lags: dict[int, int] = {}
        positions = consumer.position(consumer.assignment())
        for tp in positions:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                lags[tp.partition] = high - tp.offset
        self.record_lag(lags)

    def close(self) -> None:
        """Stop serving and remove the registration."""
        if self.server is not None:
            self.server.close()
            self.server = None

    def write_textfile(self, path: Path) -> None:
        """For batch runs (an audit): the exposition text, for node_exporter's textfile collector."""
        write_to_textfile(str(path), self.registry)

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def series(self) -> int:
        """How many samples the registry exports now (what a scrape would carry)."""
        return sum(len(family.samples) for family in self.registry.collect())


class _StampedGauge:
    """A gauge whose every ``set`` also records when it was set (the consent view's freshness)."""

    def __init__(self, gauge: Gauge, stamp: Gauge, clock: Clock) -> None:
        self._gauge = gauge
        self._stamp = stamp
        self._clock = clock

    def set(self, value: float) -> None:
        self._gauge.set(value)
        self._stamp.set(self._clock())


class GateMetrics(WorkerMetrics):
    """The gate worker's metrics. With a catalog, purposes and categories are exactly the catalog's."""

    kind = "gate"

    def __init__(self, catalog: Catalog | None = None, clock: Clock = time.time) -> None:
        super().__init__(clock)
        r = self.registry
        self.records_in = Counter("consentgate_records_in", "Input records read", registry=r)
        self._outcomes = Counter("consentgate_outcomes", "Per-purpose outcomes of decided records",
                                 ["purpose", "category", "result"], registry=r)
        # Without a catalog, a category is known unless the gate said unknown_category (see record_outcomes).
        self._purposes = purpose_label(None)
        self._categories = LabelValues(lambda c: True, UNKNOWN, cap=64)
        self._results = LabelValues(RESULTS, OTHER)
        self._outcome_children: dict[tuple[str, str, str], Any] = {}
        self.dlq = BoundedMetric(Counter("consentgate_dlq", "Input records sent to the dead-letter topic",
                                         ["error_class"], registry=r), error_class_label())
        self.batches = Counter("consentgate_batches", "Committed transactions", registry=r)
        self.aborts = BoundedMetric(Counter("consentgate_aborted_batches", "Aborted transactions", ["cause"],
                                            registry=r), LabelValues(ABORT_CAUSES, OTHER))
        self.batch_seconds = Histogram("consentgate_batch_seconds", "Time from fetch to commit of a batch",
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10), registry=r)
        self.record_age = Histogram("consentgate_record_age_at_commit_seconds", "Per transaction, the age of its "
                                    "oldest input record (from its Kafka timestamp) when the outputs committed",
                                    buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300),
                                    registry=r)
        self.consent_view_size = Gauge("consentgate_consent_view_users", "Users in the consent view", registry=r)
        self.consent_view_updated = Gauge("consentgate_consent_view_updated_timestamp_seconds",
                                          "When the consent view last caught up with consent.state", registry=r)
        self.consent_view_lag = _StampedGauge(
            Gauge("consentgate_consent_view_lag", "consent.state records not yet applied", registry=r),
            self.consent_view_updated, clock)
        self.consent_corrupt = Counter("consentgate_consent_corrupt", "Unreadable consent.state records "
                                       "(their users are denied)", registry=r)
        self.revocation_latency = Histogram(
            "consentgate_revocation_enforcement_seconds",
            "From a revocation's commit on consent.state to the gate enforcing it",
            buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_lag = BoundedMetric(Gauge("consentgate_consumer_lag", "Activity records not yet fetched, "
                                                "per assigned partition", ["partition"], registry=r),
                                          partition_label())
        # Zero series up front, so the first dead letter or abort is an increase Prometheus can see.
        for name in (*sorted(record_error_classes()), OTHER):
            self.dlq.zero(name)
        for cause in ABORT_CAUSES:
            self.aborts.zero(cause)
        if catalog is not None:
            self.use_catalog(catalog)

    def _lag_gauge(self) -> BoundedMetric:
        return self.consumer_lag

    def use_catalog(self, catalog: Catalog) -> None:
        """Label purposes and categories exactly as the catalog names them, and export every outcome the
        catalog allows at 0, so Prometheus sees the first record of each (a series that appears already
        at 1 has no increase)."""
        self._purposes = purpose_label(catalog)
        self._categories = LabelValues(catalog.categories, UNKNOWN)
        self._outcome_children.clear()  # admitted under the previous label sets
        reasons = [r for r in RESULTS if r != DropReason.UNKNOWN_CATEGORY.value]
        for purpose in catalog.purposes.values():
            for category in purpose.categories:
                for result in reasons:
                    self._outcomes.labels(purpose.name, category, result)
            self._outcomes.labels(purpose.name, UNKNOWN, DropReason.UNKNOWN_CATEGORY.value)

    def record_outcomes(self, tally: Tally[tuple[str, str, str]]) -> None:
        """Add one batch's (purpose, category, passed-or-reason) counts; one call per batch, not per record."""
        for key, count in tally.items():
            child = self._outcome_children.get(key)
            if child is None:
                purpose, category, result = key
                # unknown_category means the catalog does not know the category: it came from input.
                shown = UNKNOWN if result == DropReason.UNKNOWN_CATEGORY.value else self._categories(category)
                labels = (self._purposes(purpose), shown, self._results(result))
                child = self._outcomes.labels(*labels)
                if labels == key:  # admitted values only, so the cache is as bounded as the labels
                    self._outcome_children[key] = child
            child.inc(count)



class MeteringMetrics(WorkerMetrics):
    """The metering worker: contributions read, credited, redelivered, dead-lettered; lag; DB commits."""

    kind = "metering"

    def __init__(self, catalog: Catalog | None = None, clock: Clock = time.time) -> None:
        super().__init__(clock)
        r = self.registry
        self.records_in = Counter("consentgate_metering_records_in", "Contributions read", registry=r)
        self.credited = BoundedMetric(Counter("consentgate_metering_credited", "Contributions credited to the "
                                              "ledger", ["purpose"], registry=r), purpose_label(catalog))
        self.redelivered = Counter("consentgate_metering_redelivered", "Contributions already in the ledger "
                                   "(skipped)", registry=r)
        self.dlq = BoundedMetric(Counter("consentgate_metering_dlq", "Contributions sent to metering.dlq",
                                         ["error_class"], registry=r), error_class_label())
        self.batches = Counter("consentgate_metering_batches", "Ledger transactions committed", registry=r)
        self.retries = Counter("consentgate_metering_retries", "Ledger transactions retried", registry=r)
        self.lag = BoundedMetric(Gauge("consentgate_metering_lag", "Contributions not yet read, per partition",
                                       ["partition"], registry=r), partition_label())
        self.commit_seconds = Histogram("consentgate_metering_db_commit_seconds", "Ledger commit latency",
                                        buckets=LATENCY_BUCKETS, registry=r)
        for name in (*sorted(record_error_classes()), OTHER):
            self.dlq.zero(name)
        if catalog is not None:
            for purpose in (*catalog.purposes, UNKNOWN):
                self.credited.zero(purpose)

    def _lag_gauge(self) -> BoundedMetric:
        return self.lag


class ConsentMetrics(WorkerMetrics):
    """The consent writer and the consent service: changes by action, time until the gate can see them."""

    kind = "consent"

    def __init__(self, routes: Iterable[str] = (), clock: Clock = time.time) -> None:
        super().__init__(clock)
        r = self.registry
        self.changes = BoundedMetric(Counter("consentgate_consent_changes", "Consent changes committed",
                                             ["action"], registry=r), LabelValues(CONSENT_ACTIONS, OTHER))
        self.refused = Counter("consentgate_consent_refused", "Consent requests refused as invalid", registry=r)
        self.visible_seconds = Histogram("consentgate_consent_visible_seconds", "From a change's commit until "
                                         "consent.state shows it to the gate", buckets=LATENCY_BUCKETS, registry=r)
        self.corrupt = Counter("consentgate_consent_corrupt_skipped", "Unreadable consent.state records the "
                               "writer replaced", registry=r)
        self.requests = BoundedMetric(
            Counter("consentgate_consent_http_requests", "Consent service requests", ["route", "status"],
                    registry=r),
            LabelValues(tuple(routes), OTHER), LabelValues(("2xx", "3xx", "4xx", "5xx"), OTHER))
        for action in CONSENT_ACTIONS:
            self.changes.zero(action)

    def record_request(self, route: str, status: int) -> None:
        """``route`` is the route template (``/v1/users/{user}/consent``), never the concrete path."""
        self.requests.labels(route, f"{status // 100}xx").inc()


class SinkMetrics(WorkerMetrics):
    """A training-set sink: rows written and deleted, and when its table last got a snapshot."""

    kind = "sink"

    def __init__(self, catalog: Catalog | None = None, clock: Clock = time.time) -> None:
        super().__init__(clock)
        r = self.registry
        purposes = purpose_label(catalog)
        self.rows_written = BoundedMetric(Counter("consentgate_sink_rows_written", "Training rows written",
                                                  ["purpose"], registry=r), purposes)
        self.rows_deleted = BoundedMetric(Counter("consentgate_sink_rows_deleted", "Training rows deleted on "
                                                  "retraction", ["purpose"], registry=r), purposes)
        self.snapshot_at = BoundedMetric(Gauge("consentgate_sink_snapshot_timestamp_seconds", "When the table's "
                                               "current snapshot was committed", ["purpose"], registry=r), purposes)
        self.lag = BoundedMetric(Gauge("consentgate_sink_lag", "Training records not yet written, per partition",
                                       ["purpose", "partition"], registry=r), purposes, partition_label())

    def snapshot_committed(self, purpose: str) -> None:
        self.snapshot_at.labels(purpose).set(self.clock())


class AuditMetrics(WorkerMetrics):
    """The last audit run: findings by kind, decisions checked, when it ran."""

    kind = "audit"

    def __init__(self, clock: Clock = time.time) -> None:
        super().__init__(clock)
        r = self.registry
        self.findings = BoundedMetric(Gauge("consentgate_audit_findings", "Findings of the last audit, by kind",
                                            ["kind"], registry=r), LabelValues(FINDING_KINDS, OTHER))
        self.decisions = Gauge("consentgate_audit_decisions", "Decisions re-derived by the last audit", registry=r)
        self.last_run = Gauge("consentgate_audit_last_run_timestamp_seconds", "When the last audit finished",
                              registry=r)

    def record_run(self, decisions: int, finding_kinds: Iterable[str]) -> None:
        """Replace the previous run's figures with this one's."""
        counts = Tally(finding_kinds)
        self.findings.clear()
        for kind in FINDING_KINDS:
            self.findings.zero(kind)
        for kind, n in counts.items():
            child = self.findings.labels(kind)
            child.inc(n)  # two unknown kinds both land on "other"
        self.decisions.set(decisions)
        self.last_run.set(self.clock())
