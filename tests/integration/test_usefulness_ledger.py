"""`metering value` on the real ledger (PostgreSQL in CI): usefulness multipliers, payouts, statements."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from sqlalchemy import Engine, insert, select

from consentgate.catalog import load_catalog
from consentgate.connectors.ledger import connect, contributions, payouts, valuations
from consentgate.errors import LedgerError
from consentgate.periods import close_period, declare_pool
from consentgate.statements import gather, render_html, render_text
from consentgate.usefulness.embed import HashedNgramEmbedder
from consentgate.usefulness.period import value_texts
from consentgate.usefulness_ledger import value_period
from consentgate.valuation import value

CATALOG = load_catalog()
GEN, REC = "train_ai_system.generative", "train_ai_system.recommendation"
REFERENCE = CATALOG.purposes[GEN].usefulness.reference  # type: ignore[union-attr]
_ids = itertools.count()

ON_TOPIC = ["the morning ferry to the island waits for high tide at the harbour",
            "reading the tide tables before taking the boat out of the harbour",
            "we pruned the apple orchard in late winter and hope for a good harvest"]
OFF_TOPIC = ["the quarterly earnings call moved the share price of the chip maker",
             "my favourite video game got a patch that rebalanced every weapon",
             "the tax office changed the deadline for filing self assessment returns"]


@pytest.fixture
def engine(ledger_url: str) -> Iterator[Engine]:
    engine = connect(ledger_url)
    yield engine
    engine.dispose()


class Texts:
    """A text source over a dict, as the training topic would answer; records what it was asked."""

    def __init__(self) -> None:
        self.by_record: dict[str, str] = {}
        self.asked: list[tuple[str, set[str]]] = []

    def __call__(self, purpose: str, record_ids: set[str]) -> dict[str, str]:
        self.asked.append((purpose, set(record_ids)))
        return {r: self.by_record[r] for r in record_ids if r in self.by_record}


def post(engine: Engine, texts: Texts, period: str, user: str, text: str | None, *, plan: str | None = "revenue_share",
         tier: str = "data_sharing", duplicate: bool = False, category: str = "post", purpose: str = GEN,
         quality: float = 1.0) -> str:
    n = next(_ids)
    event_id, record_id = f"u{n}", f"{n:032x}"
    if text is not None:
        texts.by_record[record_id] = text
    rec = {"event_id": event_id, "purpose": purpose, "user_id": user, "category": category, "units": 1,
           "quality": quality, "tier": tier, "plan": plan}
    v = value(CATALOG, rec, duplicate)
    with engine.begin() as conn:
        conn.execute(insert(contributions).values(
            event_id=event_id, purpose=purpose, user_id=user, category=category, units=1, tier=tier, plan=plan,
            receipt_id="r", consent_version=1, fingerprint=None, record_id=record_id, key_id="k0",
            occurred_at=datetime(int(period[:4]), int(period[5:]), 2, tzinfo=timezone.utc), period=period,
            occurred_period=period, source_partition=0, source_offset=n))
        conn.execute(insert(valuations).values(event_id=event_id, purpose=purpose, quality=v.quality,
                                               duplicate=int(duplicate), rate_micros=v.rate_micros,
                                               weight_milli=v.weight_milli, value_micros=v.value_micros))
    return event_id


def stored(engine: Engine, event_ids: list[str]) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        rows = {r[0]: tuple(r[1:]) for r in conn.execute(
            select(valuations.c.event_id, valuations.c.usefulness_milli, valuations.c.weight_milli,
                   valuations.c.value_micros, valuations.c.usefulness_topic)
            .where(valuations.c.event_id.in_(event_ids)))}
    return [rows[e] for e in event_ids]


def test_two_people_equal_in_number_and_quality_the_on_topic_one_is_paid_more(engine: Engine) -> None:
    period, texts = "2032-01", Texts()
    ana = [post(engine, texts, period, "ana", t) for t in ON_TOPIC]
    bo = [post(engine, texts, period, "bo", t) for t in OFF_TOPIC]
    declare_pool(engine, CATALOG, GEN, period, 10_000)
    report = value_period(engine, CATALOG, period, texts)
    assert texts.asked == [(GEN, {f"{int(e[1:]):032x}" for e in ana + bo})]
    gen = report.purposes[GEN]
    assert (gen.valued, gen.copies, gen.without_text) == (6, 0, 0)
    assert gen.method.startswith("knn-shapley/1 k=5 cap=3 hashed-ngrams/1 dim=1024 reference=sha256:")
    # The multipliers are the pure computation's (itself checked against subset enumeration).
    expected = value_texts(ON_TOPIC + OFF_TOPIC, REFERENCE, HashedNgramEmbedder(), 5, 3.0)
    milli = [v.multiplier_milli for v in expected]
    assert [row[0] for row in stored(engine, ana + bo)] == milli
    assert sum(milli[:3]) > 3000 > sum(milli[3:])  # the mean multiplier is 1: ana above it, bo below
    assert [row[1] for row in stored(engine, ana + bo)] == milli  # weight: 1 unit x quality 1 x usefulness
    close = close_period(engine, CATALOG, period)
    ana_weight, bo_weight = sum(milli[:3]), sum(milli[3:])
    exact_ana = 10_000 * ana_weight / (ana_weight + bo_weight)
    with engine.connect() as conn:
        amounts = dict(conn.execute(select(payouts.c.user_id, payouts.c.amount)
                                    .where(payouts.c.period == period)).all())
    assert amounts["ana"] > amounts["bo"]
    assert amounts["ana"] + amounts["bo"] == 10_000 == close.pools[f"{GEN}/revenue_share"]
    assert abs(amounts["ana"] - exact_ana) < 1  # largest remainder: within a cent of the exact share
    assert (amounts["ana"], amounts["bo"], milli) == (8128, 1872, [1801, 1583, 1493, 703, 116, 304])
    ana_says = render_text(gather(engine, CATALOG, "ana", period))
    bo_says = render_text(gather(engine, CATALOG, "bo", period))
    assert ("Your posts about the harbour were among the most useful this period for \"Train the generative "
            "assistant\" (usefulness x1.50 to x3.00): your pay for them was multiplied by it.") in ana_says
    assert ("Your posts were less useful than most for \"Train the generative assistant\" (usefulness x0.30 "
                "to x0.90): your pay for them was multiplied by it.") in bo_says
    assert "harbour" not in bo_says and "ana" not in bo_says  # never another person's text or value
    page = render_html(gather(engine, CATALOG, "ana", period))
    assert "<li>Your posts about the harbour were among the most useful this period" in page


def test_a_near_copy_of_a_useful_text_earns_nothing(engine: Engine) -> None:
    period, texts = "2032-02", Texts()
    original = post(engine, texts, period, "cy", ON_TOPIC[0], plan="per_unit")
    copy = post(engine, texts, period, "cy", ON_TOPIC[0].upper() + "!", plan="per_unit", duplicate=True)
    others = [post(engine, texts, period, "dee", t, plan="per_unit") for t in OFF_TOPIC]
    report = value_period(engine, CATALOG, period, texts)
    assert (report.purposes[GEN].valued, report.purposes[GEN].copies) == (4, 1)
    assert texts.asked == [(GEN, {f"{int(e[1:]):032x}" for e in [original] + others})]  # the copy's text unread
    alone = value_texts([ON_TOPIC[0]] + OFF_TOPIC, REFERENCE, HashedNgramEmbedder(), 5, 3.0)
    (o_milli, o_weight, o_micros, o_topic), (c_milli, c_weight, c_micros, c_topic) = stored(engine, [original, copy])
    assert (c_milli, c_weight, c_micros, c_topic) == (0, 0, 0, None)
    # The copy takes nothing from the original either: its multiplier is what it would be without it.
    assert (o_milli, o_weight, o_topic) == (alone[0].multiplier_milli, alone[0].multiplier_milli, "the harbour")
    assert o_micros == round(alone[0].multiplier_milli * 5000 / 1000)  # 1 unit x 0.005 x usefulness
    close_period(engine, CATALOG, period)
    cy = gather(engine, CATALOG, "cy", period)["periods"][0]
    assert cy["uses"][0]["duplicates"] == 1 and cy["uses"][0]["usefulness"]["band"] == (
        "were among the most useful this period")


def test_what_usefulness_leaves_alone(engine: Engine) -> None:
    period, texts = "2032-03", Texts()
    div = post(engine, texts, period, "div", ON_TOPIC[1], plan="dividend")
    credits = post(engine, texts, period, "cr", ON_TOPIC[2], plan="credits")
    free = post(engine, texts, period, "fr", OFF_TOPIC[0], tier="free", plan=None)
    lost = post(engine, texts, period, "lo", None, plan="per_unit")  # its training text is gone
    rec = post(engine, texts, period, "rc", OFF_TOPIC[1], purpose=REC)  # no reference set for REC
    report = value_period(engine, CATALOG, period, texts)
    assert list(report.purposes) == [GEN]
    assert (report.purposes[GEN].valued, report.purposes[GEN].without_text) == (3, 1)
    (d_milli, d_weight, _, _), (c_milli, c_weight, _, _), (f_milli, f_weight, _, _), lost_row, rec_row = stored(
        engine, [div, credits, free, lost, rec])
    assert d_milli > 1000 and d_weight == 1000  # dividend: recorded, not applied (an equal split)
    assert c_milli > 1000 and c_weight == c_milli  # credits: applied
    assert f_weight == 0 and f_milli >= 0  # free tier: in the training set, never paid
    assert lost_row == (1000, 1000, 5000, None)  # no text: multiplier 1
    assert rec_row[0] is None  # a purpose without a reference set is never touched
    close_period(engine, CATALOG, period)
    with pytest.raises(LedgerError, match="period 2032-03 is closed"):
        value_period(engine, CATALOG, period, texts)
    said = gather(engine, CATALOG, "div", period)["periods"][0]["uses"][0]["usefulness"]["sentence"]
    assert said.endswith("your plan pays an equal share, so usefulness does not change it.")
