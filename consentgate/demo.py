"""``consentgate demo``: the whole pipeline on a synthetic platform, with live figures.

A consent population is granted (some grants expire during the run, some were accepted
under older terms), Zipf-distributed activity over all five categories is published with
a few malformed records and some backdated ones (synced late, from before the grants)
mixed in, users revoke and erase while the gate runs, and the
summary reconciles, each side counted on its own (``consentgate.reconcile``): the input topic's
offsets = decisions + dead letters read back from their topics, offset by offset.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from consentgate.catalog import Catalog
from consentgate.connectors.ledger import connect, contributions
from consentgate.periods import CloseReport, close_period, declare_pool
from consentgate.statements import gather, render_text
from consentgate.connectors.kafka import admin, produce, producer
from consentgate.connectors.topics import TopicNames, create_topics
from consentgate.connectors.training_texts import TrainingTexts
from consentgate.reconcile import Balance
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.records import activity_to_avro
from consentgate.settings import Settings
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from consentgate.streams.gate import Gate
from consentgate.streams.metering import MeteringWorker
from consentgate.synthetic import activity, consent_population, user_id
from consentgate.usefulness_ledger import value_period

Say = Callable[[str], None]
AsRole = Callable[[str], Settings]  # the settings a role of SPEC §7 acts with (on a secure cluster)


@dataclass
class DemoResult:
    produced: int = 0
    malformed: int = 0
    unknown: int = 0
    backdated: int = 0
    late_grants: int = 0
    revoked: int = 0
    erased: int = 0
    grants: int = 0
    errors: list[BaseException] = field(default_factory=list)


def run_demo(settings: Settings, catalog: Catalog, users: int, events: int, say: Say,
             malformed_every: int = 500, seed: int = 3, as_role: AsRole | None = None) -> tuple[Gate, DemoResult]:
    """Run the pipeline; with ``as_role`` each part acts as its own role (admin, consent, platform, gate)."""
    role: AsRole = as_role or (lambda _: settings)
    topics = TopicNames.of(settings, catalog)
    create_topics(role("admin"), admin(role("admin")), catalog)
    say(f"topics created under prefix {settings.topic_prefix!r}")
    result = DemoResult()
    expiring_at = datetime.now(timezone.utc) + timedelta(seconds=6)
    requests = consent_population(catalog, users, seed=seed, expiring_at=expiring_at)
    with ConsentWriter(role("consent"), catalog) as writer:
        lasting = [r for r in requests if r.expires_at is None]
        for start in range(0, len(lasting), 20_000):
            writer.apply(lasting[start:start + 20_000])
        # The expiring grants last, dated from now: on a busy machine writing the others can take longer
        # than the six seconds they are given.
        expiring_at = datetime.now(timezone.utc) + timedelta(seconds=6)
        requests = lasting + [replace(r, expires_at=expiring_at) for r in requests if r.expires_at is not None]
        writer.apply(requests[len(lasting):])
        # three of the most active users asked to be forgotten before the gate started
        consenting_ids = {r.user_id for r in requests}
        forgotten = [u for u in (user_id(i) for i in range(users)) if u in consenting_ids][:3]
        writer.apply([ConsentRequest("erase", u, source="demo") for u in forgotten])
    result.grants = len(requests)
    result.erased = len(forgotten)
    requests = [r for r in requests if r.user_id not in forgotten]
    consenting = len({r.user_id for r in requests})
    say(f"{consenting} of {users} users hold {len(requests)} (category, purpose) grants, {len(forgotten)} more "
        f"asked to be forgotten; "
        f"{sum(1 for r in requests if r.expires_at)} grants expire mid-run, "
        f"{sum(1 for r in requests if r.terms_version)} were accepted under older terms")

    gate = Gate(role("gate"), catalog)
    gate_thread = threading.Thread(target=_guard(gate.run, result), name="gate", daemon=True)
    gate_thread.start()
    done = threading.Event()
    platform, consent = role("platform"), role("consent")
    publisher = threading.Thread(target=_guard(lambda: _publish(platform, topics, users, events, malformed_every,
                                                                expiring_at, result), result),
                                 name="publisher", daemon=True)
    churn = threading.Thread(target=_guard(lambda: _churn(consent, catalog, requests, users, done, result, seed),
                                           result),
                             name="churn", daemon=True)
    publisher.start()
    churn.start()
    started = time.monotonic()
    last = (started, 0)
    while True:
        time.sleep(1.0)
        stats = gate.stats
        now = time.monotonic()
        rate = (stats.records_in - last[1]) / (now - last[0])
        last = (now, stats.records_in)
        dropped = stats.decisions - stats.records_passed
        say(f"t={now - started:5.1f}s  in {stats.records_in:>8,}  passed {stats.records_passed:>7,}  "
            f"dropped {dropped:>7,}  dlq {stats.dead_letters:>4,}  {rate:>7,.0f} rec/s  "
            f"revoked {result.revoked:>3}  erased {result.erased:>3}")
        if result.errors:
            break
        if not publisher.is_alive() and stats.records_in >= result.produced:
            break
    done.set()
    churn.join(30)
    gate.stop()
    gate_thread.join(60)
    if result.errors:
        raise result.errors[0]
    return gate, result


def _guard(target: Callable[[], object], result: DemoResult) -> Callable[[], None]:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the main loop
            result.errors.append(exc)

    return run


def _publish(settings: Settings, topics: TopicNames, users: int, events: int, malformed_every: int,
             expiring_at: datetime, result: DemoResult) -> None:
    """Publish the activity; the second half only once the expiring grants have expired."""
    rng = random.Random(5)
    with registry_client(settings) as registry:
        encode = Codecs(registry)["ActivityEvent"].writer_for(topics.activity)
        out = producer(settings)
        start = datetime.now(timezone.utc)
        for n, event in enumerate(activity(users, events, start, spacing=timedelta(microseconds=100))):
            if malformed_every and n % malformed_every == malformed_every - 1:
                out.produce(topics.activity, value=rng.randbytes(rng.randint(1, 64)), key=event.user_id.encode())
                result.malformed += 1
            if n % 997 == 996:  # a category the catalog does not know (yet): dropped for every purpose
                voice = event._replace(event_id=f"{event.event_id}-voice", category="voice",
                                       payload={"transcript": "play something calm"})
                out.produce(topics.activity, value=encode(activity_to_avro(voice)), key=event.user_id.encode())
                result.unknown += 1
            if n % 250 == 125:  # synced late from an offline device: it happened before today's grants
                event = event._replace(occurred_at=event.occurred_at - timedelta(days=1))
                result.backdated += 1
            produce(out, topics.activity, encode(activity_to_avro(event)), event.user_id.encode())
            if n % 1000 == 0:
                out.poll(0)
            if n == events // 2:
                time.sleep(max(0.0, (expiring_at - datetime.now(timezone.utc)).total_seconds()))
        assert out.flush(60) == 0, "activity not acknowledged"
        result.produced = events + result.malformed + result.unknown


def _churn(settings: Settings, catalog: Catalog, granted: list[ConsentRequest], users: int, done: threading.Event,
           result: DemoResult, seed: int) -> None:
    """While the gate runs, every half second: a few users revoke a grant, one erases, and a
    few who never consented join (their activity from before the grant must not pass)."""
    rng = random.Random(seed)
    candidates = sorted({(r.user_id, r.category, r.purpose) for r in granted})
    rng.shuffle(candidates)
    consenting = {r.user_id for r in granted}
    newcomers = [u for u in (user_id(i) for i in range(users)) if u not in consenting]
    rng.shuffle(newcomers)
    pairs = [(c, p.name) for p in catalog.purposes.values() for c in p.categories]
    with ConsentWriter(settings, catalog) as writer:
        while not done.wait(0.5) and candidates:
            batch = [candidates.pop() for _ in range(min(5, len(candidates)))]
            writer.apply([ConsentRequest("revoke", u, c, p, source="demo") for u, c, p in batch])
            result.revoked += len(batch)
            forgotten = batch[0][0]
            writer.apply([ConsentRequest("erase", forgotten, source="demo")])
            result.erased += 1
            candidates = [c for c in candidates if c[0] != forgotten]  # nothing left of theirs to revoke
            joining = [newcomers.pop() for _ in range(min(20, len(newcomers)))]
            writer.apply([ConsentRequest("grant", u, *rng.choice(pairs), source="demo") for u in joining])
            result.late_grants += len(joining)


def counters_agree(gate: Gate, balance: Balance) -> bool:
    """The gate's own counters against what was read back from the topics."""
    stats = gate.stats
    return (stats.records_in, stats.records_passed, stats.decisions - stats.records_passed, stats.dead_letters) == (
        balance.records_in, balance.passed, balance.dropped, balance.dead_letters)


