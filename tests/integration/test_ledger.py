"""Pools, close and statements on the real ledger database (PostgreSQL in CI), no Kafka needed."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, select, text, update

from consentgate.catalog import load_catalog
from consentgate.connectors.ledger import connect, contributions, payouts, pools, statements, valuations
from consentgate.errors import LedgerError
from consentgate.periods import close_period, declare_pool, parse_amount
from consentgate.statements import gather, render
from consentgate.valuation import MAX_POOL_CENTS, value

CATALOG = load_catalog()
GEN, REC = "train_ai_system.generative", "train_ai_system.recommendation"
_ids = itertools.count()


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = connect(ledger_url)
    yield engine
    engine.dispose()


def add(engine: Engine, period: str, user: str, *, purpose: str = GEN, category: str = "post", units: int = 1,
        quality: float = 1.0, tier: str = "data_sharing", plan: str | None = "revenue_share",
        duplicate: bool = False, record_id: str | None = None) -> str:
    n = next(_ids)
    rec: dict[str, Any] = {"event_id": f"e{n}", "purpose": purpose, "user_id": user, "category": category,
                           "units": units, "quality": quality, "fingerprint": None, "tier": tier, "plan": plan,
                           "receipt_id": f"r-{user}", "consent_version": 1}
    v = value(CATALOG, rec, duplicate)
    with engine.begin() as conn:
        conn.execute(insert(contributions).values(
            **{k: rec[k] for k in ("event_id", "purpose", "user_id", "category", "units", "tier", "plan",
                                   "receipt_id", "consent_version", "fingerprint")},
            occurred_at=datetime(int(period[:4]), int(period[5:]), 1, tzinfo=timezone.utc), period=period,
            occurred_period=period, source_partition=0, source_offset=n, record_id=record_id))
        conn.execute(insert(valuations).values(event_id=rec["event_id"], purpose=purpose, quality=v.quality,
                                               duplicate=int(duplicate), rate_micros=v.rate_micros,
                                               weight_milli=v.weight_milli, value_micros=v.value_micros))
    return str(rec["event_id"])


def paid(engine: Engine, period: str) -> dict[tuple[str, str, str], int]:
    with engine.connect() as conn:
        return {(u, plan, kind): a for u, plan, kind, a in conn.execute(
            select(payouts.c.user_id, payouts.c.plan, payouts.c.kind, payouts.c.amount)
            .where(payouts.c.period == period))}


def test_close_pays_every_plan_and_is_idempotent(engine: Engine) -> None:
    p = "2031-01"
    add(engine, p, "alice", quality=1.0)
    add(engine, p, "alice", quality=1.0)
    add(engine, p, "bob", quality=0.5)
    add(engine, p, "bob", quality=0.9, duplicate=True)  # earns nothing
    add(engine, p, "carol", plan="per_unit", units=3, quality=0.5)  # 3 x 5000 x 0.5 = 7500 micros
    add(engine, p, "dave", plan="credits", category="conversation", quality=1.0)  # 10000 micros
    add(engine, p, "erin", tier="free", plan=None)  # never paid
    add(engine, p, "frank", plan="dividend", quality=0.2)
    add(engine, p, "gina", plan="dividend", quality=1.0)
    add(engine, p, "hal", plan="dividend", duplicate=True)  # nothing earned: no dividend share
    assert declare_pool(engine, CATALOG, GEN, p, 1000) is None
    assert declare_pool(engine, CATALOG, GEN, p, 1001) == 1000  # re-declared
    declare_pool(engine, CATALOG, GEN, p, 501, plan="dividend")
    declare_pool(engine, CATALOG, REC, p, 999)  # nobody earned under REC: carried to the next period
    report = close_period(engine, CATALOG, p)
    assert (report.already_closed, report.contributions, report.cash_cents, report.credits,
            report.statements) == (False, 10, 1001 + 501 + 1, 1, 8)
    assert report.pools == {f"{GEN}/revenue_share": 1001, f"{GEN}/dividend": 501}
    assert report.carried == {f"{REC}/revenue_share": 999}
    # revenue_share by weight: alice 2000, bob 500 of 2500 -> 800.8 / 200.2 -> 801 / 200
    assert paid(engine, p) == {
        ("alice", "revenue_share", "cash"): 801, ("bob", "revenue_share", "cash"): 200,
        ("frank", "dividend", "cash"): 251, ("gina", "dividend", "cash"): 250,  # equal shares, tie to the first
        ("carol", "per_unit", "cash"): 1,  # 7500 micros = 0.75 cent -> 1 cent
        ("dave", "credits", "credits"): 1,  # 0.01 USD x 120 credits/USD = 1.2 -> 1
    }
    again = close_period(engine, CATALOG, p)
    assert again.already_closed and (again.cash_cents, again.credits, again.statements) == (1503, 1, 8)
    assert len(paid(engine, p)) == 6
    with engine.connect() as conn:
        carried = conn.execute(select(pools.c.amount_cents, pools.c.carried_from, pools.c.status)
                               .where(pools.c.period == "2031-02")).one()
        free = conn.execute(select(statements.c.cash_cents, statements.c.credits, statements.c.value_micros)
                            .where(statements.c.user_id == "erin")).one()
    assert tuple(carried) == (999, p, "declared") and tuple(free) == (0, 0, 0)
    with pytest.raises(LedgerError, match="period 2031-01 is closed"):
        declare_pool(engine, CATALOG, GEN, p, 5)


def test_pool_input_is_checked(engine: Engine) -> None:
    assert parse_amount("1250.50") == 125050 and parse_amount("3") == 300
    # The accepted bound is the bound the split is tested to (test_pools_sum_to_the_cent), exactly.
    assert parse_amount("10000000000000.00") == MAX_POOL_CENTS == 10**15
    with pytest.raises(LedgerError, match="too large"):
        parse_amount("10000000000000.01")
    declare_pool(engine, CATALOG, GEN, "2031-02", MAX_POOL_CENTS)
    for bad in (MAX_POOL_CENTS + 1, 0, -5):
        with pytest.raises(LedgerError, match=f"pool amount {bad} cents outside 1..{MAX_POOL_CENTS}"):
            declare_pool(engine, CATALOG, GEN, "2031-02", bad)
    for bad, message in [("-1", "must be positive"), ("0", "must be positive"), ("1.001", "fractions of a cent"),
                         ("abc", "is not a number"), ("NaN", "must be positive")]:
        with pytest.raises(LedgerError, match=message):
            parse_amount(bad)
    with pytest.raises(LedgerError, match="unknown purpose 'train_ai_system.mind_reading'"):
        declare_pool(engine, CATALOG, "train_ai_system.mind_reading", "2031-01", 5)
    with pytest.raises(LedgerError, match="plan 'per_unit' has no pool"):
        declare_pool(engine, CATALOG, GEN, "2031-01", 5, plan="per_unit")


# Every other month: a pool carried out of one example lands in a month no example closes.
_periods = (f"{2100 + n // 12}-{n % 12 + 1:02d}" for n in itertools.count(0, 2))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(amount=MAX_POOL_CENTS, qualities=[[1.0], [0.333, 0.5], [0.001]], plan="revenue_share")
@example(amount=MAX_POOL_CENTS, qualities=[[1.0], [0.5]], plan="dividend")
@example(amount=MAX_POOL_CENTS - 1, qualities=[[0.999]] * 7, plan="revenue_share")
@given(amount=st.integers(1, MAX_POOL_CENTS),
       qualities=st.lists(st.lists(st.sampled_from([0.0, 0.001, 0.333, 0.5, 0.999, 1.0]), min_size=1, max_size=4),
                          min_size=1, max_size=30),
       plan=st.sampled_from(["revenue_share", "dividend"]))
def test_pools_sum_to_the_cent(engine: Engine, amount: int, qualities: list[list[float]], plan: str) -> None:
    period = next(_periods)
    for n, user_qualities in enumerate(qualities):
        for q in user_qualities:
            add(engine, period, f"user-{n:02d}", plan=plan, quality=q, units=n % 3 + 1)
        add(engine, period, f"free-{n:02d}", tier="free", plan=None)
    declare_pool(engine, CATALOG, GEN, period, amount, plan=plan)
    report = close_period(engine, CATALOG, period)
    earning = [n for n, qs in enumerate(qualities) if any(qs)]
    shares = paid(engine, period)
    if not earning:
        assert report.carried == {f"{GEN}/{plan}": amount} and shares == {} and report.pools == {}
        return
    assert sum(shares.values()) == amount == report.pools[f"{GEN}/{plan}"] and report.carried == {}
    assert {u for u, _, _ in shares} == {f"user-{n:02d}" for n in earning}
    if plan == "dividend":
        assert max(shares.values()) - min(shares.values()) <= 1


def test_invariant_is_checked_in_the_database(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    import consentgate.periods as periods_module

    period = "2031-05"
    add(engine, period, "alice")
    add(engine, period, "bob")
    declare_pool(engine, CATALOG, GEN, period, 100)
    monkeypatch.setattr(periods_module, "split", lambda amount, weights: {k: 49 for k in weights})
    with pytest.raises(LedgerError, match="pool payouts do not sum to their pools"):
        close_period(engine, CATALOG, period)
    with engine.connect() as conn:  # nothing of the failed close remains
        assert conn.execute(select(func.count()).select_from(payouts)).scalar_one() == 0
    monkeypatch.undo()
    assert close_period(engine, CATALOG, period).pools == {f"{GEN}/revenue_share": 100}


def test_the_report_adds_what_was_paid_not_what_was_declared(engine: Engine,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import consentgate.periods as periods_module

    period = "2031-06"
    add(engine, period, "alice")
    add(engine, period, "bob")
    declare_pool(engine, CATALOG, GEN, period, 100)
    declare_pool(engine, CATALOG, REC, period, 40)  # nobody earned under REC: carried
    # Break the split and silence the SQL check: the report must show 98 paid, not the 100 declared.
    monkeypatch.setattr(periods_module, "split", lambda amount, weights: {k: 49 for k in weights})
    monkeypatch.setattr(periods_module, "_check_invariants", lambda conn, period: None)
    report = close_period(engine, CATALOG, period)
    assert report.pools == {f"{GEN}/revenue_share": 98} and report.carried == {f"{REC}/revenue_share": 40}
    assert sum(report.pools.values()) + sum(report.carried.values()) != 100 + 40


def test_free_tier_with_a_plan_is_never_paid(engine: Engine) -> None:
    """Free-tier contributions that name a plan (each plan), valued normally and even with a weight
    forced into the ledger, are paid nothing: the tier alone excludes them."""
    period = "2031-08"
    add(engine, period, "payer", plan="revenue_share")
    add(engine, period, "div", plan="dividend")
    forced = []
    for plan in ("per_unit", "revenue_share", "credits", "dividend"):
        add(engine, period, f"free-{plan}", tier="free", plan=plan, units=5)
        forced.append(add(engine, period, f"forced-{plan}", tier="free", plan=plan, units=5))
    with engine.begin() as conn:  # as if a valuation had wrongly weighted them: the tier still wins
        conn.execute(update(valuations).where(valuations.c.event_id.in_(forced))
                     .values(weight_milli=5000, value_micros=25_000_000))
    declare_pool(engine, CATALOG, GEN, period, 1000)
    declare_pool(engine, CATALOG, GEN, period, 300, plan="dividend")
    report = close_period(engine, CATALOG, period)
    assert paid(engine, period) == {("payer", "revenue_share", "cash"): 1000, ("div", "dividend", "cash"): 300}
    assert (report.cash_cents, report.credits) == (1300, 0)
    with engine.connect() as conn:
        free = conn.execute(select(statements.c.user_id, statements.c.cash_cents, statements.c.credits)
                            .where(statements.c.period == period, statements.c.user_id.not_in(["payer", "div"]))
                            .order_by(statements.c.user_id)).all()
    assert [tuple(r) for r in free] == [(f"{kind}-{plan}", 0, 0) for kind in ("forced", "free")
                                        for plan in ("credits", "dividend", "per_unit", "revenue_share")]


def test_free_tier_payout_is_caught_in_the_database(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    import consentgate.periods as periods_module

    period = "2031-09"
    add(engine, period, "erin", tier="free", plan="per_unit")
    # A defect that pays the free tier (the tier filter dropped) must not close the period.
    monkeypatch.setattr(periods_module, "_paid", lambda period, *plans: (
        select(contributions.c.user_id, contributions.c.purpose, contributions.c.plan)
        .join(valuations, (valuations.c.event_id == contributions.c.event_id)
              & (valuations.c.purpose == contributions.c.purpose))
        .where(contributions.c.period == period, contributions.c.plan.in_(plans))))
    with engine.begin() as conn:
        conn.execute(update(valuations).values(value_micros=50_000))
    with pytest.raises(LedgerError, match="1 payouts to users with no data_sharing contribution"):
        close_period(engine, CATALOG, period)


def test_migrating_a_ledger_made_before_record_ids_and_usefulness(ledger_url: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy import inspect as inspect_schema

    old = create_engine(ledger_url)
    with old.begin() as conn:  # the two released migrations' tables, without the new columns
        conn.execute(text("CREATE TABLE ledger_migrations (version INTEGER PRIMARY KEY, name VARCHAR(80) NOT NULL)"))
        conn.execute(text("INSERT INTO ledger_migrations VALUES (1, 'contributions, valuations and offsets'), "
                          "(2, 'periods, pools, payouts and statements')"))
        conn.execute(text("CREATE TABLE contributions (event_id VARCHAR(200), purpose VARCHAR(120), "
                          "user_id VARCHAR(200), PRIMARY KEY (event_id, purpose))"))
        conn.execute(text("CREATE TABLE valuations (event_id VARCHAR(200), purpose VARCHAR(120), "
                          "value_micros BIGINT, PRIMARY KEY (event_id, purpose))"))
        conn.execute(text("INSERT INTO valuations VALUES ('e', 'p', 7)"))
    old.dispose()
    engine = connect(ledger_url)
    with engine.connect() as conn:
        columns = {t: {c["name"] for c in inspect_schema(conn).get_columns(t)} for t in ("contributions", "valuations")}
        kept = conn.execute(select(valuations.c.value_micros, valuations.c.usefulness_milli)).one()
        versions = conn.execute(text("SELECT max(version) FROM ledger_migrations")).scalar_one()
    engine.dispose()
    assert {"record_id", "key_id"} <= columns["contributions"]
    assert {"usefulness_milli", "usefulness_value", "usefulness_topic", "usefulness_method"} <= columns["valuations"]
    assert tuple(kept) == (7, None) and versions == 3


def test_statement_formats(engine: Engine) -> None:
    period = "2031-07"
    add(engine, period, "alice", plan="per_unit", units=2, quality=0.5)
    add(engine, period, "alice", plan="per_unit", category="conversation", quality=1.0)
    add(engine, period, "alice", plan="per_unit", category="conversation", quality=1.0, duplicate=True)
    close_period(engine, CATALOG, period)
    s = gather(engine, CATALOG, "alice", period)
    assert json.loads(render(s, "json")) == s
    assert s["periods"][0]["cash"] == "0.02" and s["periods"][0]["credits"] == 0
    uses = [(u["category"], u["records"], u["units"], u["duplicates"], u["value"]) for u in s["periods"][0]["uses"]]
    assert uses == [("conversation", 2, 2, 1, "0.010000"), ("post", 1, 2, 0, "0.005000")]
    text = render(s, "text")
    assert "Train the generative assistant used 2 of your conversation records (2 units)" in text
    assert "total: 0.02 USD and 0 credits" in text
    page = render(s, "html")
    assert page.startswith("<!doctype html>") and "<strong>0.02 USD</strong>" in page
    assert "consent" in page.lower() and "r-alice" in page
    assert gather(engine, CATALOG, "nobody")["periods"] == []
