"""Planted violations, one test each: the audit names exactly what was planted, and nothing else.

A scripted gate writes what a correct gate writes for a small scenario (decided with the gate's
own ``decide``, encoded with the project's codecs, produced to the real topics); each test then
plants one violation by producing, omitting or altering records, and audits the real topics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from confluent_kafka import Producer
from consentgate.connectors.kafka import producer
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.records import activity_to_avro
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from consentgate.streams.outputs import decision_record

from consentgate.audit.report import AuditReport
from consentgate.audit.run import AuditOptions, run_audit
from consentgate.catalog import Catalog
from consentgate.decision import decide
from consentgate.model import ActivityEvent, ConsentState, Decision, DropReason, Grant, Outcome
from consentgate.pseudonyms import key_id, pseudonym, record_id
from consentgate.settings import Settings
from tests.conftest import SettingsFactory

GEN, REC, ADS = "train_ai_system.generative", "train_ai_system.recommendation", "train_ai_system.ads_ranking"
POST = {"text": "a long walk by the sea at dawn"}


@dataclass
class Output:
    topic: str
    contract: str
    key: str | None
    value: dict[str, Any]
    partition: int | None = None


@dataclass
class Scripted:
    """A small world and what a correct gate would write for it."""

    settings: Settings
    catalog: Catalog
    topics: TopicNames
    secret: bytes
    codecs: Codecs
    out: Producer
    inputs: list[tuple[ActivityEvent, int, int]] = field(default_factory=list)  # event, partition, offset
    outputs: list[Output] = field(default_factory=list)

    def consent(self, *requests: ConsentRequest) -> None:
        with ConsentWriter(self.settings, self.catalog) as writer:
            writer.apply(list(requests))  # one transaction per partition, versions in the order given

    def activity(self, events: list[ActivityEvent], timestamp: int | None = None) -> list[tuple[int, int]]:
        """Publish events; returns their (partition, offset)."""
        encode = self.codecs["ActivityEvent"].writer_for(self.topics.activity)
        placed: list[tuple[int, int]] = []
        for event in events:
            extra: dict[str, Any] = {"timestamp": timestamp} if timestamp is not None else {}
            self.out.produce(self.topics.activity, encode(activity_to_avro(event)), event.user_id.encode(),
                             on_delivery=lambda err, msg: placed.append((msg.partition(), msg.offset())), **extra)
            assert self.out.flush(30) == 0
        for event, (partition, offset) in zip(events, placed):
            self.inputs.append((event, partition, offset))
        return placed

    def decide(self, decided_at: datetime | None = None) -> None:
        """What a correct gate writes for every input so far."""
        now = decided_at or datetime.fromtimestamp(time.time_ns() // 1_000_000 / 1000, timezone.utc)
        with ConsentWriter(self.settings, self.catalog) as writer:
            shown: dict[str, Any] = {}
            for event, partition, offset in self.inputs:
                if event.user_id not in shown:
                    shown[event.user_id] = writer.show(event.user_id)
                consent = shown[event.user_id]
                decision = decide(event, consent, self.catalog, now)
                self.decision_outputs(event, decision, consent, now, partition, offset)

    def decision_outputs(self, event: ActivityEvent, decision: Decision, consent: Any, now: datetime,
                         partition: int, offset: int) -> None:
        now_ms = int(now.timestamp() * 1000)
        self.outputs.append(Output(self.topics.decisions, "Decision", event.user_id,
                                   decision_record(decision, now_ms, self.topics.activity, partition, offset)))
        for outcome in decision.outcomes:
            if outcome.passed:
                assert isinstance(consent, ConsentState) and outcome.grant is not None
                self.outputs.append(self.training(event, outcome.purpose, consent.version))
                self.outputs.append(self.contribution(event, outcome.purpose, consent, outcome.grant.receipt_id))

    def training(self, event: ActivityEvent, purpose: str, version: int) -> Output:
        keep = self.catalog.purposes[purpose].categories[event.category].keep
        nym = pseudonym(self.secret, purpose, event.user_id)
        value = {"pseudonym": nym, "record_id": record_id(self.secret, purpose, event.event_id),
                 "key_id": key_id(self.secret), "purpose": purpose, "category": event.category,
                 "occurred_at": event.occurred_at, "fields": {k: event.payload[k] for k in keep if k in event.payload},
                 "consent_version": version}
        return Output(self.topics.training[purpose], "TrainingRecord", nym, value)

    def contribution(self, event: ActivityEvent, purpose: str, consent: ConsentState, receipt: str) -> Output:
        value = {"event_id": event.event_id, "purpose": purpose, "user_id": event.user_id,
                 "category": event.category, "units": 1, "quality": 1.0, "fingerprint": None,
                 "occurred_at": event.occurred_at, "tier": consent.tier, "plan": consent.plan, "receipt_id": receipt,
                 "consent_version": consent.version, "record_id": record_id(self.secret, purpose, event.event_id),
                 "key_id": key_id(self.secret)}
        return Output(self.topics.contributions, "Contribution", event.user_id, value)

    def publish(self, outputs: list[Output] | None = None) -> None:
        for o in self.outputs if outputs is None else outputs:
            encode = self.codecs[o.contract].writer_for(o.topic)
            extra = {"partition": o.partition} if o.partition is not None else {}
            self.out.produce(o.topic, encode(o.value), o.key.encode() if o.key else None, **extra)
        assert self.out.flush(30) == 0

    def find(self, contract: str, **match: Any) -> Output:
        hits = [o for o in self.outputs
                if o.contract == contract and all(o.value.get(k) == v for k, v in match.items())]
        assert len(hits) == 1, (contract, match, len(hits))
        return hits[0]

    def audit(self, **options: Any) -> AuditReport:
        return run_audit(self.settings, self.catalog, AuditOptions(**options))


def world(settings: Settings, catalog: Catalog, topics: TopicNames) -> Scripted:
    """Consent for four people, eight activity records, decided by a correct (scripted) gate."""
    registry = registry_client(settings)
    scripted = Scripted(settings, catalog, topics, settings.require_secret(), Codecs(registry), producer(settings))
    scripted.consent(
        ConsentRequest("grant", "u-ok", "post", GEN, tier="data_sharing", plan="per_unit"),
        ConsentRequest("grant", "u-ok", "post", REC),
        ConsentRequest("grant", "u-ok", "click", REC),
        ConsentRequest("grant", "u-ok", "search", ADS),
        ConsentRequest("grant", "u-gone", "post", GEN),
        ConsentRequest("erase", "u-gone"),
        ConsentRequest("grant", "u-rev", "post", REC),
        ConsentRequest("revoke", "u-rev", "post", REC),
    )
    t = datetime.fromtimestamp(time.time_ns() // 1_000_000 / 1000, timezone.utc)
    scripted.activity([
        ActivityEvent("e-post", "u-ok", "post", t, "web", POST),
        ActivityEvent("e-click", "u-ok", "click", t, "web", {"item_id": "i-7", "url": "https://shop.example/i-7"}),
        ActivityEvent("e-search", "u-ok", "search", t, "web", {"query": "tide tables"}),
        ActivityEvent("e-old", "u-ok", "post", t - timedelta(days=1), "web", POST),
        ActivityEvent("e-none", "u-none", "post", t, "web", POST),
        ActivityEvent("e-gone", "u-gone", "post", t, "web", POST),
        ActivityEvent("e-rev", "u-rev", "post", t, "web", POST),
        ActivityEvent("e-voice", "u-ok", "voice", t, "speaker", {"transcript": "jazz"}),
    ])
    scripted.decide()
    return scripted


@pytest.fixture
def scripted(settings: Settings, catalog: Catalog, topics: TopicNames) -> Iterator[Scripted]:
    made = world(settings, catalog, topics)
    yield made
    made.codecs.client.close()


def named(report: AuditReport) -> list[tuple[str, str | None, str | None]]:
    return [(f.kind, f.event_id, f.purpose) for f in report.findings]


def test_a_correct_gate_audits_clean(scripted: Scripted) -> None:
    scripted.publish()
    report = scripted.audit()
    assert report.findings == []
    assert (report.decisions, report.reproduced, report.dead_letters) == (8, 8, 0)
    results = {(r["category"], r["purpose"], r["result"]): r["n"] for r in report.counts}
    assert results == {
        ("post", GEN, "pass"): 1, ("post", REC, "pass"): 1, ("click", REC, "pass"): 1, ("search", ADS, "pass"): 1,
        ("click", ADS, "no_grant"): 1, ("search", REC, "no_grant"): 1,
        ("post", GEN, "grant_after_event"): 1, ("post", REC, "grant_after_event"): 1,
        ("post", GEN, "no_consent_record"): 1, ("post", REC, "no_consent_record"): 1,
        ("post", GEN, "erased"): 1, ("post", REC, "erased"): 1,
        ("post", REC, "no_grant"): 1, ("post", GEN, "no_grant"): 1,
        ("voice", GEN, "unknown_category"): 1, ("voice", REC, "unknown_category"): 1,
        ("voice", ADS, "unknown_category"): 1,
    }


def test_forged_pass_for_a_person_without_consent(scripted: Scripted) -> None:
    [(partition, offset)] = scripted.activity([ActivityEvent("e-forged", "u-mallory", "post", datetime.now(
        timezone.utc), "web", POST)])
    event = scripted.inputs[-1][0]
    forged = ConsentState("u-mallory", 1, event.occurred_at, "data_sharing", "per_unit")
    decision = Decision("e-forged", "u-mallory", "post", (Outcome(GEN, True), Outcome(REC, True)), 1)
    now = datetime.now(timezone.utc)
    scripted.outputs.append(Output(scripted.topics.decisions, "Decision", "u-mallory", decision_record(
        decision, int(now.timestamp() * 1000), scripted.topics.activity, partition, offset)))
    for purpose in (GEN, REC):  # a thorough forger writes the outputs too
        scripted.outputs.append(scripted.training(event, purpose, 1))
        scripted.outputs.append(scripted.contribution(event, purpose, forged, "r-forged"))
    scripted.publish()
    report = scripted.audit()
    assert named(report) == [("wrong_outcome", "e-forged", None), ("wrong_outcome", "e-forged", GEN),
                             ("wrong_outcome", "e-forged", REC)]
    assert report.findings[0].detail == "consent v1 of u-mallory does not exist on consent.changes"
    assert report.findings[1].detail == "passed, expected no_consent_record (consent v1)"
    assert (report.decisions, report.reproduced) == (9, 8)


def test_training_record_without_a_decision(scripted: Scripted) -> None:
    event = ActivityEvent("e-ghost", "u-ok", "post", datetime.now(timezone.utc), "web", POST)
    scripted.publish([*scripted.outputs, scripted.training(event, GEN, 4)])
    report = scripted.audit()
    assert named(report) == [("unjustified_output", None, GEN)]
    ghost = record_id(scripted.secret, GEN, "e-ghost")
    assert report.findings[0].detail == f"a training record (record_id {ghost}) without a passing decision"
    assert report.findings[0].where == f"{scripted.topics.training[GEN]}[{_partition_of(scripted, ghost)}]@1"


def _partition_of(scripted: Scripted, record: str) -> int:
    from consentgate.connectors.kafka import partition_for

    nym = pseudonym(scripted.secret, GEN, "u-ok")
    return partition_for(nym.encode(), scripted.settings.partitions)


def test_deleted_decision_is_an_offset_gap(scripted: Scripted) -> None:
    _, partition, offset = next(i for i in scripted.inputs if i[0].event_id == "e-none")
    deleted = scripted.find("Decision", event_id="e-none")
    scripted.publish([o for o in scripted.outputs if o is not deleted])
    report = scripted.audit()
    assert named(report) == [("offset_gap", None, None)]
    assert report.findings[0].detail == f"no decision or dead letter for input offset {offset}"
    assert report.findings[0].where == f"input {partition}@{offset}"
    assert report.decisions == 7


def test_duplicated_decision(scripted: Scripted) -> None:
    twice = scripted.find("Decision", event_id="e-post")
    scripted.publish([*scripted.outputs, twice])
    report = scripted.audit()
    assert named(report) == [("duplicate", "e-post", None)]
    assert report.findings[0].detail == "2 decisions and dead letters for one input"


def test_wrong_reason(scripted: Scripted) -> None:
    decision = scripted.find("Decision", event_id="e-rev")
    for outcome in decision.value["outcomes"]:
        if outcome["purpose"] == GEN:
            assert outcome["reason"] == "no_grant"
            outcome["reason"] = "stale_terms"
    scripted.publish()
    report = scripted.audit()
    assert named(report) == [("wrong_outcome", "e-rev", GEN)]
    assert report.findings[0].detail == "dropped as stale_terms, expected no_grant (consent v2)"


def test_training_record_with_an_unkept_field(scripted: Scripted) -> None:
    record = scripted.find("TrainingRecord", record_id=record_id(scripted.secret, REC, "e-click"))
    record.value["fields"]["url"] = "https://shop.example/i-7"  # recommendation keeps only item_id of a click
    scripted.publish()
    report = scripted.audit()
    assert named(report) == [("unkept_field", "e-click", REC)]
    assert report.findings[0].detail == f"training record holds field url, which {REC} does not keep of click"


def test_missing_retraction(scripted: Scripted) -> None:
    scripted.publish()
    # an erasure recorded on consent.changes without the retractions the consent writer owes
    receipt = {"receipt_id": "r-erase", "user_id": "u-ok", "action": "erase", "category": None, "purpose": None,
               "at": datetime.now(timezone.utc), "source": "test", "terms_version": None, "notice_version": None,
               "jurisdiction": None, "expires_at": None, "tier": None, "plan": None, "consent_version": 5}
    scripted.publish([Output(scripted.topics.consent_changes, "ConsentChange", "u-ok", receipt)])
    report = scripted.audit()
    assert named(report) == [("missing_retraction", None, ADS), ("missing_retraction", None, GEN),
                             ("missing_retraction", None, REC)]
    assert report.findings[0].detail == "erasure of u-ok (consent v5) has no retraction for this purpose"


def test_decided_with_consent_older_than_a_committed_revocation(scripted: Scripted) -> None:
    scripted.consent(ConsentRequest("grant", "u-late", "post", GEN), ConsentRequest("revoke", "u-late"))
    revoked_at = time.time_ns() // 1_000_000
    # appended 5 s after the revocation committed (a producer-set timestamp on this CreateTime topic)
    event = ActivityEvent("e-late", "u-late", "post", datetime.now(timezone.utc), "web", POST)
    [(partition, offset)] = scripted.activity([event], timestamp=revoked_at + 5000)
    granted = ConsentState("u-late", 1, event.occurred_at, "free", None,
                           (Grant("post", GEN, event.occurred_at - timedelta(seconds=1), None, 2, "r"),))
    decision = Decision("e-late", "u-late", "post", (Outcome(GEN, True), Outcome(REC, False, DropReason.NO_GRANT)), 1)
    now = datetime.now(timezone.utc)
    scripted.outputs.append(Output(scripted.topics.decisions, "Decision", "u-late", decision_record(
        decision, int(now.timestamp() * 1000), scripted.topics.activity, partition, offset)))
    scripted.outputs.append(scripted.training(event, GEN, 1))
    scripted.outputs.append(scripted.contribution(event, GEN, granted, "r"))
    scripted.publish()
    report = scripted.audit()
    assert named(report) == [("stale_consent", "e-late", None)]
    assert report.findings[0].detail == ("decided with consent v1 although v2 was committed before the input was "
                                         "appended")


def test_contributions_against_the_ledger(make_settings: SettingsFactory, catalog: Catalog, ledger_url: str) -> None:
    from sqlalchemy import create_engine, text

    from consentgate.connectors.ledger import connect
    from consentgate.connectors.topics import create_topics
    from consentgate.connectors.kafka import admin
    from consentgate.streams.metering import MeteringWorker

    settings = make_settings(ledger_url=ledger_url)
    create_topics(settings, admin(settings), catalog)
    made = world(settings, catalog, TopicNames.of(settings, catalog))
    try:
        made.publish()
        connect(ledger_url).dispose()
        MeteringWorker(settings, catalog).run(idle_exit_s=2.0)
        clean = made.audit(ledger_url=ledger_url)
        assert clean.findings == [] and clean.ledger == {"credited": 4, "contributions": 4}
        engine = create_engine(ledger_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:  # a credit lost, and another credited to someone else
            conn.execute(text("DELETE FROM valuations WHERE event_id = 'e-click'"))
            conn.execute(text("DELETE FROM contributions WHERE event_id = 'e-click'"))
            conn.execute(text("UPDATE contributions SET user_id = 'u-thief' WHERE event_id = 'e-search'"))
        engine.dispose()
        report = made.audit(ledger_url=ledger_url)
        assert named(report) == [("ledger_mismatch", "e-click", REC), ("ledger_mismatch", "e-search", ADS)]
        assert report.findings[1].detail == ("the ledger credits u-thief 1 units under v4, the contribution says "
                                             "u-ok 1 units under v4")
    finally:
        made.codecs.client.close()


def test_a_time_range_audits_only_its_inputs(scripted: Scripted) -> None:
    later = time.time_ns() // 1_000_000 + 60_000  # appended (by its timestamp) a minute from now
    scripted.inputs = []
    scripted.activity([ActivityEvent("e-next", "u-ok", "post", datetime.now(timezone.utc), "web", POST),
                       ActivityEvent("e-next-none", "u-none", "post", datetime.now(timezone.utc), "web", POST)],
                      timestamp=later)
    scripted.decide()
    scripted.publish()
    report = scripted.audit(from_ms=later - 1000)  # the two later inputs; the rest is read only to match outputs
    assert (report.findings, report.decisions, report.scope["records"]) == ([], 2, 2)
    assert sum(r["n"] for r in report.counts) == 2 + 2  # post for GEN and REC, twice
    before = scripted.audit(to_ms=later - 1000)  # the first eight
    assert (before.findings, before.decisions, before.scope["records"]) == ([], 8, 8)