def summary(gate: Gate, result: DemoResult, balance: Balance) -> list[str]:
    """The funnel as read back from the topics (input offsets; decisions and dead letters committed)."""
    stats = gate.stats
    lines = [
        "",
        "summary (input offsets; committed decisions and dead letters read back from their topics)",
        f"  records in                       {balance.records_in:>9,}   (published {result.produced:,}, "
        f"{result.malformed:,} malformed, {result.unknown:,} of an unknown category and "
        f"{result.backdated:,} backdated, on purpose)",
        f"  passed for at least one purpose  {balance.passed:>9,}",
        f"  dropped for every purpose        {balance.dropped:>9,}",
        f"  dead-lettered                    {balance.dead_letters:>9,}",
        f"  in = passed + dropped + DLQ      {'yes' if balance.balanced else 'NO'}",
        *([f"    input offsets without an output: {_coords(balance.missing)}"] if balance.missing else []),
        *([f"    input offsets with two outputs:  {_coords(balance.duplicated)}"] if balance.duplicated else []),
        *([f"    outputs naming no input offset:  {_coords(balance.strays)}"] if balance.strays else []),
        f"  the gate's own counters agree    {'yes' if counters_agree(gate, balance) else 'NO'}",
        "",
        "  training records by purpose (one per passed record and purpose)",
        *[f"    {purpose:<36} {count:>9,}" for purpose, count in sorted(stats.passed.items())],
        "  drops by reason (record x purpose)",
        *[f"    {reason:<36} {count:>9,}" for reason, count in stats.dropped.most_common()],
        f"  consent changes during the run: {result.revoked} revocations, {result.erased} erasures, "
        f"{result.late_grants} first grants",
    ]
    count = gate.metrics.value("consentgate_revocation_enforcement_seconds_count")
    if count:
        total = gate.metrics.value("consentgate_revocation_enforcement_seconds_sum")
        lines.append(f"  revocation to enforcement: {count:.0f} observed, mean {1000 * total / count:.0f} ms")
    return lines


