"""The audit's reading of SPEC §3, row by row, and its SQL form held equal to it."""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentgate.audit.rules import ACCEPTABLE_SQL, ERASED, NONE, PASS, PRESENT, GrantTerms, acceptable

T = 1_000_000  # the activity time, ms
DECIDED = T + 5_000
SKEW = 300_000
OK = GrantTerms(T - 1, None, 2)

ROWS = [
    # (category known, states, grant, current terms, occurred_at, expected)
    ("unknown category", False, {PRESENT}, OK, 2, T, {"unknown_category"}),
    ("no consent record", True, {NONE}, None, 2, T, {"no_consent_record"}),
    ("erased", True, {ERASED}, None, 2, T, {"erased"}),
    ("erased, or its tombstone compacted", True, {NONE, ERASED}, None, 2, None, {"no_consent_record", "erased"}),
    ("no grant for exactly (c, p)", True, {PRESENT}, None, 2, T, {"no_grant"}),
    ("grant after the event", True, {PRESENT}, GrantTerms(T + 1, None, 2), 2, T, {"grant_after_event"}),
    ("grant at the event's time", True, {PRESENT}, GrantTerms(T, None, 2), 2, T, {PASS}),
    ("expired at the event", True, {PRESENT}, GrantTerms(T - 9, T, 2), 2, T, {"expired"}),
    ("expired at decision time", True, {PRESENT}, GrantTerms(T - 9, DECIDED, 2), 2, T, {"expired"}),
    ("expires after the decision", True, {PRESENT}, GrantTerms(T - 9, DECIDED + 1, 2), 2, T, {PASS}),
    ("stale terms", True, {PRESENT}, GrantTerms(T - 9, None, 1), 2, T, {"stale_terms"}),
    ("newer terms than the catalog's", True, {PRESENT}, GrantTerms(T - 9, None, 3), 2, T, {PASS}),
    ("grant after event wins over expiry", True, {PRESENT}, GrantTerms(T + 1, T + 2, 2), 2, T, {"grant_after_event"}),
    ("expiry wins over stale terms", True, {PRESENT}, GrantTerms(T - 9, T, 1), 2, T, {"expired"}),
    # a drop's activity time is unknown: reasons that depend on it are accepted when some time allows them
    ("drop, time unknown, grant valid", True, {PRESENT}, OK, 2, None, {"grant_after_event", PASS}),
    ("drop, time unknown, stale", True, {PRESENT}, GrantTerms(T - 9, None, 1), 2, None,
     {"grant_after_event", "stale_terms"}),
    ("drop, time unknown, expired by the decision", True, {PRESENT}, GrantTerms(T - 9, DECIDED, 2), 2, None,
     {"grant_after_event", "expired"}),
    ("drop, time unknown, expiry within the skew", True, {PRESENT}, GrantTerms(T - 9, DECIDED + SKEW, 2), 2, None,
     {"grant_after_event", "expired", PASS}),
    ("drop, time unknown, expiry beyond the skew", True, {PRESENT}, GrantTerms(T - 9, DECIDED + SKEW + 1, 2), 2,
     None, {"grant_after_event", PASS}),
    ("drop, time unknown, no grant", True, {PRESENT}, None, 2, None, {"no_grant"}),
]


@pytest.mark.parametrize(("known", "states", "grant", "terms", "occurred", "expected"),
                         [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_spec_rule_by_row(known: bool, states: set[str], grant: GrantTerms | None, terms: int, occurred: int | None,
                          expected: set[str]) -> None:
    assert acceptable(known, frozenset(states), grant, terms, occurred, DECIDED, SKEW) == expected
    assert sql_acceptable([(known, states, grant, terms, occurred, DECIDED)]) == [expected]


def sql_acceptable(rows: list[tuple[bool, set[str], GrantTerms | None, int, int | None, int]],
                   skew: int = SKEW) -> list[set[str]]:
    db = duckdb.connect()
    db.execute("CREATE TABLE r (n INTEGER, category_known BOOLEAN, may_none BOOLEAN, may_erased BOOLEAN, "
               "may_present BOOLEAN, has_grant BOOLEAN, granted_at BIGINT, expires_at BIGINT, g_terms BIGINT, "
               "terms_current BIGINT, occurred_at BIGINT, decided_at BIGINT)")
    db.executemany("INSERT INTO r VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (n, known, NONE in states, ERASED in states, PRESENT in states, grant is not None,
         grant.granted_at if grant else None, grant.expires_at if grant else None,
         grant.terms_version if grant else None, terms, occurred, decided)
        for n, (known, states, grant, terms, occurred, decided) in enumerate(rows)])
    out = db.execute(f"SELECT {ACCEPTABLE_SQL} FROM r ORDER BY n", {"skew_ms": skew}).fetchall()
    db.close()
    return [set(row[0]) for row in out]


times = st.integers(min_value=0, max_value=20)
grants = st.one_of(st.none(), st.builds(GrantTerms, times, st.one_of(st.none(), times), st.integers(1, 3)))
row = st.tuples(st.booleans(), st.sets(st.sampled_from([NONE, ERASED, PRESENT]), min_size=1), grants,
                st.integers(1, 3), st.one_of(st.none(), times), times)


@settings(max_examples=40, deadline=None)
@given(st.lists(row, min_size=1, max_size=40))
def test_sql_form_equals_the_reference(rows: list[tuple[bool, set[str], GrantTerms | None, int, int | None, int]]
                                       ) -> None:
    expected = [set(acceptable(k, frozenset(s), g, t, o, d, 7)) for k, s, g, t, o, d in rows]
    assert sql_acceptable(rows, skew=7) == expected
