"""Pools and period close: turning a period's valued contributions into payouts.

``close`` runs in one database transaction holding the period's row lock, so the metering
worker cannot add to the period meanwhile; it checks in SQL that every pool's payouts sum
to the pool to the cent, and that no free-tier user is paid, before it commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from sqlalchemy import Connection, Engine, and_, func, insert, literal, select, update

from consentgate.catalog import Catalog
from consentgate.connectors.ledger import (
    contributions,
    insert_ignore,
    payouts,
    periods,
    pools,
    statements,
    valuations,
)
from consentgate.errors import LedgerError
from consentgate.valuation import MAX_POOL_CENTS, POOL_PLANS, next_period, split


@dataclass(frozen=True)
class CloseReport:
    period: str
    already_closed: bool
    contributions: int
    cash_cents: int
    credits: int
    pools: dict[str, int]  # "purpose/plan" -> cents paid out: the sum of its payout rows in the ledger
    carried: dict[str, int]  # "purpose/plan" -> cents moved to the next period (no one to pay)
    statements: int


def parse_amount(text: str) -> int:
    """A pool amount in currency units ("1250.50") as whole cents; refuses fractions of a cent."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise LedgerError(f"amount {text!r} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise LedgerError(f"amount {text!r} must be positive")
    cents = amount * 100
    if cents != cents.to_integral_value():
        raise LedgerError(f"amount {text!r} has fractions of a cent")
    if cents > MAX_POOL_CENTS:
        raise LedgerError(f"amount {text!r} is too large (at most {MAX_POOL_CENTS // 100} per pool)")
    return int(cents)


def declare_pool(engine: Engine, catalog: Catalog, purpose: str, period: str, amount_cents: int,
                 plan: str = "revenue_share") -> int | None:
    """Declare (or re-declare) the pool for a purpose, plan and open period; returns the old amount."""
    if purpose not in catalog.purposes:
        raise LedgerError(f"unknown purpose {purpose!r} (the catalog has: {', '.join(catalog.purposes)})")
    if plan not in POOL_PLANS:
        raise LedgerError(f"plan {plan!r} has no pool (pools are for: {', '.join(POOL_PLANS)})")
    if isinstance(amount_cents, bool) or not 1 <= amount_cents <= MAX_POOL_CENTS:
        raise LedgerError(f"pool amount {amount_cents} cents outside 1..{MAX_POOL_CENTS}")
    with engine.begin() as conn:
        if _lock_period(conn, period) == "closed":
            raise LedgerError(f"period {period} is closed; declare the pool for a later period")
        key = and_(pools.c.period == period, pools.c.purpose == purpose, pools.c.plan == plan)
        old = conn.execute(select(pools.c.amount_cents).where(key)).scalar()
        if old is None:
            conn.execute(insert(pools).values(period=period, purpose=purpose, plan=plan, amount_cents=amount_cents,
                                              status="declared"))
        else:
            conn.execute(update(pools).where(key).values(amount_cents=amount_cents))
    return old


def close_period(engine: Engine, catalog: Catalog, period: str) -> CloseReport:
    with engine.begin() as conn:
        if _lock_period(conn, period) == "closed":
            return _report(conn, period, already_closed=True)
        _pay_rates(conn, catalog, period)
        _pay_pools(conn, period)
        _issue_statements(conn, period)
        _check_invariants(conn, period)
        conn.execute(update(periods).where(periods.c.period == period)
                     .values(status="closed", closed_at=datetime.now(timezone.utc)))
        return _report(conn, period, already_closed=False)


def period_status(engine: Engine, period: str) -> str | None:
    """``open``, ``closed``, or None for a period the ledger has never seen."""
    with engine.connect() as conn:
        status = conn.execute(select(periods.c.status).where(periods.c.period == period)).scalar()
    return None if status is None else str(status)


def _lock_period(conn: Connection, period: str) -> str:
    conn.execute(insert_ignore(conn, periods).values(period=period, status="open"))
    query = select(periods.c.status).where(periods.c.period == period)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return str(conn.execute(query).scalar_one())


def _paid(period: str, *plans: str):  # type: ignore[no-untyped-def]
    """Valued contributions of the period that can earn: data_sharing tier, one of ``plans``."""
    return (select(contributions.c.user_id, contributions.c.purpose, contributions.c.plan)
            .join(valuations, and_(valuations.c.event_id == contributions.c.event_id,
                                   valuations.c.purpose == contributions.c.purpose))
            .where(contributions.c.period == period, contributions.c.tier == "data_sharing",
                   contributions.c.plan.in_(plans)))


def _pay_rates(conn: Connection, catalog: Catalog, period: str) -> None:
    """per_unit: the value in cents; credits: the value at the catalog's stated conversion."""
    query = (_paid(period, "per_unit", "credits").add_columns(func.sum(valuations.c.value_micros))
             .group_by(contributions.c.user_id, contributions.c.purpose, contributions.c.plan))
    rows = []
    for user_id, purpose, plan, micros in conn.execute(query):
        micros = Decimal(int(micros))
        if plan == "per_unit":
            kind, amount = "cash", micros / 10_000
        else:
            kind, amount = "credits", micros * catalog.credits_per_currency_unit / 1_000_000
        rows.append({"period": period, "user_id": user_id, "purpose": purpose, "plan": plan, "kind": kind,
                     "amount": int(amount.to_integral_value(ROUND_HALF_EVEN)), "pool_id": None})
    if rows:
        conn.execute(insert(payouts), rows)