def _coords(coords: tuple[tuple[str, int, int], ...]) -> str:
    return ", ".join(f"{t}[{p}]@{o}" for t, p, o in coords)


@dataclass
class Settlement:
    credited: int
    periods: list[CloseReport]
    declared_cents: int
    statements: dict[str, str]  # user -> text statement

    @property
    def pools_paid_cents(self) -> int:
        return sum(sum(r.pools.values()) for r in self.periods)

    @property
    def pools_carried_cents(self) -> int:
        return sum(sum(r.carried.values()) for r in self.periods)


def settle(settings: Settings, catalog: Catalog, say: Say, pool_cents: int = 50_000,
           as_role: AsRole | None = None) -> Settlement:
    """Meter everything the gate let through, declare pools, close the periods, issue statements."""
    engine = connect(settings.ledger())
    try:
        worker = MeteringWorker(as_role("metering") if as_role else settings, catalog, engine)
        worker.run(idle_exit_s=2.0)
        say(f"metering: {worker.stats.credited:,} contributions credited to the ledger "
            f"({worker.stats.batches} transactions)")
        with engine.connect() as conn:
            open_periods = sorted(p for (p,) in conn.execute(
                select(contributions.c.period).distinct()))
        texts = TrainingTexts(as_role("metering") if as_role else settings, catalog)
        for period in open_periods:  # usefulness first, as `metering close` does
            for purpose, valued in value_period(engine, catalog, period, texts).purposes.items():
                say(f"usefulness {period} {purpose}: {valued.valued:,} contributions valued against its reference "
                    f"set, {valued.copies:,} near-copies at x0, {valued.without_text:,} without text at x1")
        declared = 0
        for period in open_periods:
            for n, purpose in enumerate(catalog.purposes):
                declare_pool(engine, catalog, purpose, period, pool_cents * (n + 1))
                declared += pool_cents * (n + 1)
            first = next(iter(catalog.purposes))
            declare_pool(engine, catalog, first, period, pool_cents // 2, plan="dividend")
            declared += pool_cents // 2
        reports = [close_period(engine, catalog, period) for period in open_periods]
        for r in reports:
            say(f"period {r.period} closed: {r.contributions:,} contributions, {r.statements:,} statements, "
                f"{r.cash_cents / 100:,.2f} {catalog.currency} and {r.credits:,} credits paid")
        users: list[str] = []
        with engine.connect() as conn:  # the most active user of each plan, and of the free tier
            for plan in ("per_unit", "revenue_share", "credits", "dividend", None):
                tier_plan = (contributions.c.plan == plan) if plan else (contributions.c.tier == "free")
                user = conn.execute(select(contributions.c.user_id).where(tier_plan)
                                    .group_by(contributions.c.user_id)
                                    .order_by(func.count().desc(), contributions.c.user_id).limit(1)).scalar()
                if user is not None and user not in users:
                    users.append(user)
        shown = {user: render_text(gather(engine, catalog, user)) for user in users}
        return Settlement(worker.stats.credited, reports, declared, shown)
    finally:
        engine.dispose()


def settlement_summary(gate: Gate, settlement: Settlement) -> list[str]:
    passed = sum(gate.stats.passed.values())
    pools_ok = settlement.pools_paid_cents + settlement.pools_carried_cents == settlement.declared_cents
    return [
        "",
        "metering and payouts",
        f"  training records passed by the gate      {passed:>9,}",
        f"  contributions credited to the ledger     {settlement.credited:>9,}",
        f"  passed = credited                        {'yes' if passed == settlement.credited else 'NO'}",
        f"  pools declared                           {settlement.declared_cents / 100:>12,.2f}",
        f"  pools paid out, to the cent              {settlement.pools_paid_cents / 100:>12,.2f}"
        + (f"  (+{settlement.pools_carried_cents / 100:,.2f} carried to next period: no one earned)"
           if settlement.pools_carried_cents else ""),
        f"  pools paid + carried = declared          {'yes' if pools_ok else 'NO'}",
        "",
        *[line for text in settlement.statements.values() for line in text.rstrip().splitlines() + [""]],
    ]
