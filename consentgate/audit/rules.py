"""SPEC §3 as the audit reads it: which results a decision's outcome may have. Pure: no I/O.

Two forms of one rule set: ``acceptable`` (plain Python, the reference, tested row by row
against the SPEC) and ``ACCEPTABLE_SQL`` (the same rules as a DuckDB expression, used on
millions of outcomes at once). A property test holds the two equal.

A Decision does not carry the activity's ``occurred_at``, and the audit never reads activity
content. For a pass, the time comes from its training record or contribution and the rules
apply exactly. For a drop the activity's time is unknown, so the reasons that depend on it
(``grant_after_event``, and ``expired`` by an expiry before the activity) are accepted
whenever some activity time allowed by the gate (at most ``clock skew`` after the decision)
would give them; every other reason is checked exactly.
"""

from __future__ import annotations

from typing import NamedTuple

PASS = "pass"

NONE, ERASED, PRESENT = "none", "erased", "present"


class GrantTerms(NamedTuple):
    granted_at: int
    expires_at: int | None
    terms_version: int


def acceptable(category_known: bool, states: frozenset[str], grant: GrantTerms | None, terms_current: int,
               occurred_at: int | None, decided_at: int, skew_ms: int) -> frozenset[str]:
    """Every result (``PASS`` or a drop reason) the gate may have given, times in epoch ms.

    ``states``: the consent states the gate may have held for the user (``NONE``, ``ERASED``,
    ``PRESENT``; ``grant`` is the grant for exactly (category, purpose) in the present state).
    """
    if not category_known:
        return frozenset({"unknown_category"})
    results: set[str] = set()
    if NONE in states:
        results.add("no_consent_record")
    if ERASED in states:
        results.add("erased")
    if PRESENT in states:
        if grant is None:
            results.add("no_grant")
        elif occurred_at is not None:
            results.add(_exact(grant, terms_current, occurred_at, decided_at))
        else:
            results.add("grant_after_event")  # had the activity happened before the grant
            results.add(_at_or_after_grant(grant, terms_current, decided_at))
            if grant.expires_at is not None and grant.expires_at <= decided_at + skew_ms:
                results.add("expired")  # had the activity happened after the expiry
    return frozenset(results)


def _exact(grant: GrantTerms, terms_current: int, occurred_at: int, decided_at: int) -> str:
    if grant.granted_at > occurred_at:
        return "grant_after_event"
    if grant.expires_at is not None and (grant.expires_at <= occurred_at or grant.expires_at <= decided_at):
        return "expired"
    if grant.terms_version < terms_current:
        return "stale_terms"
    return PASS


def _at_or_after_grant(grant: GrantTerms, terms_current: int, decided_at: int) -> str:
    if grant.expires_at is not None and grant.expires_at <= decided_at:
        return "expired"
    if grant.terms_version < terms_current:
        return "stale_terms"
    return PASS


# Columns it reads: category_known, may_none, may_erased, may_present (BOOLEAN), has_grant, granted_at,
# expires_at, g_terms, terms_current, occurred_at, decided_at (BIGINT ms); parameter $skew_ms.
ACCEPTABLE_SQL = """
CASE WHEN NOT category_known THEN ['unknown_category']
ELSE list_sort(list_distinct(
    (CASE WHEN may_none THEN ['no_consent_record'] ELSE [] END)
 || (CASE WHEN may_erased THEN ['erased'] ELSE [] END)
 || (CASE WHEN NOT may_present THEN []
          WHEN NOT has_grant THEN ['no_grant']
          WHEN occurred_at IS NOT NULL THEN [CASE
               WHEN granted_at > occurred_at THEN 'grant_after_event'
               WHEN expires_at IS NOT NULL AND (expires_at <= occurred_at OR expires_at <= decided_at) THEN 'expired'
               WHEN g_terms < terms_current THEN 'stale_terms'
               ELSE 'pass' END]
          ELSE ['grant_after_event', CASE
               WHEN expires_at IS NOT NULL AND expires_at <= decided_at THEN 'expired'
               WHEN g_terms < terms_current THEN 'stale_terms'
               ELSE 'pass' END]
            || (CASE WHEN expires_at IS NOT NULL AND expires_at <= decided_at + $skew_ms THEN ['expired']
                     ELSE [] END)
     END)))
END
"""
