"""An oracle written apart from the gate: which (event, purpose) pairs had to pass, and why not.

Consent states are rebuilt from consent.changes alone (not consent.state): replaying each
user's receipts in version order gives the state at every version. Each decision names the
version it used; the oracle checks that version was at least the one acknowledged before the
event was produced (consent first), then recomputes every outcome by SPEC §3 with its own
code, and compares all committed outputs exactly: every purpose the catalog asks about has an
outcome, and every training record holds only the fields its purpose keeps, under the right
pseudonym and keyed record id, with no raw id.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consentgate.catalog import Catalog
from consentgate.pseudonyms import key_id, pseudonym, record_id

ERASED = "erased"


@dataclass
class Report:
    records: int = 0
    leaks: list[str] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    wrong_reasons: list[str] = field(default_factory=list)
    stale_consent: list[str] = field(default_factory=list)
    missing_outcomes: list[str] = field(default_factory=list)
    bad_content: list[str] = field(default_factory=list)

    def problems(self) -> dict[str, list[str]]:
        return {k: v[:5] for k, v in vars(self).items() if isinstance(v, list) and v}


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def replay(changes: list[dict[str, Any]]) -> dict[str, dict[int, Any]]:
    """user -> version -> state (a dict of (category, purpose) -> grant dict, or ERASED)."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        by_user.setdefault(change["user_id"], []).append(change)
    history: dict[str, dict[int, Any]] = {}
    for user, items in by_user.items():
        items.sort(key=lambda c: c["consent_version"])
        versions = [c["consent_version"] for c in items]
        assert versions == list(range(1, len(items) + 1)), f"{user}: versions {versions} are not 1..n"
        grants: dict[tuple[str, str], dict[str, Any]] | str = {}
        states: dict[int, Any] = {}
        for c in items:
            if c["action"] == "grant":
                grants = dict(grants) if isinstance(grants, dict) else {}
                grants[(c["category"], c["purpose"])] = c
            elif c["action"] == "revoke":
                assert isinstance(grants, dict)
                grants = {k: g for k, g in grants.items() if not (
                    (c["category"] is None or k[0] == c["category"]) and (c["purpose"] is None or k[1] == c["purpose"]))}
            elif c["action"] == "erase":
                grants = ERASED
            states[c["consent_version"]] = grants
        history[user] = states
    return history


def expected_reason(catalog: Catalog, state: Any, category: str, purpose: str, occurred_at: datetime,
                    decided_at: datetime) -> str | None:
    if category not in catalog.categories:
        return "unknown_category"
    if state is None:
        return "no_consent_record"
    if state == ERASED:
        return "erased"
    grant = state.get((category, purpose))
    if grant is None:
        return "no_grant"
    if _ts(grant["at"]) > occurred_at:
        return "grant_after_event"
    expires = grant["expires_at"]
    if expires is not None and (_ts(expires) <= occurred_at or _ts(expires) <= decided_at):
        return "expired"
    if grant["terms_version"] < catalog.purposes[purpose].terms_version:
        return "stale_terms"
    return None


RAW_IDS = ("event_id", "user_id", "receipt_id")


def _purposes_asked(catalog: Catalog, category: str) -> set[str]:
    """Every purpose a decision must answer for: those accepting the category, or all for an unknown one."""
    if category not in catalog.categories:
        return set(catalog.purposes)
    return {p.name for p in catalog.purposes.values() if category in p.categories}


def _check_content(catalog: Catalog, secret: bytes, events: dict[str, dict[str, Any]],
                   by_record: dict[tuple[str, str], str], r: dict[str, Any], report: Report) -> None:
    where = f"training {r.get('record_id')}/{r.get('purpose')}"
    raw = [name for name in RAW_IDS if name in r]
    if raw:
        report.bad_content.append(f"{where} carries raw ids {raw}")
    event_id = by_record.get((r["record_id"], r["purpose"]))
    if event_id is None:
        return  # reported as a leak: no passing decision names it
    event = events[event_id]
    keep = catalog.purposes[r["purpose"]].categories[event["category"]].keep
    if not set(r["fields"]) <= set(keep):
        extra = sorted(set(r["fields"]) - set(keep))
        report.bad_content.append(f"{where} keeps {extra} beyond {sorted(keep)}")
    if r["pseudonym"] != pseudonym(secret, r["purpose"], event["user_id"]) or r["key_id"] != key_id(secret):
        report.bad_content.append(f"{where} has a wrong pseudonym or key id")


