"""SPEC §3, rule by rule, and the properties that must hold for any input."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentgate.catalog import Catalog, load_catalog
from consentgate.decision import decide
from consentgate.model import (
    ActivityEvent,
    ConsentLookup,
    ConsentState,
    Decision,
    DropReason,
    Erased,
    Grant,
    Outcome,
)

CATALOG = load_catalog()
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
NOW = T0 + timedelta(hours=1)
REC, GEN, ADS = "train_ai_system.recommendation", "train_ai_system.generative", "train_ai_system.ads_ranking"


def event(category: str = "post", at: datetime = T0) -> ActivityEvent:
    return ActivityEvent("e1", "u1", category, at, "web", {"text": "hello"})


def grant(category: str = "post", purpose: str = GEN, at: datetime = T0 - timedelta(days=1),
          expires: datetime | None = None, terms: int | None = None) -> Grant:
    return Grant(category, purpose, at, expires, CATALOG.purposes[purpose].terms_version if terms is None else terms,
                 "r-1")


def state(*grants: Grant) -> ConsentState:
    return ConsentState("u1", 7, T0 - timedelta(days=1), "data_sharing", "per_unit", grants)


def outcomes(decision: Decision) -> dict[str, DropReason | None]:
    return {o.purpose: o.reason for o in decision.outcomes}


@pytest.mark.parametrize(("consent", "ev", "expected"), [
    (None, event(), {REC: DropReason.NO_CONSENT_RECORD, GEN: DropReason.NO_CONSENT_RECORD}),
    (Erased("u1"), event(), {REC: DropReason.ERASED, GEN: DropReason.ERASED}),
    (state(), event(), {REC: DropReason.NO_GRANT, GEN: DropReason.NO_GRANT}),
    (state(grant()), event(), {REC: DropReason.NO_GRANT, GEN: None}),
    (state(grant(at=T0 + timedelta(seconds=1))), event(), {REC: DropReason.NO_GRANT,
                                                           GEN: DropReason.GRANT_AFTER_EVENT}),
    (state(grant(at=T0)), event(), {REC: DropReason.NO_GRANT, GEN: None}),  # at or before t
    (state(grant(expires=T0)), event(), {REC: DropReason.NO_GRANT, GEN: DropReason.EXPIRED}),  # expired at t
    (state(grant(expires=T0 + timedelta(minutes=5))), event(),  # valid at t, expired by decision time
     {REC: DropReason.NO_GRANT, GEN: DropReason.EXPIRED}),
    (state(grant(expires=NOW + timedelta(seconds=1))), event(), {REC: DropReason.NO_GRANT, GEN: None}),
    (state(grant(terms=1)), event(), {REC: DropReason.NO_GRANT, GEN: DropReason.STALE_TERMS}),
    (state(grant(terms=9)), event(), {REC: DropReason.NO_GRANT, GEN: None}),  # newer terms are fine
    (state(grant("conversation")), event(), {REC: DropReason.NO_GRANT, GEN: DropReason.NO_GRANT}),
    (state(grant(), grant(purpose=REC)), event(), {REC: None, GEN: None}),
    (state(grant("click", ADS)), event("click"), {REC: DropReason.NO_GRANT, ADS: None}),
    (state(grant()), event("voice"), {REC: DropReason.UNKNOWN_CATEGORY, GEN: DropReason.UNKNOWN_CATEGORY,
                                      ADS: DropReason.UNKNOWN_CATEGORY}),
])
def test_rules(consent: ConsentLookup, ev: ActivityEvent, expected: dict[str, DropReason | None]) -> None:
    decision = decide(ev, consent, CATALOG, NOW)
    assert outcomes(decision) == expected
    assert [o.passed for o in decision.outcomes] == [expected[o.purpose] is None for o in decision.outcomes]
    assert decision.consent_version == (7 if isinstance(consent, ConsentState) else None)


def test_passed_outcome_carries_the_grant_it_rests_on() -> None:
    g = grant()
    assert decide(event(), state(g), CATALOG, NOW).outcomes[1] == Outcome(GEN, True, None, g)
    assert decide(event(), state(g), CATALOG, NOW).outcomes[1].grant is g


def test_a_category_no_purpose_accepts_gets_an_empty_decision() -> None:
    catalog = Catalog(CATALOG.version, CATALOG.currency, {**CATALOG.categories, "note": CATALOG.categories["post"]},
                      CATALOG.purposes)
    assert decide(event("note"), state(grant()), catalog, NOW).outcomes == ()


# -- properties ------------------------------------------------------------------------------

CATEGORIES = sorted(CATALOG.categories) + ["voice"]
PURPOSES = sorted(CATALOG.purposes)
times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                     timezones=st.just(timezone.utc))


@st.composite
def grants(draw: st.DrawFn) -> Grant:
    purpose = draw(st.sampled_from(PURPOSES))
    return Grant(draw(st.sampled_from(CATEGORIES)), purpose, draw(times), draw(st.none() | times),
                 draw(st.integers(0, 5)), "r")


# A state holds at most one grant per (category, purpose): a new grant replaces the old one.
consents = st.none() | st.just(Erased("u1")) | st.builds(
    lambda gs: ConsentState("u1", 1, T0, "data_sharing", "per_unit", tuple(gs)),
    st.lists(grants(), max_size=6, unique_by=lambda g: (g.category, g.purpose)))
events = st.builds(lambda c, t: ActivityEvent("e", "u1", c, t, "s", {}), st.sampled_from(CATEGORIES), times)


def _justified(ev: ActivityEvent, consent: ConsentLookup, purpose: str, now: datetime) -> bool:
    if not isinstance(consent, ConsentState) or ev.category not in CATALOG.categories:
        return False  # a category the catalog does not know never passes, whatever was granted
    return any(g.category == ev.category and g.purpose == purpose and g.granted_at <= ev.occurred_at
               and (g.expires_at is None or (g.expires_at > ev.occurred_at and g.expires_at > now))
               and g.terms_version >= CATALOG.purposes[purpose].terms_version for g in consent.grants)


@settings(max_examples=400, deadline=None)
@given(events, consents, times)
def test_every_pass_is_justified_by_a_grant_for_exactly_that_pair(ev: ActivityEvent, consent: ConsentLookup,
                                                                  now: datetime) -> None:
    decision = decide(ev, consent, CATALOG, now)
    for o in decision.outcomes:
        assert o.passed == _justified(ev, consent, o.purpose, now)
        assert (o.reason is None) == o.passed


@settings(max_examples=200, deadline=None)
@given(events, times)
def test_default_deny_without_a_consent_record(ev: ActivityEvent, now: datetime) -> None:
    assert not any(o.passed for o in decide(ev, None, CATALOG, now).outcomes)


@settings(max_examples=200, deadline=None)
@given(grants(), events, times)
def test_a_grant_never_passes_another_purpose_or_earlier_data(g: Grant, ev: ActivityEvent, now: datetime) -> None:
    decision = decide(ev, ConsentState("u1", 1, T0, "data_sharing", None, (g,)), CATALOG, now)
    for o in decision.outcomes:
        if o.passed:
            assert (o.purpose, ev.category) == (g.purpose, g.category)
            assert g.granted_at <= ev.occurred_at
            assert g.expires_at is None or g.expires_at > max(now, ev.occurred_at)
            assert g.terms_version >= CATALOG.purposes[g.purpose].terms_version