def _pay_pools(conn: Connection, period: str) -> None:
    for pool_id, purpose, plan, amount in conn.execute(
            select(pools.c.pool_id, pools.c.purpose, pools.c.plan, pools.c.amount_cents)
            .where(pools.c.period == period, pools.c.status == "declared").order_by(pools.c.pool_id)).all():
        earned = (_paid(period, plan).add_columns(func.sum(valuations.c.weight_milli).label("w"))
                  .where(contributions.c.purpose == purpose)
                  .group_by(contributions.c.user_id, contributions.c.purpose, contributions.c.plan)
                  .having(func.sum(valuations.c.weight_milli) > 0))
        weights = {user_id: (int(w) if plan == "revenue_share" else 1)
                   for user_id, _, _, w in conn.execute(earned)}
        if not weights:
            _carry(conn, period, pool_id, purpose, plan, amount)
            continue
        conn.execute(insert(payouts), [
            {"period": period, "user_id": user_id, "purpose": purpose, "plan": plan, "kind": "cash",
             "amount": share, "pool_id": pool_id}
            for user_id, share in sorted(split(amount, weights).items())])
        conn.execute(update(pools).where(pools.c.pool_id == pool_id).values(status="paid"))


def _carry(conn: Connection, period: str, pool_id: int, purpose: str, plan: str, amount: int) -> None:
    """No eligible contributor: the pool moves, visibly, to the same purpose and plan next period."""
    following = next_period(period)
    _lock_period(conn, following)
    key = and_(pools.c.period == following, pools.c.purpose == purpose, pools.c.plan == plan)
    existing = conn.execute(select(pools.c.pool_id).where(key)).scalar()
    if existing is None:
        conn.execute(insert(pools).values(period=following, purpose=purpose, plan=plan, amount_cents=amount,
                                          status="declared", carried_from=period))
    else:
        conn.execute(update(pools).where(key).values(amount_cents=pools.c.amount_cents + amount,
                                                     carried_from=period))
    conn.execute(update(pools).where(pools.c.pool_id == pool_id).values(status="carried"))


def _issue_statements(conn: Connection, period: str) -> None:
    """One statement per user who contributed in the period, free tier included (paid nothing)."""
    used = (select(contributions.c.user_id, func.count().label("n"), func.sum(contributions.c.units).label("u"),
                   func.sum(valuations.c.value_micros).label("v"))
            .join(valuations, and_(valuations.c.event_id == contributions.c.event_id,
                                   valuations.c.purpose == contributions.c.purpose))
            .where(contributions.c.period == period).group_by(contributions.c.user_id))
    paid = {(user_id, kind): int(total) for user_id, kind, total in conn.execute(
        select(payouts.c.user_id, payouts.c.kind, func.sum(payouts.c.amount))
        .where(payouts.c.period == period).group_by(payouts.c.user_id, payouts.c.kind))}
    now = datetime.now(timezone.utc)
    rows = [{"period": period, "user_id": user_id, "contributions": int(n), "units": int(u),
             "value_micros": int(v), "cash_cents": paid.get((user_id, "cash"), 0),
             "credits": paid.get((user_id, "credits"), 0), "issued_at": now}
            for user_id, n, u, v in conn.execute(used)]
    if rows:
        conn.execute(insert(statements), rows)


def _check_invariants(conn: Connection, period: str) -> None:
    paid = (select(payouts.c.pool_id, func.sum(payouts.c.amount).label("paid"))
            .where(payouts.c.period == period, payouts.c.pool_id.is_not(None))
            .group_by(payouts.c.pool_id).subquery())
    unbalanced = conn.execute(
        select(pools.c.pool_id, pools.c.amount_cents, func.coalesce(paid.c.paid, literal(0)))
        .outerjoin(paid, paid.c.pool_id == pools.c.pool_id)
        .where(pools.c.period == period, pools.c.status == "paid",
               pools.c.amount_cents != func.coalesce(paid.c.paid, literal(0)))).all()
    if unbalanced:
        raise LedgerError(f"period {period} not closed: pool payouts do not sum to their pools: {unbalanced}")
    sharing = select(contributions.c.user_id).where(contributions.c.period == period,
                                                    contributions.c.tier == "data_sharing")
    free_paid = conn.execute(select(func.count()).select_from(payouts).where(
        payouts.c.period == period, payouts.c.amount != 0, payouts.c.user_id.not_in(sharing))).scalar_one()
    if free_paid:
        raise LedgerError(f"period {period} not closed: {free_paid} payouts to users with no data_sharing "
                          f"contribution")


def _report(conn: Connection, period: str, already_closed: bool) -> CloseReport:
    def kinds(kind: str) -> int:
        return int(conn.execute(select(func.coalesce(func.sum(payouts.c.amount), 0))
                                .where(payouts.c.period == period, payouts.c.kind == kind)).scalar_one())

    # What was paid is read from the payout rows, not the pools' declared amounts, so a report that
    # adds paid + carried and compares it with what was declared checks something.
    paid_rows = conn.execute(select(pools.c.purpose, pools.c.plan, func.sum(payouts.c.amount))
                             .join(payouts, payouts.c.pool_id == pools.c.pool_id)
                             .where(pools.c.period == period).group_by(pools.c.purpose, pools.c.plan)).all()
    carried_rows = conn.execute(select(pools.c.purpose, pools.c.plan, pools.c.amount_cents)
                                .where(pools.c.period == period, pools.c.status == "carried")).all()
    return CloseReport(
        period, already_closed,
        int(conn.execute(select(func.count()).select_from(contributions)
                         .where(contributions.c.period == period)).scalar_one()),
        kinds("cash"), kinds("credits"),
        {f"{p}/{plan}": int(amount) for p, plan, amount in paid_rows},
        {f"{p}/{plan}": int(amount) for p, plan, amount in carried_rows},
        int(conn.execute(select(func.count()).select_from(statements)
                         .where(statements.c.period == period)).scalar_one()))
