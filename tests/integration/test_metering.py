"""The metering worker against the real broker and ledger: gate output credited exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select

from consentgate.catalog import Catalog
from consentgate.connectors.ledger import connect, contributions, valuations
from consentgate.connectors.topics import TopicNames
from consentgate.model import ActivityEvent
from consentgate.periods import close_period, declare_pool
from consentgate.quality import assess
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.settings import Settings
from consentgate.statements import gather
from consentgate.usefulness.embed import HashedNgramEmbedder
from consentgate.usefulness.period import value_texts
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from consentgate.streams.metering import MeteringWorker
from consentgate.valuation import period_of
from tests.conftest import SettingsFactory
from tests.helpers import produce_events, produce_raw, run_gate, values, wait_for
from tests.integration.test_foundation import run_cli

GEN, REC, ADS = "train_ai_system.generative", "train_ai_system.recommendation", "train_ai_system.ads_ranking"


def meter(settings: Settings, catalog: Catalog, idle: float = 1.5) -> MeteringWorker:
    worker = MeteringWorker(settings, catalog)
    worker.run(idle_exit_s=idle)
    return worker


def ledger(settings: Settings) -> dict[tuple[str, str], tuple[Any, ...]]:
    engine = connect(settings.ledger())
    with engine.connect() as conn:
        rows = conn.execute(select(contributions.c.event_id, contributions.c.purpose, contributions.c.user_id,
                                   contributions.c.period, contributions.c.occurred_period, valuations.c.quality,
                                   valuations.c.duplicate, valuations.c.value_micros)
                            .join(valuations, (valuations.c.event_id == contributions.c.event_id)
                                  & (valuations.c.purpose == contributions.c.purpose))).all()
    engine.dispose()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def contribution(event_id: str, **over: Any) -> dict[str, Any]:
    base = {"event_id": event_id, "purpose": GEN, "user_id": "u1", "category": "post", "units": 1,
            "quality": 1.0, "fingerprint": None, "occurred_at": datetime.now(timezone.utc),
            "tier": "data_sharing", "plan": "per_unit", "receipt_id": "r1", "consent_version": 1,
            "record_id": "", "key_id": ""}
    base.update(over)
    return base


def produce_contributions(settings: Settings, catalog: Catalog, records: list[dict[str, Any]]) -> None:
    topic = TopicNames.of(settings, catalog).contributions
    with registry_client(settings) as registry:
        encode = Codecs(registry)["Contribution"].writer_for(topic)
        produce_raw(settings, [(r["user_id"].encode(), encode(r)) for r in records], topic)


def test_gate_output_is_valued_credited_once_and_paid(make_settings: SettingsFactory, topics: TopicNames,
                                                      catalog: Catalog, ledger_url: str) -> None:
    settings = make_settings(ledger_url=ledger_url)
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([
            ConsentRequest("grant", "ana", "post", GEN, tier="data_sharing", plan="per_unit"),
            ConsentRequest("grant", "ben", "post", GEN, tier="data_sharing", plan="revenue_share"),
            ConsentRequest("grant", "ben", "search", ADS),
            ConsentRequest("grant", "cy", "post", GEN, tier="free"),
        ])
    t = datetime.now(timezone.utc)
    hike = {"text": "I finally finished the long hike up the ridge this morning"}
    events = [
        ActivityEvent("a1", "ana", "post", t, "app", hike),
        ActivityEvent("a2", "ana", "post", t, "app", {"text": "i FINALLY finished the long hike, up the ridge "
                                                             "this morning!"}),  # a copy: earns nothing
        ActivityEvent("a3", "ana", "post", t, "app", {"text": "CLICK HERE for free money"}),  # spam
        ActivityEvent("b1", "ben", "post", t, "app", {"text": "six words about a quiet evening"}),
        ActivityEvent("b2", "ben", "search", t, "app", {"query": "tide tables"}),
        ActivityEvent("c1", "cy", "post", t, "app", hike),
    ]
    produce_events(settings, events)
    run_gate(settings, catalog)
    assert len(values(settings, topics.contributions)) == 6
    worker = meter(settings, catalog)
    assert (worker.stats.credited, worker.stats.dead_letters) == (6, {})
    period = period_of(t)
    assert ledger(settings) == {
        ("a1", GEN): ("ana", period, period, 0.875, 0, 4375),  # 1 x 5000 x 0.875
        ("a2", GEN): ("ana", period, period, 0.875, 1, 0),
        ("a3", GEN): ("ana", period, period, 0.0, 0, 0),
        ("b1", GEN): ("ben", period, period, 0.5, 0, 2500),
        ("b2", ADS): ("ben", period, period, assess("search", {"query": "tide tables"}).quality, 0, 1000),
        ("c1", GEN): ("cy", period, period, 0.875, 0, 0),  # free tier: valued at nothing
    }
    # A second run, and a run under a fresh consumer group: the ledger, not the group, holds the position.
    assert meter(settings, catalog).stats.credited == 0
    assert meter(settings.model_copy(update={"metering_group_id": settings.metering_group_id + "-2"}),
                 catalog).stats.credited == 0
    assert len(ledger(settings)) == 6

    engine = connect(settings.ledger())
    declare_pool(engine, catalog, GEN, period, 333)
    report = close_period(engine, catalog, period)
    assert (report.pools, report.cash_cents, report.statements) == ({f"{GEN}/revenue_share": 333}, 333, 3)
    ana = gather(engine, catalog, "ana", period)["periods"][0]
    assert (ana["cash"], [(u["records"], u["duplicates"], u["value"]) for u in ana["uses"]]) == (
        "0.00", [(3, 1, "0.004375")])  # 0.4375 cent rounds to 0
    ben = gather(engine, catalog, "ben", period)["periods"][0]
    assert ben["payouts"] == [{"purpose": GEN, "plan": "revenue_share", "kind": "cash", "amount": "3.33"}]
    assert gather(engine, catalog, "cy", period)["periods"][0]["cash"] == "0.00"
    engine.dispose()


def test_bad_contributions_go_to_the_metering_dlq(make_settings: SettingsFactory, topics: TopicNames,
                                                  catalog: Catalog, ledger_url: str) -> None:
    settings = make_settings(ledger_url=ledger_url)
    produce_contributions(settings, catalog, [
        contribution("ok-1"),
        contribution("bad-purpose", purpose="train_ai_system.face_recognition"),
        contribution("bad-units", units=-3),
        contribution("absurd-units", units=10**9),
        contribution("bad-category", category="click"),
        contribution("ok-2", user_id="u2"),
    ])
    produce_raw(settings, [(b"u3", b"\x00\x7f\xff\xff\xf0garbage"), (b"u4", None)], topics.contributions)
    worker = meter(settings, catalog)
    assert worker.stats.credited == 2
    assert sorted(ledger(settings)) == [("ok-1", GEN), ("ok-2", GEN)]
    dlq = values(settings, topics.metering_dlq)
    assert sorted((d["error_class"], d["message"]) for d in dlq) == sorted([
        ("InvalidContribution", "unknown purpose 'train_ai_system.face_recognition'"),
        ("InvalidContribution", "units -3 outside 1..10000"),
        ("InvalidContribution", "units 1000000000 outside 1..10000"),
        ("InvalidContribution", "purpose 'train_ai_system.generative' does not use category 'click'"),
        ("UnknownSchemaId", dlq_message(dlq, "UnknownSchemaId")),
        ("MissingValue", "contribution record has no value"),
    ])
    assert all(d["topic"] == topics.contributions for d in dlq)
    # The worker's metrics tell the same story, with labels from fixed sets only.
    m = worker.metrics
    assert m.value("consentgate_metering_records_in_total") == 8
    assert m.value("consentgate_metering_credited_total", purpose=GEN) == 2
    assert m.value("consentgate_metering_credited_total", purpose="unknown") == 0
    assert m.value("consentgate_metering_redelivered_total") == 0
    assert {c: m.value("consentgate_metering_dlq_total", error_class=c) for c in (
        "InvalidContribution", "UnknownSchemaId", "MissingValue", "InvalidIdentifier")} == {
        "InvalidContribution": 4, "UnknownSchemaId": 1, "MissingValue": 1, "InvalidIdentifier": 0}
    assert m.value("consentgate_metering_db_commit_seconds_count") == m.value("consentgate_metering_batches_total") >= 1
    assert m.value("consentgate_metering_lag", partition="0") == 0


def dlq_message(dlq: list[dict[str, Any]], error_class: str) -> str:
    [message] = [d["message"] for d in dlq if d["error_class"] == error_class]
    assert message
    return str(message)


def test_late_contribution_lands_in_the_next_period_visibly(make_settings: SettingsFactory, topics: TopicNames,
                                                            catalog: Catalog, ledger_url: str) -> None:
    settings = make_settings(ledger_url=ledger_url)
    september = datetime(2026, 9, 30, 23, 59, tzinfo=timezone.utc)
    produce_contributions(settings, catalog, [contribution("on-time", occurred_at=september)])
    meter(settings, catalog)
    engine = connect(settings.ledger())
    assert close_period(engine, catalog, "2026-09").contributions == 1
    produce_contributions(settings, catalog, [contribution("late", occurred_at=september)])
    meter(settings, catalog)
    assert ledger(settings)[("late", GEN)][1:3] == ("2026-10", "2026-09")
    october = gather(engine, catalog, "u1", "2026-10")["periods"][0]
    assert october["uses"][0]["arrived_late"] == 1
    assert close_period(engine, catalog, "2026-09").contributions == 1  # the closed period is unchanged
    engine.dispose()


def test_kill_9_mid_stream_credits_every_contribution_once(make_settings: SettingsFactory, topics: TopicNames,
                                                           catalog: Catalog, ledger_url: str) -> None:
    settings = make_settings(ledger_url=ledger_url, batch_size=500)
    now = datetime.now(timezone.utc)
    records = [contribution(f"k{n}", user_id=f"u{n % 97}", purpose=(GEN, REC)[n % 2],
                            occurred_at=now - timedelta(seconds=n), fingerprint=n * 7919)
               for n in range(30_000)]
    produce_contributions(settings, catalog, records)
    # The same contribution delivered again under new offsets must not be credited again.
    produce_contributions(settings, catalog, records[:1000])

    def credited() -> int:
        engine = connect(settings.ledger())
        with engine.connect() as conn:
            n = int(conn.execute(select(func.count()).select_from(contributions)).scalar_one())
        engine.dispose()
        return n

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    env.update({"CONSENTGATE_BOOTSTRAP_SERVERS": settings.require_bootstrap(),
                "CONSENTGATE_SCHEMA_REGISTRY_URL": settings.require_registry(),
                "CONSENTGATE_TOPIC_PREFIX": settings.topic_prefix, "CONSENTGATE_DATA_DIR": str(settings.data_dir),
                "CONSENTGATE_LEDGER_URL": ledger_url, "CONSENTGATE_METERING_GROUP_ID": settings.metering_group_id,
                "CONSENTGATE_BATCH_SIZE": "500", "CONSENTGATE_SESSION_TIMEOUT_MS": "6000"})
    kills = 0
    for step in (2_000, 10_000, 18_000):
        proc = subprocess.Popen([sys.executable, "-m", "consentgate.cli.main", "metering", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: credited() >= step, timeout=120, what=f"{step} credited")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        kills += 1
    assert kills == 3 and credited() < 30_000
    final = subprocess.run([sys.executable, "-m", "consentgate.cli.main", "metering", "run", "--until-idle", "3"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    rows = ledger(settings)
    assert sorted(rows) == sorted((r["event_id"], r["purpose"]) for r in records)
    assert len(rows) == 30_000


def test_metering_cli(make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog,
                      ledger_url: str) -> None:
    settings = make_settings(ledger_url=ledger_url)
    at = datetime(2026, 8, 15, tzinfo=timezone.utc)
    produce_contributions(settings, catalog, [
        contribution("x1", user_id="ivy", plan="revenue_share", occurred_at=at),
        contribution("x2", user_id="jo", plan="revenue_share", quality=0.5, occurred_at=at),
        contribution("x3", user_id="kim", tier="free", plan=None, occurred_at=at),
    ])
    ran = run_cli(settings, "metering", "run", "--until-idle", "2")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert json.loads(ran.stdout.strip().splitlines()[-1])["credited"] == 3
    pool = run_cli(settings, "metering", "pool", "--purpose", GEN, "--period", "2026-08", "--amount", "100.01")
    assert pool.returncode == 0, pool.stderr
    assert json.loads(pool.stdout)["amount_cents"] == 10001
    bad = run_cli(settings, "metering", "pool", "--purpose", GEN, "--period", "2026-8", "--amount", "1")
    assert bad.returncode == 2 and "period '2026-8' is not YYYY-MM" in bad.stderr
    bad = run_cli(settings, "metering", "pool", "--purpose", GEN, "--period", "2026-08", "--amount", "0.001")
    assert bad.returncode == 2 and "fractions of a cent" in bad.stderr
    closed = run_cli(settings, "metering", "close", "--period", "2026-08")
    assert closed.returncode == 0, closed.stderr
    report = json.loads(closed.stdout)
    assert (report["pools"], report["cash_cents"], report["statements"]) == ({f"{GEN}/revenue_share": 10001},
                                                                            10001, 3)
    again = json.loads(run_cli(settings, "metering", "close", "--period", "2026-08").stdout)
    assert again["already_closed"] and again["cash_cents"] == 10001
    # ivy 1000 : jo 500 of 10001 cents -> 6667.33 / 3333.67 -> 6667 / 3334
    ivy = json.loads(run_cli(settings, "statement", "--user", "ivy", "--format", "json").stdout)
    assert ivy["periods"][0]["cash"] == "66.67"
    jo = run_cli(settings, "statement", "--user", "jo", "--period", "2026-08")
    assert "total: 33.34 USD and 0 credits" in jo.stdout
    kim = run_cli(settings, "statement", "--user", "kim", "--format", "html")
    assert "free tier: not paid" in kim.stdout and "<strong>0.00 USD</strong>" in kim.stdout


def test_two_workers_rebalancing_mid_stream_credit_each_contribution_once(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, ledger_url: str) -> None:
    settings = make_settings(ledger_url=ledger_url, batch_size=300, session_timeout_ms=6000)
    now = datetime.now(timezone.utc)
    records = [contribution(f"w{n}", user_id=f"u{n % 211}", occurred_at=now, fingerprint=n * 104729)
               for n in range(20_000)]
    produce_contributions(settings, catalog, records)
    workers = [MeteringWorker(settings.model_copy(update={"worker_id": f"m{i}"}), catalog) for i in range(2)]
    errors: list[BaseException] = []

    def run(worker: MeteringWorker) -> None:
        try:
            worker.run(idle_exit_s=4.0)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    threads[0].start()
    wait_for(lambda: workers[0].stats.credited > 0, timeout=60, what="first batches")
    threads[1].start()  # joins the group mid-stream: partitions move between the workers
    wait_for(lambda: bool(workers[1]._expected), timeout=60, what="second worker assigned")
    more = [contribution(f"v{n}", user_id=f"u{n % 211}", occurred_at=now) for n in range(3_000)]
    produce_contributions(settings, catalog, more)
    records += more
    for t in threads:
        t.join(180)
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert workers[1].stats.credited > 0
    assert workers[0].stats.credited + workers[1].stats.credited == 23_000
    assert sorted(ledger(settings)) == sorted((r["event_id"], GEN) for r in records)


def test_oversized_and_control_character_ids_go_to_the_dlq_and_never_jam_the_ledger(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, ledger_url: str) -> None:
    """201- and 10,000-character ids (and a NUL) between good records: the good ones are credited in
    the same batches, the bad ones go to metering.dlq as InvalidIdentifier, the worker goes on."""
    settings = make_settings(ledger_url=ledger_url)
    bad = [
        contribution("u" * 201),
        contribution("bad-user-201", user_id="u" * 201),
        contribution("e" * 10_000),
        contribution("bad-user-10k", user_id="x" * 10_000),
        contribution("bad-receipt", receipt_id="r" * 81),
        contribution("bad-nul\x00", user_id="u1"),
        contribution("bad-record-id", record_id="g" * 65),
        contribution("bad-key-id", key_id="k-0/1"),
    ]
    good = [contribution(f"good-{n}", user_id=f"u{n}", record_id=f"{n:032x}", key_id="k0123456789a") for n in range(4)]
    produce_contributions(settings, catalog, good[:2] + bad + good[2:])
    worker = meter(settings, catalog)
    assert (worker.stats.credited, worker.stats.retries) == (4, 0)
    assert sorted(ledger(settings)) == [(f"good-{n}", GEN) for n in range(4)]
    dlq = values(settings, topics.metering_dlq)
    assert sorted((d["error_class"], d["message"]) for d in dlq) == sorted([
        ("InvalidIdentifier", "event_id has 201 characters (at most 200)"),
        ("InvalidIdentifier", "user_id has 201 characters (at most 200)"),
        ("InvalidIdentifier", "event_id has 10000 characters (at most 200)"),
        ("InvalidIdentifier", "user_id has 10000 characters (at most 200)"),
        ("InvalidIdentifier", "receipt_id has 81 characters (at most 80)"),
        ("InvalidIdentifier", "event_id has a control or unassigned character U+0000 at position 7"),
        ("InvalidIdentifier", "record_id is not a keyed hash of at most 64 letters and digits"),
        ("InvalidIdentifier", "key_id is not a keyed hash of at most 32 letters and digits"),
    ])
    engine = connect(settings.ledger())
    with engine.connect() as conn:
        ids = conn.execute(select(contributions.c.event_id, contributions.c.record_id, contributions.c.key_id)
                           .order_by(contributions.c.event_id)).all()
    engine.dispose()
    assert [tuple(r) for r in ids] == [(f"good-{n}", f"{n:032x}", "k0123456789a") for n in range(4)]


def test_without_the_bound_one_long_id_jams_the_ledger(make_settings: SettingsFactory, topics: TopicNames,
                                                       catalog: Catalog, ledger_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """What the bound prevents (the code before it): PostgreSQL refuses a 201-character id, the whole
    batch rolls back, and the worker reads the same batch again, forever, crediting nothing."""
    if not ledger_url.startswith("postgresql"):
        pytest.skip("SQLite does not enforce VARCHAR lengths: this failure exists on PostgreSQL only")
    import consentgate.streams.metering as metering_module

    monkeypatch.setattr(metering_module, "identifier_rejection", lambda record: None)
    settings = make_settings(ledger_url=ledger_url)
    produce_contributions(settings, catalog, [contribution("good-0"), contribution("u" * 201),
                                              contribution("good-1")])
    worker = MeteringWorker(settings, catalog)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.stats.retries >= 3, timeout=60, what="the batch to be retried three times")
    finally:
        worker.stop()
        thread.join(60)
    assert worker.stats.credited == 0 and ledger(settings) == {}


def test_close_values_usefulness_from_the_training_topic_before_paying(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, ledger_url: str) -> None:
    """Gate output end to end: the ledger keeps each contribution's keyed record id, `metering close`
    reads the minimised texts from training.<purpose> by that id, values them, then pays."""
    from consentgate.pseudonyms import key_id, record_id

    settings = make_settings(ledger_url=ledger_url)
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", user, "post", GEN, tier="data_sharing", plan="revenue_share")
                      for user in ("ana", "bo")])
    t = datetime.now(timezone.utc)  # after the grants: a grant never legitimises older data
    period = period_of(t)
    on = ["the morning ferry to the island waits for high tide at the harbour",
          "reading the tide tables before taking the boat out of the harbour",
          "we pruned the apple orchard in late winter and hope for a good harvest"]
    off = ["the quarterly earnings call moved the share price of the chip maker",
           "my favourite video game got a patch that rebalanced every weapon",
           "the tax office changed the deadline for filing self assessment returns"]
    produce_events(settings, [ActivityEvent(f"a{n}", "ana", "post", t, "app", {"text": x}) for n, x in enumerate(on)]
                   + [ActivityEvent(f"b{n}", "bo", "post", t, "app", {"text": x}) for n, x in enumerate(off)])
    run_gate(settings, catalog)
    assert meter(settings, catalog).stats.credited == 6
    secret = settings.require_secret()
    engine = connect(settings.ledger())
    with engine.connect() as conn:
        keyed = {e: (r, k) for e, r, k in conn.execute(
            select(contributions.c.event_id, contributions.c.record_id, contributions.c.key_id))}
    assert keyed == {e: (record_id(secret, GEN, e), key_id(secret)) for e in ("a0", "a1", "a2", "b0", "b1", "b2")}
    assert run_cli(settings, "metering", "pool", "--purpose", GEN, "--period", period,
                   "--amount", "100.00").returncode == 0
    closed = run_cli(settings, "metering", "close", "--period", period)
    assert closed.returncode == 0, closed.stderr[-2000:]
    report = json.loads(closed.stdout)
    assert report["usefulness"]["purposes"][GEN]["valued"] == 6
    assert report["usefulness"]["training_records_read"] == 6 and report["pools"] == {f"{GEN}/revenue_share": 10000}
    ana = gather(engine, catalog, "ana", period)["periods"][0]
    bo = gather(engine, catalog, "bo", period)["periods"][0]
    engine.dispose()
    # Expected, from the pure parts: quality from the content, usefulness from the exact values,
    # weight = quality x usefulness in thousandths each, the pool split in proportion (largest remainder).
    milli = [v.multiplier_milli for v in value_texts(on + off, catalog.purposes[GEN].usefulness.reference,
                                                     HashedNgramEmbedder(), 5, 3.0)]  # type: ignore[union-attr]
    weights = [round(assess("post", {"text": x}).quality * 1000) * m / 1000 for x, m in zip(on + off, milli)]
    exact_ana = 10000 * sum(weights[:3]) / sum(weights)
    assert (ana["cash"], bo["cash"]) == ("81.92", "18.08") and abs(8192 - exact_ana) < 1
    assert ana["uses"][0]["usefulness"]["topic"] == "the harbour"
    again = run_cli(settings, "metering", "value", "--period", period)
    assert again.returncode == 2 and f"period {period} is closed" in again.stderr
