"""The reliability oracle catches each kind of violation it reports (it must be able to fail)."""

from __future__ import annotations

import copy
from typing import Any

from consentgate.catalog import load_catalog
from consentgate.pseudonyms import key_id, pseudonym, record_id
from tests.reliability.oracle import check

CATALOG = load_catalog()
GEN, REC = "train_ai_system.generative", "train_ai_system.recommendation"
T_GRANT, T_EVENT, T_DECIDED = "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z", "2026-01-01T00:00:02.000Z"


def change(version: int, action: str, **kw: Any) -> dict[str, Any]:
    base = {"user_id": "u", "consent_version": version, "action": action, "category": None, "purpose": None,
            "at": T_GRANT, "expires_at": None, "terms_version": None}
    return base | kw


CHANGES = [change(1, "grant", category="post", purpose=GEN, terms_version=2)]
EVENTS = {"e1": {"event_id": "e1", "user_id": "u", "category": "post", "occurred_at": T_EVENT}}


def decision(gen: str | None, rec: str | None = "no_grant", version: int | None = 1) -> dict[str, Any]:
    return {"event_id": "e1", "consent_version": version, "decided_at": T_DECIDED, "outcomes": [
        {"purpose": REC, "passed": rec is None, "reason": rec}, {"purpose": GEN, "passed": gen is None, "reason": gen}]}


SECRET = b"oracle-test-secret-0123456789abcdef"
PASS = [{"event_id": "e1", "purpose": GEN}]
TRAINED = [{"pseudonym": pseudonym(SECRET, GEN, "u"), "record_id": record_id(SECRET, GEN, "e1"),
            "key_id": key_id(SECRET), "purpose": GEN, "category": "post", "fields": {"text": "hello"}}]


def run(decisions: list[dict[str, Any]], training: list[dict[str, Any]] = TRAINED,
        contributions: list[dict[str, Any]] = PASS, changes: list[dict[str, Any]] = CHANGES, acked: int = 1,
        dlq: tuple[tuple[int, int], ...] = (), bad: frozenset[tuple[int, int]] = frozenset()
        ) -> dict[str, list[str]]:
    return check(CATALOG, SECRET, EVENTS, {"e1": acked}, copy.deepcopy(changes), decisions, training,
                 contributions, list(dlq), set(bad)).problems()


def test_a_correct_run_is_clean() -> None:
    assert run([decision(None)]) == {}


def test_each_violation_is_caught() -> None:
    assert list(run([decision("no_grant")], [], [])) == ["losses"]
    assert list(run([decision(None, rec=None)], TRAINED, PASS)) == ["leaks", "losses"]  # REC passed w/o training
    assert run([decision(None), decision(None)]) == {"duplicates": ["decision e1 x2"]}
    assert run([decision(None)], TRAINED * 2) == {
        "duplicates": ["training ('e1', 'train_ai_system.generative') x2"]}
    assert list(run([decision("expired")], [], [])) == ["losses"]  # dropped although it had to pass
    assert run([], [], []) == {"losses": ["no decision for e1"]}
    assert run([decision(None)], dlq=((0, 5),)) == {"losses": ["good input (0, 5) was dead-lettered"]}
    assert run([decision(None)], dlq=((0, 5),), bad=frozenset({(0, 5)})) == {}
    assert run([decision(None)], dlq=((0, 6),), bad=frozenset({(0, 5)})) == {"losses": [
        "bad input (0, 5) has no dead letter", "good input (0, 6) was dead-lettered"]}
    assert run([decision(None)], dlq=((0, 5), (0, 5)), bad=frozenset({(0, 5)})) == {
        "duplicates": ["dead letter for input (0, 5) x2"]}
    revoked = [*CHANGES, change(2, "revoke", purpose=GEN)]
    assert list(run([decision(None, version=1)], changes=revoked, acked=2)) == ["stale_consent"]
    assert run([decision("no_grant", version=2)], [], [], changes=revoked, acked=2) == {}
    assert list(run([decision("expired", version=2)], [], [], changes=revoked, acked=2)) == ["wrong_reasons"]
    erased = [*CHANGES, change(2, "erase")]
    assert run([decision("erased", rec="erased", version=None)], [], [], changes=erased, acked=2) == {}
    assert list(run([decision("no_consent_record", rec="no_consent_record", version=None)], [], [],
                    changes=erased, acked=2)) == ["wrong_reasons"]


def test_blind_spots_are_closed() -> None:
    """A purpose left out of a decision, and a training record with too much in it, are caught."""
    only_gen = {"event_id": "e1", "consent_version": 1, "decided_at": T_DECIDED,
                "outcomes": [{"purpose": GEN, "passed": True, "reason": None}]}
    assert run([only_gen]) == {"missing_outcomes": [
        "e1: outcomes for ['train_ai_system.generative'], expected ['train_ai_system.generative', "
        "'train_ai_system.recommendation']"]}
    extra_field = [{**TRAINED[0], "fields": {"text": "hello", "thread_id": "t1"}}]
    assert run([decision(None)], extra_field) == {"bad_content": [
        f"training {record_id(SECRET, GEN, 'e1')}/{GEN} keeps ['thread_id'] beyond ['text']"]}
    raw_id = [{**TRAINED[0], "event_id": "e1"}]
    assert run([decision(None)], raw_id) == {"bad_content": [
        f"training {record_id(SECRET, GEN, 'e1')}/{GEN} carries raw ids ['event_id']"]}
    wrong_nym = [{**TRAINED[0], "pseudonym": pseudonym(SECRET, REC, "u")}]
    assert run([decision(None)], wrong_nym) == {"bad_content": [
        f"training {record_id(SECRET, GEN, 'e1')}/{GEN} has a wrong pseudonym or key id"]}
