"""The faust-streaming contender: the same rules as an agent over activity.events, with the consent
table loaded from consent.state and kept current by a second agent.

    python -m bench.faust_gate '<json config>'   (started by bench.external)

It uses consentgate's own Avro decoding and its pure ``decide()``, so the difference measured
is the stream engine, not the rules. Decisions and passed records are written as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from typing import Any

import faust
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from faust.transport.producer import ProducerBuffer

from consentgate.catalog import load_catalog
from consentgate.decision import decide
from consentgate.model import Erased
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.records import activity_from_avro, consent_from_avro
from consentgate.settings import Settings

# faust's default of 100 buffered sends stalls the agent ("producer buffer full", faust#173)
ProducerBuffer.max_messages = 10_000

cfg: dict[str, Any] = json.loads(sys.argv[1])
sys.argv[1:] = ["worker", "--loglevel", "warn"]
catalog = load_catalog(cfg["catalog"])
codecs = Codecs(registry_client(Settings(schema_registry_url=cfg["registry"])))
decode_activity = codecs["ActivityEvent"].decode
decode_consent = codecs["ConsentState"].decode
partitions = int(cfg["partitions"])

app = faust.App(cfg["app"], broker=f"kafka://{cfg['bootstrap']}", value_serializer="raw", key_serializer="raw",
                processing_guarantee=cfg.get("guarantee", "exactly_once"), store="memory://", topic_partitions=partitions,
                stream_buffer_maxsize=4096, broker_commit_every=2000, web_enabled=False,
                consumer_auto_offset_reset="earliest", table_standby_replicas=0, producer_linger=0.005,
                datadir=tempfile.mkdtemp(prefix="faust-"))
consent_topic = app.topic(cfg["consent"], key_type=bytes, value_type=bytes, partitions=partitions)
activity_topic = app.topic(cfg["activity"], key_type=bytes, value_type=bytes, partitions=partitions)
decisions_topic = app.topic(cfg["decisions"], key_type=bytes, value_type=bytes, partitions=partitions)
sinks = {name: app.topic(p["sink"], key_type=bytes, value_type=bytes, partitions=partitions)
         for name, p in cfg["sinks"]["purposes"].items()}
ERASED = b""


def _load_consent() -> dict[bytes, bytes]:
    """consent.state read to its end before the agents start.

    The feeding agent then starts where this read ended: the app's group commits those positions.
    Without that it would replay the whole topic through the event loop first, and apply revocations
    made meanwhile only after that replay (minutes behind at 100,000 users).
    """
    reader = Consumer({"bootstrap.servers": cfg["bootstrap"], "group.id": f"load-{uuid.uuid4()}",
                       "isolation.level": "read_committed", "enable.auto.commit": False})
    parts = reader.list_topics(cfg["consent"], timeout=10).topics[cfg["consent"]].partitions
    reader.assign([TopicPartition(cfg["consent"], p, OFFSET_BEGINNING) for p in parts])
    table: dict[bytes, bytes] = {}
    idle = 0
    while idle < 3:
        batch = reader.consume(5000, 1.0)
        idle = 0 if batch else idle + 1
        for m in batch:
            if m.error() is None:
                table[m.key()] = m.value() if m.value() is not None else ERASED
    ends = reader.position([TopicPartition(cfg["consent"], p) for p in parts])
    reader.close()
    group = Consumer({"bootstrap.servers": cfg["bootstrap"], "group.id": cfg["app"], "enable.auto.commit": False})
    group.commit(offsets=[tp for tp in ends if tp.offset >= 0], asynchronous=False)
    group.close()
    return table


# faust has no stream-table join: with a faust Table fed by an agent, the activity agent decided against
# a table still being filled (60% of one run's records came out "no_consent_record"), and making it wait
# starved the feeding agent (faust#53). So the table starts from consent.state read to its end; the agent
# keeps it current from there.
consent = _load_consent()
# The faust Table is still fed (faust's exactly-once assignor crashes without one: KeyError on the topic in
# group_for_topic); decisions read the dict, which the same agent keeps equal to it.
table = app.Table("consent", default=None, partitions=partitions, key_type=bytes, value_type=bytes)


@app.agent(consent_topic)
async def feed(stream: Any) -> None:
    async for event in stream.events():
        consent[event.key] = table[event.key] = event.value if event.value is not None else ERASED


@app.agent(activity_topic)
async def gate(stream: Any) -> None:
    async for event in stream.events():
        msg = event.message
        record = activity_from_avro(decode_activity(event.value, msg.topic, msg.partition, msg.offset))
        raw = consent.get(record.user_id.encode())
        state = None if raw is None else Erased(record.user_id) if raw == ERASED else consent_from_avro(
            decode_consent(raw, cfg["consent"]))
        now = datetime.now(timezone.utc)
        decision = decide(record, state, catalog, now)
        outcomes = [{"purpose": o.purpose, "passed": o.passed, "reason": o.reason and o.reason.value}
                    for o in decision.outcomes]
        decisions_topic.send_soon(key=event.key, value=json.dumps({
            "event_id": record.event_id, "user_id": record.user_id, "category": record.category,
            "decided_at": now.isoformat(), "outcomes": outcomes, "consent_version": decision.consent_version,
            "input": {"partition": msg.partition, "offset": msg.offset}}).encode())
        for o in decision.outcomes:
            if o.passed and o.grant is not None:
                sinks[o.purpose].send_soon(key=event.key, value=json.dumps({
                    "event_id": record.event_id, "purpose": o.purpose, "category": record.category,
                    "occurred_at": record.occurred_at.isoformat(), "payload": record.payload,
                    "receipt_id": o.grant.receipt_id, "consent_version": decision.consent_version}).encode())


if __name__ == "__main__":
    app.main()
