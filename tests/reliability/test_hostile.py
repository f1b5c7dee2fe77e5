"""Hostile input on the activity and consent topics, and what may leave the gate."""

from __future__ import annotations

import logging
import random
import struct
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from consentgate.connectors.kafka import consumer
from consentgate.connectors.reader import read_committed
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.errors import RecordError
from consentgate.schemas.records import activity_to_avro
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from consentgate.streams.gate import Gate
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from consentgate.catalog import Catalog
from consentgate.demo import run_demo
from consentgate.model import ActivityEvent
from consentgate.settings import Settings
from tests.conftest import TEST_SECRET, SettingsFactory
from tests.helpers import produce_raw, run_gate, values

GEN = "train_ai_system.generative"
EDGE_TEXT = ["", "\u0000", "e\u0301", "\u202etxet", "\u200b", "🧪" * 50, "\ud7ff\ue000", "ß" * 300, "\U0010ffff"]


class FakeMessage:
    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def value(self) -> bytes | None:
        return self._value

    def topic(self) -> str:
        return "activity"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0


@pytest.fixture
def gate(settings: Settings, topics: TopicNames, catalog: Catalog) -> Any:
    worker = Gate(settings, catalog)
    yield worker
    worker.close()


def _good(settings: Settings, topic: str, text: str = "t", user: str = "u1", at: datetime | None = None) -> bytes:
    with registry_client(settings) as registry:
        return Codecs(registry)["ActivityEvent"].encode(topic, activity_to_avro(
            ActivityEvent("e", user, "post", at or datetime.now(timezone.utc), "fuzz", {"text": text})))


def test_fuzzed_input_never_crashes_the_decoder(settings: Settings, topics: TopicNames, gate: Gate) -> None:
    """Every input either becomes an ActivityEvent or raises a RecordError (a DLQ entry)."""
    good = _good(settings, topics.activity, "hello")
    schema_id = good[1:5]
    body = good[5:]
    now = datetime.now(timezone.utc)
    limit = now + timedelta(minutes=5)
    mutations = st.one_of(
        st.binary(max_size=300),
        st.integers(0, len(good) - 1).map(lambda n: good[:n]),  # truncated
        st.integers(0, 2**32 - 1).map(lambda i: b"\x00" + struct.pack(">I", i) + body),  # any schema id
        st.tuples(st.integers(5, len(good) - 1), st.integers(0, 255)).map(
            lambda t: good[:t[0]] + bytes([t[1]]) + good[t[0] + 1:]),  # one byte changed
        st.binary(max_size=40).map(lambda b: b"\x00" + schema_id + b),  # right id, random body
    )

    @hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(mutations)
    def check(raw: bytes) -> None:
        try:
            event = gate._read(FakeMessage(raw), now, limit)
        except RecordError:
            return
        assert isinstance(event, ActivityEvent) and event.event_id and event.user_id

    check()


def test_hostile_batch_through_the_gate(make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog) -> None:
    settings = make_settings(max_record_bytes=4096)
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", "u1", "post", GEN)])
    rng = random.Random(9)
    now = datetime.now(timezone.utc)
    good = [_good(settings, topics.activity, text, "u1") for text in EDGE_TEXT]
    bad = [rng.randbytes(rng.randint(0, 80)).replace(b"\x00", b"\x01", 1) for _ in range(40)]  # no magic byte
    bad += [g[: rng.randint(0, len(g) - 1)] for g in good]  # truncated anywhere
    bad += [b"\x00\x7f\xff\xff\xfe" + good[0][5:]]  # unknown schema id
    bad += [_good(settings, topics.activity, "x" * 5000)]  # oversized
    bad += [_good(settings, topics.activity, at=now + timedelta(days=3650)),  # far future
            _good(settings, topics.activity, user="")]  # missing id
    far_past = _good(settings, topics.activity, at=datetime(1971, 1, 1, tzinfo=timezone.utc))  # valid, but too old
    records: list[tuple[bytes | None, bytes | None]] = [(None, v) for v in bad] + [(b"u1", v) for v in good]
    records.append((None, far_past))
    rng.shuffle(records)
    produce_raw(settings, records)
    stats = run_gate(settings, catalog)
    assert stats.dead_letters == len(bad) and len(values(settings, topics.dlq)) == len(bad)
    decisions = values(settings, topics.decisions)
    assert len(decisions) == len(good) + 1
    passed = [d for d in decisions if d["outcomes"][1]["passed"]]
    assert len(passed) == len(good)  # every unicode edge case decoded, decided and passed intact
    texts = sorted(r["fields"]["text"] for r in values(settings, topics.training[GEN]))
    assert texts == sorted(EDGE_TEXT)
    assert [d["outcomes"][1]["reason"] for d in decisions if not d["outcomes"][1]["passed"]] == [
        "grant_after_event"]


def test_malformed_consent_state_denies_that_user_and_is_reported(settings: Settings, topics: TopicNames,
                                                                   catalog: Catalog) -> None:
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", u, "post", GEN) for u in ("good", "victim")])
    produce_raw(settings, [(b"victim", b"\x00\x00\x00\x00\x01garbage")], topics.consent_state)
    # (A keyless record cannot reach consent.state at all: Kafka refuses it on a compacted topic.)
    later = datetime.now(timezone.utc)
    from tests.helpers import produce_events

    produce_events(settings, [ActivityEvent(f"{u}-1", u, "post", later, "web", {"text": "x"}) for u in ("good", "victim")])
    gate = Gate(settings, catalog)
    gate.run(until_idle=2.0)
    outcomes = {d["event_id"]: d["outcomes"][1] for d in values(settings, topics.decisions)}
    assert outcomes["good-1"]["passed"] is True
    assert outcomes["victim-1"] == {"purpose": GEN, "passed": False, "reason": "no_consent_record"}
    assert gate.metrics.value("consentgate_consent_corrupt_total") == 1
    assert gate.view.corrupt == 1


def test_nothing_identifying_or_unkept_leaves_for_training(settings: Settings, catalog: Catalog,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gate, result = run_demo(settings, catalog, users=1500, events=20_000, say=lambda line: None)
    topics = TopicNames.of(settings, catalog)
    assert gate.stats.records_passed > 1000
    users = {f"user-{i:07d}".encode() for i in range(1500)}
    secret = TEST_SECRET.encode()
    reader = consumer(settings, "exposure-check")
    every_output = [topics.decisions, topics.dlq, topics.contributions, topics.retractions, *topics.training.values()]
    keeps = {(p.name, c): set(use.keep) for p in catalog.purposes.values() for c, use in p.categories.items()}
    try:
        for msg in read_committed(reader, every_output):
            raw = (msg.key() or b"") + (msg.value() or b"")
            assert secret not in raw
            if msg.topic() in topics.training.values():
                assert not any(u in raw for u in users), f"a user id in {msg.topic()}@{msg.offset()}"
    finally:
        reader.close()
    for topic in topics.training.values():
        for record in values(settings, topic):
            assert set(record["fields"]) <= keeps[(record["purpose"], record["category"])]
            assert len(record["pseudonym"]) == 32
    assert TEST_SECRET not in caplog.text
