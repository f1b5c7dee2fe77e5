"""``consentgate top``: snapshots from scraped metrics (exact figures), the screen, the command."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from rich.console import Console

from consentgate.catalog import Catalog
from consentgate.cli.main import main
from consentgate.ops.scrape import Page, parse, scrape
from consentgate.ops.screen import render
from consentgate.ops.snapshot import build, quantile
from consentgate.streams.metrics import GateMetrics, MeteringMetrics, SinkMetrics

GEN, REC, ADS = "train_ai_system.generative", "train_ai_system.recommendation", "train_ai_system.ads_ranking"
NOW = 1_800_000_000.0


def page(metrics: GateMetrics | MeteringMetrics | SinkMetrics, kind: str, worker: str) -> Page:
    return Page(f"http://{worker}/metrics", kind, worker, parse(generate_latest(metrics.registry).decode()))


def gate(catalog: Catalog, passed: int = 4) -> GateMetrics:
    g = GateMetrics(catalog, clock=lambda: NOW - 2.5)
    g.records_in.inc(12)
    g.dlq.labels("UndecodableRecord").inc(2)
    g.record_outcomes(Counter({(REC, "click", "passed"): passed, (ADS, "click", "no_grant"): 5,
                               (GEN, "voice", "unknown_category"): 1, (REC, "voice", "unknown_category"): 1}))
    g.consent_view_lag.set(0)
    g.consent_view_size.set(7)
    g.record_lag({0: 3, 1: 0})
    g.aborts.labels("registry").inc()
    for seconds in (0.02, 0.03, 0.2, 0.2):
        g.revocation_latency.observe(seconds)
    return g


def metering(catalog: Catalog, read: int, credited: int, lag: int) -> MeteringMetrics:
    m = MeteringMetrics(catalog)
    m.records_in.inc(read)
    m.credited.labels(REC).inc(credited)
    m.lag.labels("0").set(lag)
    return m


def test_the_snapshot_sums_workers_exactly(catalog: Catalog) -> None:
    snap = build([page(gate(catalog, 3), "gate", "g1"), page(gate(catalog, 1), "gate", "g2"),
                  page(metering(catalog, 6, 6, 2), "metering", "m1")], NOW)
    assert {k: snap[k] for k in ("records_in", "decided", "passed", "dropped", "dead_letters", "contributions",
                                 "credited", "passed_by_purpose", "dead_letters_by_class", "aborts", "lag")} == {
        "records_in": 24, "decided": 20, "passed": 4, "dropped": {"no_grant": 10, "unknown_category": 4},
        "dead_letters": 4, "contributions": 6, "credited": 6, "passed_by_purpose": {ADS: 0, GEN: 0, REC: 4},
        "dead_letters_by_class": {"UndecodableRecord": 4}, "aborts": {"registry": 2}, "lag": {"0": 6, "1": 0}}
    # every cell the catalog allows is shown, at 0 until something is decided there
    grid = {c: {p.name: {"passed": 0, "decided": 0} for p in catalog.purposes.values() if c in p.categories}
            for c in catalog.categories}
    grid["unknown"] = {p: {"passed": 0, "decided": 0} for p in catalog.purposes}
    grid["click"] = {ADS: {"passed": 0, "decided": 10}, REC: {"passed": 4, "decided": 4}}
    grid["unknown"].update({GEN: {"passed": 0, "decided": 2}, REC: {"passed": 0, "decided": 2}})
    assert snap["matrix"] == grid
    assert snap["consent_view"] == {"users": 14, "lag": 0, "age_seconds": 2.5, "corrupt_records": 0}
    assert snap["revocation_enforcement"] == {"count": 8, "p50_seconds": 0.05, "p99_seconds": 0.247}
    assert snap["invariant"] == {"state": "broken", "passed": 4, "contributions_read": 6, "contributions_pending": 2,
                                 "credited": 6, "redelivered": 0, "dead_lettered": 0}
    assert [(w["kind"], w["worker"], w["up"]) for w in snap["workers"]] == [
        ("gate", "g1", True), ("gate", "g2", True), ("metering", "m1", True)]


def test_the_invariant_holds_when_metering_accounts_for_every_pass(catalog: Catalog) -> None:
    snap = build([page(gate(catalog, 4), "gate", "g"), page(metering(catalog, 3, 3, 1), "", "m")], NOW)
    assert snap["invariant"]["state"] == "holding"
    # a credit lost between reading and the ledger breaks it
    snap = build([page(gate(catalog, 4), "gate", "g"), page(metering(catalog, 4, 3, 0), "", "m")], NOW)
    assert snap["invariant"]["state"] == "broken"


def test_without_metering_the_invariant_is_unchecked_and_a_down_worker_is_shown(catalog: Catalog) -> None:
    down = Page("http://127.0.0.1:1/metrics", "metering", "m", error="URLError: refused")
    snap = build([page(gate(catalog), "gate", "g"), down], NOW)
    assert snap["invariant"] == {"state": "unchecked", "passed": 4, "detail": "no metering worker reporting metrics"}
    assert snap["contributions"] is None and snap["credited"] is None
    assert snap["workers"][1] == {"kind": "metering", "worker": "m", "url": "http://127.0.0.1:1/metrics",
                                  "up": False, "error": "URLError: refused"}


def test_sink_figures_appear_when_a_sink_reports(catalog: Catalog) -> None:
    sink = SinkMetrics(catalog, clock=lambda: NOW - 60)
    sink.rows_written.labels(GEN).inc(9)
    sink.rows_deleted.labels(GEN).inc(2)
    sink.snapshot_committed(GEN)
    snap = build([page(gate(catalog), "gate", "g"), page(sink, "sink", "s")], NOW)
    assert snap["sinks"] == {GEN: {"rows_written": 9, "rows_deleted": 2, "snapshot_age_seconds": 60.0}}


def test_quantile_matches_prometheus_histogram_quantile() -> None:
    buckets = {0.1: 2.0, 0.5: 6.0, 1.0: 8.0, math.inf: 10.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * 3 / 4)
    assert quantile(0.2, buckets) == pytest.approx(0.1)
    assert quantile(0.99, buckets) == 1.0  # in +Inf: the highest finite bound
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None


def test_a_malformed_page_is_an_error_not_a_crash() -> None:
    assert scrape("http://x/metrics", get=lambda url, timeout: "this is {not prometheus").error is not None
    refused = scrape("http://127.0.0.1:9/metrics", timeout=1)
    assert refused.error is not None and refused.samples == []


def test_the_screen_shows_the_funnel_and_the_invariant(catalog: Catalog) -> None:
    snap = build([page(gate(catalog, 4), "gate", "g"), page(metering(catalog, 3, 3, 1), "", "m")], NOW)
    console = Console(width=160, record=True, color_system=None)
    console.print(render(snap, 1.5))
    text = console.export_text()
    assert "passed outcomes = contributions: HOLDING" in text
    assert "dropped: no_grant" in text and "partition 0" in text and "p50 50 ms" in text


def test_top_once_json_reads_registered_workers(catalog: Catalog, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    g = gate(catalog)
    g.serve(0, data_dir=tmp_path, worker="g1")
    try:
        assert main(["top", "--data-dir", str(tmp_path), "--once", "--json"]) == 0
        snap = json.loads(capsys.readouterr().out)
        assert {k: snap[k] for k in ("records_in", "passed", "dropped", "dead_letters", "contributions")} == {
            "records_in": 12, "passed": 4, "dropped": {"no_grant": 5, "unknown_category": 2}, "dead_letters": 2,
            "contributions": None}
        assert main(["top", "--metrics", g.server.url if g.server else "", "--once", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["workers"][0]["kind"] == "gate"
    finally:
        g.close()


def test_top_refuses_what_it_cannot_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--data-dir", str(tmp_path), "--once", "--json"]) == 2
    assert "no metrics endpoints" in capsys.readouterr().err
    assert main(["top", "--data-dir", str(tmp_path), "--json"]) == 2
    assert "use it with --once" in capsys.readouterr().err
    assert main(["top", "--metrics", "file:///etc/passwd", "--once"]) == 2
    assert "http(s) URLs" in capsys.readouterr().err
    assert main(["top", "--metrics", "http://127.0.0.1:9/metrics", "--once", "--json"]) == 1  # all down
    assert json.loads(capsys.readouterr().out)["workers"][0]["up"] is False


def test_the_screen_shows_a_broken_invariant_and_a_down_worker(catalog: Catalog) -> None:
    down = Page("http://127.0.0.1:1/metrics", "sink", "s1", error="URLError: refused")
    snap = build([page(gate(catalog, 4), "gate", "g"), page(metering(catalog, 4, 3, 0), "", "m"), down], NOW)
    console = Console(width=160, record=True, color_system=None)
    console.print(render(snap))
    text = console.export_text()
    assert "passed outcomes = contributions: BROKEN  passed 4 = read 4 + pending 0;  read = credited 3" in text
    assert "3 endpoint(s), 1 down" in text and "down: URLError: refused" in text
