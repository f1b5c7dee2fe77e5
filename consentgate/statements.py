"""A user's statement: what of theirs was used, for what, on which consent, and what it earned."""

from __future__ import annotations

import html
import json
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, and_, case, func, select

from consentgate.catalog import Catalog
from consentgate.connectors.ledger import contributions, payouts, periods, valuations
from consentgate.usefulness.multiplier import DEFAULT_CAP, band_of, band_range
from consentgate.valuation import USEFULNESS_PLANS

PLAN_WORDS = {
    "per_unit": "paid per use, at the rate card",
    "revenue_share": "a share of the purpose's revenue pool, in proportion to use weighted by quality and usefulness",
    "credits": "subscription credits",
    "dividend": "an equal share of the purpose's dividend pool",
    None: "free tier: not paid",
}
PLURAL = {"post": "posts", "conversation": "messages", "search": "searches"}


def usefulness_words(catalog: Catalog, purpose: str, category: str, plan: str | None, average_milli: int,
                     topic: str | None) -> dict[str, Any]:
    """The person's own usefulness band in plain words; never a value, never anyone else's."""
    spec = catalog.purposes[purpose].usefulness if purpose in catalog.purposes else None
    cap_milli = round((spec.cap if spec else DEFAULT_CAP) * 1000)
    band = band_of(average_milli)
    # The topic says what was useful; for a low band it would only name what was least far off.
    about = f" about {topic}" if topic and average_milli >= 900 else ""
    title = catalog.purposes[purpose].title if purpose in catalog.purposes else purpose
    applied = plan in USEFULNESS_PLANS
    sentence = (f"Your {PLURAL.get(category, category + ' records')}{about} {band.words} for "
                f"\"{title}\" (usefulness {band_range(band, cap_milli)})")
    sentence += (": your pay for them was multiplied by it." if applied else
                 "; your plan pays an equal share, so usefulness does not change it." if plan == "dividend" else ".")
    return {"band": band.words, "range": band_range(band, cap_milli), "topic": topic, "applied": applied,
            "sentence": sentence}


def gather(engine: Engine, catalog: Catalog, user_id: str, period: str | None = None) -> dict[str, Any]:
    joined = and_(valuations.c.event_id == contributions.c.event_id,
                  valuations.c.purpose == contributions.c.purpose)
    where = [contributions.c.user_id == user_id] + ([contributions.c.period == period] if period else [])
    used = (select(contributions.c.period, contributions.c.purpose, contributions.c.category,
                   contributions.c.tier, contributions.c.plan, func.count(), func.sum(contributions.c.units),
                   func.avg(valuations.c.quality), func.sum(valuations.c.duplicate),
                   func.sum(valuations.c.value_micros), func.min(valuations.c.rate_micros),
                   func.sum(case((contributions.c.occurred_period != contributions.c.period, 1), else_=0)),
                   func.min(contributions.c.receipt_id), func.count(func.distinct(contributions.c.receipt_id)),
                   func.avg(case((and_(valuations.c.duplicate == 0, valuations.c.usefulness_milli.is_not(None)),
                                  valuations.c.usefulness_milli))))
            .join(valuations, joined).where(*where)
            .group_by(contributions.c.period, contributions.c.purpose, contributions.c.category,
                      contributions.c.tier, contributions.c.plan)
            .order_by(contributions.c.period, contributions.c.purpose, contributions.c.category))
    paid_where = [payouts.c.user_id == user_id] + ([payouts.c.period == period] if period else [])
    with engine.connect() as conn:
        rows = conn.execute(used).all()
        paid = conn.execute(select(payouts.c.period, payouts.c.purpose, payouts.c.plan, payouts.c.kind,
                                   payouts.c.amount).where(*paid_where)
                            .order_by(payouts.c.period, payouts.c.purpose)).all()
        status: dict[str, str] = dict(conn.execute(select(periods.c.period, periods.c.status)).all())
        topics: dict[tuple[str, str, str], str] = {}
        for p, purpose, category, topic, _ in conn.execute(  # most frequent first, then by name
                select(contributions.c.period, contributions.c.purpose, contributions.c.category,
                       valuations.c.usefulness_topic, func.count().label("n"))
                .join(valuations, joined).where(*where, valuations.c.usefulness_topic.is_not(None),
                                                valuations.c.duplicate == 0)
                .group_by(contributions.c.period, contributions.c.purpose, contributions.c.category,
                          valuations.c.usefulness_topic)
                .order_by(func.count().desc(), valuations.c.usefulness_topic)):
            topics.setdefault((p, purpose, category), topic)
    by_period: dict[str, dict[str, Any]] = {}
    for (p, purpose, category, tier, plan, n, units, quality, dups, micros, rate, late, receipt,
         receipts, usefulness) in rows:
        entry = by_period.setdefault(p, {"period": p, "status": status.get(p, "open"), "uses": [],
                                         "payouts": []})
        entry["uses"].append({
            "purpose": purpose, "purpose_title": catalog.purposes[purpose].title if purpose in catalog.purposes
            else purpose, "category": category, "tier": tier, "plan": plan, "records": int(n), "units": int(units),
            "average_quality": round(float(quality), 3), "duplicates": int(dups),
            "rate_per_unit": str(Decimal(int(rate)) / 1_000_000), "value": _money(int(micros), 6),
            "arrived_late": int(late), "receipt_id": receipt, "receipts": int(receipts),
            "usefulness": None if usefulness is None else usefulness_words(
                catalog, purpose, category, plan, round(float(usefulness)), topics.get((p, purpose, category)))})
    cents: dict[str, int] = {}
    credits: dict[str, int] = {}
    for p, purpose, plan, kind, amount in paid:
        entry = by_period.setdefault(p, {"period": p, "status": status.get(p, "open"), "uses": [], "payouts": []})
        entry["payouts"].append({"purpose": purpose, "plan": plan, "kind": kind,
                                 "amount": _money(amount, 2) if kind == "cash" else int(amount)})
        totals = cents if kind == "cash" else credits
        totals[p] = totals.get(p, 0) + int(amount)
    for p, entry in by_period.items():
        entry["cash"] = _money(cents.get(p, 0), 2)
        entry["credits"] = credits.get(p, 0)
    return {"user_id": user_id, "currency": catalog.currency, "periods": list(by_period.values())}


