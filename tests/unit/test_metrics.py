"""Metric labels stay bounded whatever the input; endpoints bind to loopback and register themselves."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from consentgate.catalog import Catalog
from consentgate.connectors.retry import Failure
from consentgate.ops.endpoints import Registration, discover, file_name, register
from consentgate.ops.labels import LabelValues
from consentgate.settings import Settings
from consentgate.streams.metrics import (
    AuditMetrics,
    ConsentMetrics,
    GateMetrics,
    MeteringMetrics,
    SinkMetrics,
    record_error_classes,
)

GEN, REC, ADS = "train_ai_system.generative", "train_ai_system.recommendation", "train_ai_system.ads_ranking"


def flood(metrics: GateMetrics, categories: int) -> None:
    """What the gate records for records of ``categories`` distinct unknown categories, one batch each."""
    for n in range(categories):
        metrics.record_outcomes(Counter({(p, f"cat-{n}", "unknown_category"): 1 for p in (REC, GEN, ADS)}))


@pytest.mark.parametrize("with_catalog", [False, True])
def test_a_flood_of_unknown_categories_adds_no_series(catalog: Catalog, with_catalog: bool) -> None:
    metrics = GateMetrics(catalog if with_catalog else None)
    flood(metrics, 1)
    series = metrics.series()
    flood(metrics, 1_000)
    assert metrics.series() == series
    assert metrics._outcome_children == {}  # the fast path caches only label values that were admitted as-is
    for purpose in (REC, GEN, ADS):
        assert metrics.value("consentgate_outcomes_total", purpose=purpose, category="unknown",
                             result="unknown_category") == 1_001
    scraped = metrics.registry.get_sample_value  # the exposition text names no flooded value
    assert scraped("consentgate_outcomes_total", {"purpose": REC, "category": "cat-7",
                                                  "result": "unknown_category"}) is None


def test_known_categories_keep_their_label_and_strays_are_folded(catalog: Catalog) -> None:
    metrics = GateMetrics(catalog)
    metrics.record_outcomes(Counter({(REC, "click", "passed"): 2, (GEN, "post", "no_grant"): 1,
                                     ("train_ai_system.nope", "post", "passed"): 4,  # not in the catalog
                                     (ADS, "not-a-category", "expired"): 5,
                                     (ADS, "click", "a reason nobody defined"): 6}))
    assert metrics.value("consentgate_outcomes_total", purpose=REC, category="click", result="passed") == 2
    assert metrics.value("consentgate_outcomes_total", purpose=GEN, category="post", result="no_grant") == 1
    assert metrics.value("consentgate_outcomes_total", purpose="unknown", category="post", result="passed") == 4
    assert metrics.value("consentgate_outcomes_total", purpose=ADS, category="unknown", result="expired") == 5
    assert metrics.value("consentgate_outcomes_total", purpose=ADS, category="click", result="other") == 6


def test_error_classes_and_abort_causes_come_from_fixed_sets() -> None:
    metrics = GateMetrics()
    series = metrics.series()
    metrics.dlq.labels("UndecodableRecord").inc(2)
    metrics.aborts.labels("registry").inc()
    for failure in Failure:  # every class the retry policy reports keeps its own label
        metrics.aborts.labels(failure.value).inc()
    for n in range(1_000):
        metrics.dlq.labels(f"Exception{n}").inc()
        metrics.aborts.labels(f"cause {n}").inc()
    assert metrics.series() == series  # every known class and cause was exported at 0 from the start
    assert metrics.value("consentgate_dlq_total", error_class="UndecodableRecord") == 2
    assert metrics.value("consentgate_dlq_total", error_class="other") == 1_000
    assert metrics.value("consentgate_aborted_batches_total", cause="registry") == 1
    assert metrics.value("consentgate_aborted_batches_total", cause="other") == 1_000
    assert [metrics.value("consentgate_aborted_batches_total", cause=f.value) for f in Failure] == [1] * len(Failure)
    assert {"RecordError", "UndecodableRecord", "OversizedRecord", "MissingValue"} <= record_error_classes()


def test_a_record_error_defined_later_is_a_known_class() -> None:
    from consentgate.schemas.errors import InvalidRecord

    metrics = GateMetrics()

    class LateError(InvalidRecord):
        """Defined after the metrics were built (as a module imported later would)."""

    metrics.dlq.labels("LateError").inc()
    assert metrics.value("consentgate_dlq_total", error_class="LateError") == 1


def test_a_predicate_label_admits_at_most_its_cap() -> None:
    label = LabelValues(lambda v: True, "other", cap=3)
    assert [label(v) for v in ("a", "b", "a", "c", "d", "e", "b")] == ["a", "b", "a", "c", "other", "other", "b"]
    assert label.known == {"a", "b", "c"}


def test_partition_lag_follows_the_assignment() -> None:
    metrics = GateMetrics()
    metrics.record_lag({0: 5, 1: 0, 2: 7})
    metrics.record_lag({1: 3, 2: -4})  # partition 0 was revoked; a negative lag is a stale watermark
    lags = {s.labels["partition"]: s.value for f in metrics.registry.collect() if f.name == "consentgate_consumer_lag"
            for s in f.samples}
    assert lags == {"1": 3.0, "2": 0.0}
    metrics.record_lag({5000: 1})  # beyond any real partition count
    assert metrics.value("consentgate_consumer_lag", partition="other") == 1


def test_the_consent_view_records_when_it_last_caught_up() -> None:
    now = [1_000.0]
    metrics = GateMetrics(clock=lambda: now[0])
    assert metrics.value("consentgate_consent_view_updated_timestamp_seconds") == 0
    metrics.consent_view_lag.set(3)  # what ConsentView does after every catch-up
    now[0] = 1_042.5
    metrics.consent_view_lag.set(0)
    assert metrics.value("consentgate_consent_view_updated_timestamp_seconds") == 1_042.5
    assert metrics.value("consentgate_consent_view_lag") == 0


def test_metrics_bind_to_loopback_by_default_and_register(tmp_path: Path) -> None:
    metrics = GateMetrics()
    metrics.records_in.inc(3)
    server = metrics.serve(0, data_dir=tmp_path, worker="w/1")  # the gate's call shape, plus a registration
    try:
        assert server._server.server_address[0] == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            assert "consentgate_records_in_total 3.0" in resp.read().decode()
        registered = json.loads((tmp_path / "metrics" / file_name("gate", "w/1")).read_text())
        assert (registered["kind"], registered["worker"], registered["url"], registered["pid"]) == (
            "gate", "w/1", server.url, os.getpid())
        assert [r.url for r in discover(tmp_path).endpoints] == [server.url]
    finally:
        metrics.close()
    assert list((tmp_path / "metrics").iterdir()) == []  # unregistered on close
    with pytest.raises(OSError):
        urllib.request.urlopen(server.url, timeout=2)


def test_metrics_host_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().metrics_host == "127.0.0.1"
    monkeypatch.setenv("CONSENTGATE_METRICS_HOST", "0.0.0.0")
    assert Settings().metrics_host == "0.0.0.0"


def test_serving_on_a_taken_port_is_a_clear_error() -> None:
    from consentgate.errors import ConfigurationError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(ConfigurationError, match="cannot serve metrics on 127.0.0.1:"):
            GateMetrics().serve(sock.getsockname()[1])


def test_discovery_ignores_dead_workers_and_unreadable_files(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    host = socket.gethostname()
    register(tmp_path, Registration("gate", "gone", "http://127.0.0.1:1/metrics", int(dead.stdout), host, "t"))
    register(tmp_path, Registration("gate", "live", "http://127.0.0.1:2/metrics", os.getpid(), host, "t"))
    register(tmp_path, Registration("metering", "far", "http://10.0.0.9:9/metrics", 1, "another-host", "t"))
    (tmp_path / "metrics" / "junk.json").write_text("{not json")
    (tmp_path / "metrics" / "evil.json").write_text(json.dumps(
        {"kind": "gate", "worker": "x", "url": "file:///etc/passwd", "pid": 1, "host": "h", "started_at": "t"}))
    found = discover(tmp_path)
    assert sorted(r.worker for r in found.endpoints) == ["far", "live"]
    assert sorted((p.name, why.split(":")[0]) for p, why in found.ignored) == [
        ("evil.json", "unreadable registration"), ("gate-gone.json", "stale"),
        ("junk.json", "unreadable registration")]


def test_metering_metrics_are_bounded(catalog: Catalog) -> None:
    metrics = MeteringMetrics(catalog)
    series = metrics.series()
    for n in range(500):
        metrics.credited.labels(f"purpose-{n}").inc()
        metrics.dlq.labels(f"Error{n}").inc()
    metrics.credited.labels(REC).inc(7)
    metrics.commit_seconds.observe(0.02)
    assert metrics.series() == series
    assert metrics.value("consentgate_metering_credited_total", purpose=REC) == 7
    assert metrics.value("consentgate_metering_credited_total", purpose="unknown") == 500
    assert metrics.value("consentgate_metering_dlq_total", error_class="other") == 500
    assert metrics.value("consentgate_metering_db_commit_seconds_count") == 1


def test_consent_metrics_count_actions_and_route_templates() -> None:
    metrics = ConsentMetrics(routes=["/v1/users/{user}/consent"])
    metrics.changes.labels("revoke").inc(2)
    metrics.changes.labels("reticulate").inc()
    metrics.record_request("/v1/users/{user}/consent", 200)
    metrics.record_request("/v1/users/alice/consent", 404)  # a concrete path is never a label
    metrics.visible_seconds.observe(0.3)
    assert metrics.value("consentgate_consent_changes_total", action="revoke") == 2
    assert metrics.value("consentgate_consent_changes_total", action="other") == 1
    assert metrics.value("consentgate_consent_http_requests_total", route="/v1/users/{user}/consent",
                         status="2xx") == 1
    assert metrics.value("consentgate_consent_http_requests_total", route="other", status="4xx") == 1
    assert metrics.value("consentgate_consent_visible_seconds_count") == 1


def test_sink_metrics_record_rows_and_snapshot_time(catalog: Catalog) -> None:
    metrics = SinkMetrics(catalog, clock=lambda: 1_700_000_000.0)
    metrics.rows_written.labels(GEN).inc(10)
    metrics.rows_deleted.labels(GEN).inc(2)
    metrics.snapshot_committed(GEN)
    metrics.lag.labels(GEN, "3").set(4)
    assert metrics.value("consentgate_sink_rows_written_total", purpose=GEN) == 10
    assert metrics.value("consentgate_sink_rows_deleted_total", purpose=GEN) == 2
    assert metrics.value("consentgate_sink_snapshot_timestamp_seconds", purpose=GEN) == 1_700_000_000.0
    assert metrics.value("consentgate_sink_lag", purpose=GEN, partition="3") == 4


def test_audit_metrics_hold_the_last_run_only(tmp_path: Path) -> None:
    metrics = AuditMetrics(clock=lambda: 42.0)
    metrics.record_run(100, ["wrong_outcome", "wrong_outcome", "offset_gap", "made_up", "also_made_up"])
    assert metrics.value("consentgate_audit_findings", kind="wrong_outcome") == 2
    assert metrics.value("consentgate_audit_findings", kind="other") == 2
    metrics.record_run(120, [])
    assert metrics.value("consentgate_audit_findings", kind="wrong_outcome") == 0
    assert metrics.value("consentgate_audit_decisions") == 120
    assert metrics.value("consentgate_audit_last_run_timestamp_seconds") == 42.0
    metrics.write_textfile(tmp_path / "audit.prom")
    assert 'consentgate_audit_findings{kind="offset_gap"} 0.0' in (tmp_path / "audit.prom").read_text()
