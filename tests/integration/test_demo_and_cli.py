from __future__ import annotations

import json
import socket
import urllib.request

from consentgate.connectors.topics import TopicNames

from consentgate.catalog import Catalog
from consentgate.demo import counters_agree, run_demo, settle, settlement_summary, summary
from consentgate.reconcile import Balance, read_back
from consentgate.settings import Settings
from tests.conftest import SettingsFactory
from tests.helpers import GateThread, values
from tests.integration.test_foundation import run_cli

GEN = "train_ai_system.generative"


def test_demo_reconciles_and_reaches_every_drop_reason(make_settings: SettingsFactory, catalog: Catalog,
                                                       ledger_url: str) -> None:
    settings = make_settings(ledger_url=ledger_url)
    lines: list[str] = []
    gate, result = run_demo(settings, catalog, users=800, events=12_000, say=lines.append, malformed_every=400)
    stats = gate.stats
    assert result.produced == 12_000 + result.malformed + result.unknown
    assert stats.records_in == result.produced
    assert stats.dead_letters == result.malformed == 30
    topics = TopicNames.of(settings, catalog)
    # Each side counted on its own: input offsets against decisions and dead letters read back.
    balance = read_back(settings, topics)
    assert balance == Balance(records_in=result.produced, passed=stats.records_passed,
                              dropped=stats.decisions - stats.records_passed, dead_letters=30, missing=(),
                              duplicated=(), strays=())
    assert balance.balanced and counters_agree(gate, balance)
    assert set(stats.dropped) == {"no_consent_record", "erased", "no_grant", "grant_after_event", "expired",
                                  "stale_terms", "unknown_category"}
    assert stats.dropped["unknown_category"] == 3 * result.unknown
    report = summary(gate, result, balance)
    assert "  in = passed + dropped + DLQ      yes" in report
    assert "  the gate's own counters agree    yes" in report
    assert sum(1 for line in lines if line.startswith("t=")) >= 1
    assert len(values(settings, topics.decisions)) == stats.decisions

    settlement = settle(settings, catalog, lines.append)
    assert settlement.credited == sum(stats.passed.values()) == len(values(settings, topics.contributions))
    assert settlement.declared_cents == len(settlement.periods) * (50_000 * (1 + 2 + 3) + 25_000)
    assert settlement.pools_paid_cents + settlement.pools_carried_cents == settlement.declared_cents
    assert settlement.pools_paid_cents > 0
    assert sum(r.contributions for r in settlement.periods) == settlement.credited
    assert len(settlement.statements) >= 3
    assert any("free tier: not paid" in text for text in settlement.statements.values())
    report = settlement_summary(gate, settlement)
    assert "  passed = credited                        yes" in report
    assert "  pools paid + carried = declared          yes" in report


def test_consent_commands(settings: Settings, topics: TopicNames) -> None:
    granted = run_cli(settings, "consent", "grant", "--user", "u-cli", "--category", "post", "--purpose", GEN,
                      "--tier", "data_sharing", "--plan", "credits", "--jurisdiction", "EU")
    assert granted.returncode == 0, granted.stderr
    receipt = json.loads(granted.stdout)
    assert (receipt["action"], receipt["consent_version"], receipt["terms_version"], receipt["jurisdiction"],
            receipt["plan"]) == ("grant", 1, 2, "EU", "credits")
    refused = run_cli(settings, "consent", "grant", "--user", "u-cli", "--category", "click", "--purpose", GEN)
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith(
        "consentgate: purpose 'train_ai_system.generative' does not use category 'click' (it uses: conversation, "
        "post)")
    past = run_cli(settings, "consent", "grant", "--user", "u-cli", "--category", "post", "--purpose", GEN,
                   "--expires", "2001-01-01T00:00:00Z")
    assert past.returncode == 2 and "is not in the future" in past.stderr
    shown = json.loads(run_cli(settings, "consent", "show", "--user", "u-cli").stdout)
    assert (shown["version"], shown["tier"], [(g["category"], g["purpose"]) for g in shown["grants"]]) == (
        1, "data_sharing", [("post", GEN)])
    assert run_cli(settings, "consent", "revoke", "--user", "u-cli").returncode == 0
    assert json.loads(run_cli(settings, "consent", "show", "--user", "u-cli").stdout)["grants"] == []
    erased = run_cli(settings, "consent", "erase", "--user", "u-cli")
    assert erased.returncode == 0 and json.loads(erased.stdout)["consent_version"] == 3
    assert json.loads(run_cli(settings, "consent", "show", "--user", "u-cli").stdout) == {"user_id": "u-cli",
                                                                                          "erased": True}
    assert json.loads(run_cli(settings, "consent", "show", "--user", "nobody").stdout) == {"user_id": "nobody",
                                                                                            "consent": None}
    changes = [(c["action"], c["consent_version"]) for c in values(settings, topics.consent_changes)]
    assert changes == [("grant", 1), ("revoke", 2), ("erase", 3)]


def test_metrics_endpoint_serves_prometheus_text(make_settings: SettingsFactory, topics: TopicNames,
                                                 catalog: Catalog) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(metrics_port=port)
    with GateThread(settings, catalog):  # serves while it runs, registered for `consentgate top`
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        registered = list((settings.data_dir / "metrics").glob("gate-*.json"))
        assert [json.loads(r.read_text())["url"] for r in registered] == [f"http://127.0.0.1:{port}/metrics"]
    for name in ("consentgate_records_in_total", "consentgate_consent_view_users", "consentgate_batch_seconds",
                 "consentgate_revocation_enforcement_seconds", "consentgate_consent_view_lag"):
        assert name in text
    assert not list((settings.data_dir / "metrics").glob("gate-*.json"))  # a stopped gate unregisters