def _money(amount: int, places: int) -> str:
    sign = "-" if amount < 0 else ""
    digits = str(abs(amount)).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def render(statement: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(statement, indent=2)
    if fmt == "html":
        return render_html(statement)
    return render_text(statement)


def render_text(s: dict[str, Any]) -> str:
    cur = s["currency"]
    lines = [f"Statement for {s['user_id']}"]
    if not s["periods"]:
        lines.append("  nothing of yours has been used for training.")
    for p in s["periods"]:
        lines += ["", f"{p['period']} ({'closed' if p['status'] == 'closed' else 'open: figures may still grow'})"]
        for u in p["uses"]:
            late = f", {u['arrived_late']} arrived after their month closed" if u["arrived_late"] else ""
            lines.append(f"  {u['purpose_title']} used {u['records']} of your {u['category']} records "
                         f"({u['units']} units{late})")
            lines.append(f"    quality {u['average_quality']:.3f} on average, {u['duplicates']} duplicates earned "
                         f"nothing; rate {u['rate_per_unit']} {cur}/unit; value {u['value']} {cur}")
            lines.append(f"    plan: {PLAN_WORDS.get(u['plan'], u['plan'])}; consent receipt {u['receipt_id']}"
                         + (f" (+{u['receipts'] - 1} more)" if u["receipts"] > 1 else ""))
            if u["usefulness"]:
                lines.append(f"    {u['usefulness']['sentence']}")
        for x in p["payouts"]:
            unit = cur if x["kind"] == "cash" else "credits"
            lines.append(f"  paid for {x['purpose']} ({x['plan']}): {x['amount']} {unit}")
        lines.append(f"  total: {p['cash']} {cur} and {p['credits']} credits")
    return "\n".join(lines) + "\n"


def render_html(s: dict[str, Any]) -> str:
    e = html.escape
    cur = e(s["currency"])
    parts = ["<!doctype html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>Your data and what it earned: {e(s['user_id'])}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
             "</style></head><body>",
             f"<h1>Your data and what it earned</h1><p>Account <strong>{e(s['user_id'])}</strong>. "
             "This statement lists every way your data was used to train AI systems, the consent each use "
             "rests on, how it was valued, and what you were paid.</p>"]
    if not s["periods"]:
        parts.append("<p>Nothing of yours has been used for training.</p>")
    for p in s["periods"]:
        state = "closed" if p["status"] == "closed" else "still open: figures may grow until it closes"
        parts.append(f"<h2>{e(p['period'])} <small>({state})</small></h2>")
        parts.append("<table><tr><th>Used for</th><th>Your data</th><th>Records</th><th>Quality</th>"
                     "<th>Duplicates (unpaid)</th><th>Rate per unit</th><th>Value</th><th>Your plan</th>"
                     "<th>Consent receipt</th></tr>")
        for u in p["uses"]:
            parts.append(
                f"<tr><td>{e(u['purpose_title'])}</td><td>{e(u['category'])}</td><td>{u['records']}</td>"
                f"<td>{u['average_quality']:.3f}</td><td>{u['duplicates']}</td><td>{e(u['rate_per_unit'])} {cur}</td>"
                f"<td>{e(u['value'])} {cur}</td><td>{e(PLAN_WORDS.get(u['plan'], str(u['plan'])))}</td>"
                f"<td><code>{e(u['receipt_id'])}</code></td></tr>")
        parts.append("</table>")
        sentences = [u["usefulness"]["sentence"] for u in p["uses"] if u["usefulness"]]
        if sentences:
            parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in sentences) + "</ul>")
        if p["payouts"]:
            parts.append("<ul>" + "".join(
                f"<li>For {e(x['purpose'])} ({e(x['plan'])}): <strong>{x['amount']} "
                f"{cur if x['kind'] == 'cash' else 'credits'}</strong></li>" for x in p["payouts"]) + "</ul>")
        parts.append(f"<p>Total for {e(p['period'])}: <strong>{e(p['cash'])} {cur}</strong> and "
                     f"<strong>{p['credits']} credits</strong>.</p>")
    parts.append("<p>How value is computed: units &times; the rate for that kind of data and use &times; a "
                 "quality score from the content alone (length, repetition, spam) &times; how useful it was: how "
                 "closely it helps match the examples of what the model needs, compared with everything "
                 "contributed that month (you see your own band only). Copies of what you already "
                 "shared earn nothing. Who you are never changes the score.</p></body></html>")
    return "\n".join(parts) + "\n"
