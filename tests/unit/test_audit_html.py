"""The audit pack renders offline, escapes what it shows, and lists every finding it was given."""

from __future__ import annotations

from consentgate.audit.findings import Finding
from consentgate.audit.html import to_html
from consentgate.audit.report import AuditReport, PurposeSummary, to_json, to_text

GEN = "train_ai_system.generative"


def report(findings: list[Finding]) -> AuditReport:
    purpose = PurposeSummary(GEN, "Train the generative assistant", "training.gen", 3, 2, 3, {"post": 3},
                             1_700_000_000_000, 1_700_000_060_000,
                             {"post": {"fideslang": "user.content.public", "title": "Posts", "keep": ["text"]}},
                             {"collected": "posts", "use": "to train <models>", "who_sees": "the team"}, 2, 730)
    return AuditReport(
        decisions=5, reproduced=5 - len(findings), dead_letters=1, findings=findings, replay_hash="ab" * 32,
        scope={"topic": "activity.events", "from_ms": None, "to_ms": None, "records": 6,
               "partitions": {"0": {"start": 0, "end": 6}}, "topic_prefix": "", "consent_allowance_ms": 1000},
        catalog={"version": 1, "sha256": "cd" * 32, "path": "shipped catalog.yaml"},
        counts=[{"category": "post", "purpose": GEN, "result": "pass", "n": 3},
                {"category": "post", "purpose": GEN, "result": "no_grant", "n": 2}],
        dead_letter_classes={"UndecodableRecord": 1},
        withdrawals=[{"at": 1_700_000_000_000, "width_ms": 1000, "revoke": 2, "erase": 1}],
        purposes=[purpose], records_read={"gate.decisions": 5}, erasures=1, retractions=3)


def test_a_clean_pack() -> None:
    page = to_html(report([]))
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 2
    assert "No findings" in page and "ab" * 32 in page and "cd" * 32 in page
    assert "to train &lt;models&gt;" in page and "<models>" not in page
    assert "Art 53(1)(d)" in page and "Art 30" in page and "730 days" in page
    assert "src=" not in page and "https://" not in page and "<script" not in page
    assert "RESULT: no findings" in to_text(report([]))


def test_findings_are_listed_and_escaped() -> None:
    found = [Finding("wrong_outcome", "e-<1>", GEN, "passed, expected no_grant (consent v2)", "input 0@3"),
             Finding("offset_gap", None, None, "no decision or dead letter for input offset 4", "input 0@4")]
    page = to_html(report(found))
    assert "2 findings" in page and "e-&lt;1&gt;" in page and "input offset 4" in page
    text = to_text(report(found))
    assert "RESULT: 2 findings: offset_gap 1, wrong_outcome 1" in text
    assert '"kind": "wrong_outcome"' in to_json(report(found))
