"""``metering value``: usefulness multipliers for a period's contributions, written to the ledger.

For each purpose whose catalog entry names a reference set, the period's contributions with
text are valued together (exact KNN-Shapley against the reference set, see
``consentgate.usefulness``) and each valuation row gets its multiplier, value, topic and method;
its weight and value are recomputed from what the ledger already holds (units, quality, tier,
duplicate flag, the rate at the time) times the multiplier. Re-running it recomputes the whole
period, so the values always cover every contribution credited so far; ``close`` pays what the
ledger holds.

The texts come from the training side: ``texts(purpose, record_ids)`` returns the minimised
training record's text for each keyed record id it finds (``connectors.training_texts`` reads
them from ``training.<purpose>``). Never from the raw activity topic.

Who is valued: contributions of text categories, except copies (the duplicate rule: a copy earns
nothing, and leaving it out keeps it from taking half of the original's value). Records of
categories without text, and records whose text the training topic no longer holds, keep the
neutral multiplier 1 and are counted in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, and_, bindparam, select, update

from consentgate.catalog import Catalog, Purpose
from consentgate.connectors.ledger import contributions, insert_ignore, periods, valuations
from consentgate.errors import LedgerError
from consentgate.quality import TEXT_FIELD
from consentgate.usefulness.embed import Embedder, HashedNgramEmbedder
from consentgate.usefulness.period import method, value_texts
from consentgate.valuation import NEUTRAL_MILLI, USEFULNESS_PLANS, weigh

TextSource = Callable[[str, set[str]], dict[str, str]]  # (purpose, record ids) -> record id -> text
ATTEMPTS = 3  # contributions keep arriving while texts are read: read again at most this often


@dataclass
class PurposeReport:
    valued: int = 0  # contributions given a multiplier from their value
    copies: int = 0  # duplicates: multiplier 0, never in the game
    without_text: int = 0  # text category, but no training text found for its record id: multiplier 1
    method: str = ""


@dataclass
class ValueReport:
    period: str
    purposes: dict[str, PurposeReport] = field(default_factory=dict)


@dataclass(frozen=True)
class _Row:
    event_id: str
    purpose: str
    record_id: str | None
    units: int
    quality: float
    tier: str
    plan: str | None
    duplicate: bool
    rate_micros: int


def value_period(engine: Engine, catalog: Catalog, period: str, texts: TextSource,
                 embedder: Embedder | None = None) -> ValueReport:
    """Value every purpose with a reference set for an open ``period``; see the module docstring."""
    embedder = embedder or HashedNgramEmbedder()
    report = ValueReport(period)
    for purpose in catalog.purposes.values():
        if purpose.usefulness is not None:
            report.purposes[purpose.name] = _value_purpose(engine, purpose, period, texts, embedder)
    return report


def _rows(engine: Engine, purpose: Purpose, period: str) -> list[_Row]:
    with engine.connect() as conn:
        return [_Row(*r) for r in conn.execute(_query(purpose, period))]


def _query(purpose: Purpose, period: str):  # type: ignore[no-untyped-def]
    text_categories = [c for c in purpose.categories if c in TEXT_FIELD]
    return (select(contributions.c.event_id, contributions.c.purpose, contributions.c.record_id,
                   contributions.c.units, valuations.c.quality, contributions.c.tier, contributions.c.plan,
                   valuations.c.duplicate, valuations.c.rate_micros)
            .join(valuations, and_(valuations.c.event_id == contributions.c.event_id,
                                   valuations.c.purpose == contributions.c.purpose))
            .where(contributions.c.period == period, contributions.c.purpose == purpose.name,
                   contributions.c.category.in_(text_categories))
            .order_by(contributions.c.event_id))


def _value_purpose(engine: Engine, purpose: Purpose, period: str, texts: TextSource,
                   embedder: Embedder) -> PurposeReport:
    spec = purpose.usefulness
    assert spec is not None
    found: dict[str, str] = {}
    asked: set[str] = set()
    for _ in range(ATTEMPTS):
        wanted = {r.record_id for r in _rows(engine, purpose, period)
                  if r.record_id and not r.duplicate} - asked
        if not wanted:
            break
        found.update(texts(purpose.name, wanted))
        asked |= wanted
    with engine.begin() as conn:
        conn.execute(insert_ignore(conn, periods).values(period=period, status="open"))
        status_query = select(periods.c.status).where(periods.c.period == period)
        if conn.dialect.name == "postgresql":
            status_query = status_query.with_for_update()  # no contribution lands meanwhile
        if conn.execute(status_query).scalar_one() == "closed":
            raise LedgerError(f"period {period} is closed: its payouts are final and are not valued again")
        rows = [_Row(*r) for r in conn.execute(_query(purpose, period))]
        game = [r for r in rows if not r.duplicate and r.record_id in found]
        valued = value_texts([found[r.record_id] for r in game if r.record_id], spec.reference, embedder,
                             spec.k, spec.cap)
        how = method(embedder, spec.reference, spec.k, spec.cap)
        report = PurposeReport(method=how)
        updates = []
        by_event = {r.event_id: v for r, v in zip(game, valued, strict=True)}
        for r in rows:
            if r.event_id in by_event:
                v = by_event[r.event_id]
                milli, raw, topic = v.multiplier_milli, v.value, v.topic
                report.valued += 1
            elif r.duplicate:
                milli, raw, topic = 0, None, None
                report.copies += 1
            else:
                milli, raw, topic = NEUTRAL_MILLI, None, None
                report.without_text += 1
            applied = milli if r.plan in USEFULNESS_PLANS else NEUTRAL_MILLI  # dividend: an equal split
            weight, micros = weigh(r.units, r.quality, r.tier == "data_sharing" and not r.duplicate,
                                   r.rate_micros, applied)
            updates.append({"k_event": r.event_id, "k_purpose": r.purpose, "usefulness_milli": milli,
                            "usefulness_value": raw, "usefulness_topic": topic, "usefulness_method": how,
                            "weight_milli": weight, "value_micros": micros})
        if updates:
            conn.execute(update(valuations).where(valuations.c.event_id == bindparam("k_event"),
                                                  valuations.c.purpose == bindparam("k_purpose")), updates)
    return report
