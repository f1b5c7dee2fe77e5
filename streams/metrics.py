"""Prometheus metrics of one gate worker (its own registry, so tests can read it exactly)."""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)


class GateMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_in = Counter("consentgate_records_in", "Input records read", registry=r)
        self.outcomes = Counter("consentgate_outcomes", "Per-purpose outcomes of decided records",
                                ["purpose", "category", "result"], registry=r)
        self.dlq = Counter("consentgate_dlq", "Input records sent to the dead-letter topic", ["error_class"],
                           registry=r)
        self.batches = Counter("consentgate_batches", "Committed transactions", registry=r)
        self.aborts = Counter("consentgate_aborted_batches", "Aborted transactions", ["cause"], registry=r)
        self.batch_seconds = Histogram("consentgate_batch_seconds", "Time from fetch to commit of a batch",
                                       buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10), registry=r)
        self.consent_view_size = Gauge("consentgate_consent_view_users", "Users in the consent view", registry=r)
        self.consent_view_lag = Gauge("consentgate_consent_view_lag", "consent.state records not yet applied",
                                      registry=r)
        self.consent_corrupt = Counter("consentgate_consent_corrupt", "Unreadable consent.state records "
                                       "(their users are denied)", registry=r)
        self.revocation_latency = Histogram(
            "consentgate_revocation_enforcement_seconds",
            "From a revocation's commit on consent.state to the gate enforcing it",
            buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30), registry=r)

    def serve(self, port: int) -> None:
        start_http_server(port, addr="0.0.0.0", registry=self.registry)

    def record_outcomes(self, tally: Tally[tuple[str, str, str]]) -> None:
        """Add one batch's (purpose, category, passed-or-reason) counts; one call per batch, not per record."""
        for (purpose, category, result), count in tally.items():
            self.outcomes.labels(purpose, category, result).inc(count)

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found
