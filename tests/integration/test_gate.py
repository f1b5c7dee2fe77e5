"""The gate end to end against a real broker: every rule, exact outputs."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from consentgate.connectors.topics import TopicNames
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter

from consentgate.quality import assess
from consentgate.catalog import Catalog, load_catalog
from consentgate.model import ActivityEvent
from consentgate.pseudonyms import key_id, pseudonym, record_id
from consentgate.settings import Settings
from tests.conftest import TEST_SECRET, SettingsFactory
from tests.helpers import committed, produce_events, run_gate, values

GEN, REC, ADS = "train_ai_system.generative", "train_ai_system.recommendation", "train_ai_system.ads_ranking"


def iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_every_rule_end_to_end(make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog,
                               tmp_path: Path) -> None:
    settings = make_settings()
    with ConsentWriter(settings, catalog) as writer:
        before = datetime.now(timezone.utc) - timedelta(milliseconds=1)
        writer.apply([
            ConsentRequest("grant", "u-ok", "post", GEN, tier="data_sharing", plan="per_unit"),
            ConsentRequest("grant", "u-ok", "search", ADS),
            ConsentRequest("grant", "u-other-purpose", "post", REC),
            ConsentRequest("grant", "u-erased", "post", GEN),
            ConsentRequest("grant", "u-stale", "post", GEN),
            ConsentRequest("grant", "u-expiring", "post", GEN,
                           expires_at=datetime.now(timezone.utc) + timedelta(seconds=3)),
        ])
        writer.apply([ConsentRequest("erase", "u-erased")])
        writer.apply([ConsentRequest("grant", "u-late", "post", GEN)])
    t = datetime.now(timezone.utc)
    post = {"text": "a long walk by the sea"}
    events = [
        ActivityEvent("ok-post", "u-ok", "post", t, "web", post),
        ActivityEvent("ok-search", "u-ok", "search", t, "web", {"query": "tide tables"}),
        ActivityEvent("nobody", "u-nobody", "post", t, "web", post),
        ActivityEvent("erased", "u-erased", "post", t, "web", post),
        ActivityEvent("other", "u-other-purpose", "post", t, "web", post),
        ActivityEvent("late", "u-late", "post", before, "web", post),
        ActivityEvent("expiring", "u-expiring", "post", t, "web", post),
        ActivityEvent("stale", "u-stale", "post", t, "web", post),
        ActivityEvent("voice", "u-ok", "voice", t, "speaker", {"transcript": "jazz"}),
    ]
    produce_events(settings, events)
    time.sleep(max(0.0, 3.2 - (datetime.now(timezone.utc) - t).total_seconds()))  # u-expiring's grant lapses
    # The gate runs with generative's terms raised: u-stale's grant (terms 2) is now stale.
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "consentgate" / "catalog.yaml").read_text())
    raw["purposes"][GEN]["terms_version"] = 3
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    gate_settings = make_settings(catalog=tmp_path / "catalog.yaml")
    stats = run_gate(gate_settings, load_catalog(gate_settings.catalog))

    decisions = {d["event_id"]: d for d in values(settings, topics.decisions)}
    got = {e: [(o["purpose"], o["reason"]) for o in d["outcomes"]] for e, d in decisions.items()}
    assert got == {
        # u-ok granted post/GEN at terms 2, which the raised catalog makes stale too.
        "ok-post": [(REC, "no_grant"), (GEN, "stale_terms")],
        "ok-search": [(REC, "no_grant"), (ADS, None)],
        "nobody": [(REC, "no_consent_record"), (GEN, "no_consent_record")],
        "erased": [(REC, "erased"), (GEN, "erased")],
        "other": [(REC, None), (GEN, "no_grant")],
        "late": [(REC, "no_grant"), (GEN, "grant_after_event")],
        "expiring": [(REC, "no_grant"), (GEN, "expired")],
        "stale": [(REC, "no_grant"), (GEN, "stale_terms")],
        "voice": [(REC, "unknown_category"), (GEN, "unknown_category"), (ADS, "unknown_category")],
    }
    assert stats.records_in == 9 and stats.decisions == 9 and stats.dead_letters == 0
    assert stats.passed == {ADS: 1, REC: 1}
    assert decisions["ok-search"]["input"]["topic"] == topics.activity
    assert decisions["nobody"]["consent_version"] is None and decisions["ok-search"]["consent_version"] == 2

    secret = TEST_SECRET.encode()
    ads = committed(settings, topics.training[ADS])
    nym = pseudonym(secret, ADS, "u-ok")
    # No raw event, user or receipt id: keyed hashes only, distinct per purpose.
    assert ads == [(nym, {
        "pseudonym": nym, "record_id": record_id(secret, ADS, "ok-search"), "key_id": key_id(secret),
        "purpose": ADS, "category": "search", "occurred_at": iso(t),
        "fields": {"query": "tide tables"}, "consent_version": 2})]
    rec = values(settings, topics.training[REC])
    assert [(r["record_id"], r["fields"], r["pseudonym"]) for r in rec] == [
        (record_id(secret, REC, "other"), post, pseudonym(secret, REC, "u-other-purpose"))]
    assert values(settings, topics.training[GEN]) == []
    contributions = sorted((c["event_id"], c["purpose"], c["record_id"], c["key_id"], c["user_id"], c["units"],
                            c["tier"], c["plan"], c["quality"], c["fingerprint"])
                           for c in values(settings, topics.contributions))
    assert contributions == [
        ("ok-search", ADS, record_id(secret, ADS, "ok-search"), key_id(secret), "u-ok", 1, "data_sharing",
         "per_unit", *assess("search", {"query": "tide tables"})),
        ("other", REC, record_id(secret, REC, "other"), key_id(secret), "u-other-purpose", 1, "free", None,
         *assess("post", post))]
    assert values(settings, topics.dlq) == []
    # Erasure asked every training sink to delete the user's pseudonym.
    retractions = sorted((r["purpose"], r["pseudonym"], r["key_id"], r["consent_version"])
                         for r in values(settings, topics.retractions))
    assert retractions == sorted((p, pseudonym(secret, p, "u-erased"), key_id(secret), 2) for p in catalog.purposes)
    # Metrics agree with the committed outputs.
    assert stats.dropped == {"no_grant": 6, "stale_terms": 2, "no_consent_record": 2, "erased": 2,
                             "grant_after_event": 1, "expired": 1, "unknown_category": 3}


def test_gate_metrics_and_training_minimisation(settings: Settings, topics: TopicNames, catalog: Catalog) -> None:
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", "u1", "click", REC), ConsentRequest("grant", "u1", "click", ADS),
                      ConsentRequest("grant", "u1", "conversation", GEN)])
    t = datetime.now(timezone.utc)
    produce_events(settings, [
        ActivityEvent("c1", "u1", "click", t, "web", {"item_id": "i-1", "url": "https://x.example/private?q=1"}),
        ActivityEvent("m1", "u1", "conversation", t, "ios", {"text": "hi there", "thread_id": "t-secret"}),
    ])
    from consentgate.streams.gate import Gate

    gate = Gate(settings, catalog)
    gate.run(until_idle=2.0)
    fields = {(r["record_id"], r["purpose"]): r["fields"] for t_ in topics.training.values()
              for r in values(settings, t_)}
    secret = TEST_SECRET.encode()
    assert fields == {(record_id(secret, REC, "c1"), REC): {"item_id": "i-1"},  # recommendation keeps no URL
                      (record_id(secret, ADS, "c1"), ADS): {"item_id": "i-1", "url": "https://x.example/private?q=1"},
                      (record_id(secret, GEN, "m1"), GEN): {"text": "hi there"}}  # no thread id
    m = gate.metrics
    assert m.value("consentgate_records_in_total") == 2
    assert m.value("consentgate_outcomes_total", purpose=REC, category="click", result="passed") == 1
    assert m.value("consentgate_outcomes_total", purpose=GEN, category="conversation", result="passed") == 1
    assert m.value("consentgate_consent_view_users") == 1
    assert m.value("consentgate_batches_total") >= 1
