"""The audit rebuilds every version of every user's consent from consent.changes alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from consentgate.audit.history import Change, GrantSpan, VersionRow, rebuild

GEN, REC = "train_ai_system.generative", "train_ai_system.recommendation"


def change(version: int, action: str, category: str | None = None, purpose: str | None = None,
           at: int = 0, expires: int | None = None, terms: int | None = None, user: str = "u") -> Change:
    return Change(user, version, action, category, purpose, at, expires, terms, f"r{version}", at + 1)


def test_grants_revokes_erasure_and_a_fresh_start() -> None:
    history = rebuild([
        change(3, "revoke", None, GEN, at=30),  # out of order on purpose: versions decide, not arrival
        change(1, "grant", "post", GEN, at=10, terms=2),
        change(2, "grant", "post", REC, at=20, expires=99, terms=3),
        change(4, "grant", "post", REC, at=40, terms=3),  # replaces the grant of v2
        change(5, "erase", at=50),
        change(6, "grant", "post", GEN, at=60, terms=2),
        change(7, "tier", at=70),
    ])
    assert history.problems == []
    assert sorted(history.grants) == [
        GrantSpan("u", "post", GEN, 1, 3, 10, None, 2, "r1"),
        GrantSpan("u", "post", GEN, 6, None, 60, None, 2, "r6"),
        GrantSpan("u", "post", REC, 2, 4, 20, 99, 3, "r2"),
        GrantSpan("u", "post", REC, 4, 5, 40, None, 3, "r4"),
    ]
    assert [(v.version, v.action, v.erased) for v in history.versions] == [
        (1, "grant", False), (2, "grant", False), (3, "revoke", False), (4, "grant", False), (5, "erase", True),
        (6, "grant", False), (7, "tier", False)]
    assert history.versions[0] == VersionRow("u", 1, "grant", False, 11, 10, "r1")


def test_a_revoke_matches_category_and_purpose_when_given() -> None:
    history = rebuild([change(1, "grant", "post", GEN), change(2, "grant", "post", REC),
                       change(3, "grant", "click", REC), change(4, "revoke", "post", None)])
    assert sorted((g.category, g.purpose, g.to_version) for g in history.grants) == [
        ("click", REC, None), ("post", GEN, 4), ("post", REC, 4)]


def test_missing_or_doubled_versions_are_problems() -> None:
    history = rebuild([change(1, "grant", "post", GEN), change(3, "revoke"),
                       change(1, "grant", "post", GEN, user="w"), change(1, "erase", user="w"),
                       change(1, "shout", user="x")])
    assert history.problems == [
        ("u", "consent versions [1, 3] are not 1..2 (a change is missing or written twice)"),
        ("w", "consent versions [1, 1] are not 1..2 (a change is missing or written twice)"),
        ("x", "version 1: unknown action 'shout'"),
    ]


FORBIDDEN = ("consentgate.decision", "consentgate.streams", "consentgate.kernel", "consentgate.regate")


def test_the_audit_never_imports_the_gate() -> None:
    """Loaded on its own, the audit (and its command) pulls in no gate decision code or kernel."""
    probe = ("import sys, consentgate.audit.run, consentgate.audit.html, consentgate.cli.audit_cmds;"
             "print('\\n'.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in loaded if m.startswith(FORBIDDEN)] == []
    package = Path(__file__).resolve().parents[2] / "consentgate" / "audit"
    imported = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert sorted(m for m in imported if m.startswith(FORBIDDEN)) == []
    assert "consentgate.connectors.kafka" in imported  # the scan sees real imports