def check(catalog: Catalog, secret: bytes, events: dict[str, dict[str, Any]], acked: dict[str, int],
          changes: list[dict[str, Any]], decisions: list[dict[str, Any]], training: list[dict[str, Any]],
          contributions: list[dict[str, Any]], dead_letters: list[tuple[int, int]],
          bad_inputs: set[tuple[int, int]]) -> Report:
    """``events``: event_id -> produced event (JSON shape); ``acked``: event_id -> the user's consent
    version acknowledged before it was produced (0: none); ``secret``: the pseudonym secret, to tie
    training records (keyed ids only) to their decisions; ``dead_letters``: the input (partition,
    offset) of every dead letter; ``bad_inputs``: where the malformed inputs were appended."""
    report = Report(records=len(events) + len(bad_inputs))
    history = replay(changes)
    seen = Counter(d["event_id"] for d in decisions)
    report.duplicates += [f"decision {e} x{n}" for e, n in seen.items() if n > 1]
    report.losses += [f"no decision for {e}" for e in events if e not in seen]
    report.leaks += [f"decision for unknown event {e}" for e in seen if e not in events]
    lettered = Counter(dead_letters)
    report.duplicates += [f"dead letter for input {c} x{n}" for c, n in lettered.items() if n > 1]
    report.losses += [f"bad input {c} has no dead letter" for c in sorted(bad_inputs - set(lettered))]
    report.losses += [f"good input {c} was dead-lettered" for c in sorted(set(lettered) - bad_inputs)]
    must_pass: set[tuple[str, str]] = set()
    for d in decisions:
        event = events.get(d["event_id"])
        if event is None:
            continue
        user, version, floor = event["user_id"], d["consent_version"], acked[d["event_id"]]
        states = history.get(user, {})
        if version is None:
            # No record, or erased: only acceptable if nothing newer had been acknowledged.
            candidates = ([None] if floor == 0 else []) + (
                [ERASED] if any(v >= floor and s == ERASED for v, s in states.items()) else [])
            if not candidates:
                report.stale_consent.append(f"{d['event_id']}: decided without consent, v{floor} acknowledged")
                continue
        else:
            if version < floor:
                report.stale_consent.append(f"{d['event_id']}: used v{version}, v{floor} acknowledged before")
            candidates = [states.get(version, "missing")]
        asked = _purposes_asked(catalog, event["category"])
        answered = {o["purpose"] for o in d["outcomes"]}
        if answered != asked:
            report.missing_outcomes.append(f"{d['event_id']}: outcomes for {sorted(answered)}, "
                                           f"expected {sorted(asked)}")
        decided_at, occurred_at = _ts(d["decided_at"]), _ts(event["occurred_at"])
        best: list[str] | None = None
        for state in candidates:
            problems: list[str] = []
            for outcome in d["outcomes"]:
                want = expected_reason(catalog, state, event["category"], outcome["purpose"], occurred_at,
                                       decided_at)
                got = None if outcome["passed"] else outcome["reason"]
                where = f"{d['event_id']}/{outcome['purpose']}"
                if got is None and want is not None:
                    problems.append(f"leak {where}: passed, expected {want}")
                elif got is not None and want is None:
                    problems.append(f"loss {where}: dropped as {got}, expected pass")
                elif got != want:
                    problems.append(f"wrong {where}: {got}, expected {want}")
            if best is None or len(problems) < len(best):
                best = problems
        for problem in best or []:
            kind, _, text = problem.partition(" ")
            {"leak": report.leaks, "loss": report.losses, "wrong": report.wrong_reasons}[kind].append(text)
        must_pass |= {(d["event_id"], o["purpose"]) for o in d["outcomes"] if o["passed"]}
    by_record = {(record_id(secret, p, e), p): e for e, p in must_pass}
    for r in training:
        _check_content(catalog, secret, events, by_record, r, report)
    # A training record names its event only through the keyed record id.
    keyed = [{"event_id": by_record.get((r["record_id"], r["purpose"]), f"?{r['record_id']}"),
              "purpose": r["purpose"]} for r in training]
    for name, records in (("training", keyed), ("contribution", contributions)):
        counts = Counter((r["event_id"], r["purpose"]) for r in records)
        report.duplicates += [f"{name} {k} x{n}" for k, n in counts.items() if n > 1]
        report.leaks += [f"{name} {k} without a passing decision" for k in counts if k not in must_pass]
        report.losses += [f"no {name} for passed {k}" for k in must_pass if k not in counts]
    return report
