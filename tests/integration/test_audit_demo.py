"""The demo's topics audit clean, twice, with the same replay hash; the command's outputs and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from consentgate.audit.run import AuditOptions, run_audit
from consentgate.catalog import Catalog
from consentgate.demo import run_demo
from tests.conftest import SettingsFactory
from tests.integration.test_foundation import run_cli


def test_the_demo_audits_clean_twice_with_one_replay_hash(make_settings: SettingsFactory, catalog: Catalog,
                                                          tmp_path: Path) -> None:
    settings = make_settings()
    lines: list[str] = []
    gate, result = run_demo(settings, catalog, users=800, events=12_000, say=lines.append, malformed_every=400)
    stats = gate.stats
    first = run_audit(settings, catalog, AuditOptions())
    assert first.findings == []
    assert (first.decisions, first.reproduced, first.dead_letters) == (stats.decisions, stats.decisions,
                                                                       stats.dead_letters)
    assert first.dead_letters == result.malformed == 30
    assert first.scope["records"] == result.produced
    assert sum(r["n"] for r in first.counts if r["result"] == "pass") == sum(stats.passed.values())
    dropped: dict[str, int] = {}
    for row in first.counts:
        if row["result"] != "pass":
            dropped[row["result"]] = dropped.get(row["result"], 0) + row["n"]
    assert dropped == dict(stats.dropped)
    assert first.erasures == result.erased and first.retractions == result.erased * len(catalog.purposes)
    second = run_audit(settings, catalog, AuditOptions())
    assert second.findings == [] and second.replay_hash == first.replay_hash

    # the command: JSON in SPEC §8's shape, exit 0 when clean; an HTML pack to a file
    figures = tmp_path / "audit.prom"
    shown = run_cli(settings, "audit", "--format", "json", "--metrics-file", str(figures))
    assert shown.returncode == 0, shown.stderr
    exposed = figures.read_text()  # for node_exporter's textfile collector: the run's figures, no findings
    assert f"consentgate_audit_decisions {float(first.decisions)}" in exposed
    assert 'consentgate_audit_findings{kind="wrong_outcome"} 0.0' in exposed
    assert [line for line in exposed.splitlines() if line.startswith("consentgate_audit_findings{")
            and not line.endswith(" 0.0")] == []
    body = json.loads(shown.stdout)
    assert (body["decisions"], body["reproduced"], body["dead_letters"], body["findings"], body["replay_hash"]) == (
        first.decisions, first.decisions, first.dead_letters, [], first.replay_hash)
    pack = tmp_path / "audit.html"
    written = run_cli(settings, "audit", "--format", "html", "--report", str(pack))
    assert written.returncode == 0, written.stderr
    page = pack.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and first.replay_hash in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
