"""The regate loop: read a range of the activity log, decide under today's consent, write a generation.

Reuses the gate's pure pieces (``decide``, ``training_record``, the keyed hashes) and its consent view;
never the gate worker itself. Exactly once: the new generation's records and the regate's progress
(offsets committed to its own consumer group with ``send_offsets_to_transaction``) are in one Kafka
transaction per batch. A re-run with the same ``--into`` resumes after the last committed batch; it
re-decides (without writing) the part already written, so its diff still covers the whole range.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from consentgate.catalog import Catalog
from consentgate.connectors.kafka import admin, consumer, produce, producer
from consentgate.connectors.reader import partitions_of, read_committed, stable_ends
from consentgate.connectors.retry import Backoff, RetryPolicy, abort, commit, start_producer
from consentgate.connectors.topics import TopicNames
from consentgate.decision import decide
from consentgate.errors import RegateError
from consentgate.model import ActivityEvent
from consentgate.pseudonyms import key_id, pseudonym, record_id
from consentgate.regate.diff import GenerationDiff, compare
from consentgate.regate.plan import OffsetRange, resolve
from consentgate.schemas.codec import Codecs, register, registry_client
from consentgate.schemas.errors import MissingValue, OversizedRecord, RecordError
from consentgate.schemas.records import activity_from_avro, check_occurred_at
from consentgate.settings import Settings
from consentgate.streams.consent_view import ConsentView
from consentgate.streams.metrics import GateMetrics
from consentgate.streams.outputs import Keyed, training_record

log = logging.getLogger("consentgate.regate")
Clock = Callable[[], datetime]
_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
STALL_TIMEOUT_S = 60.0
_COPIED_CONFIGS = ("cleanup.policy", "retention.ms", "retention.bytes", "max.message.bytes", "min.insync.replicas")


@dataclass
class RegateReport:
    purpose: str
    topic: str  # the new generation
    range: OffsetRange
    resumed: bool  # a previous run had committed part of this generation
    decided: int = 0  # input records in the range decided for the purpose
    written: int = 0  # records this run wrote to the new generation
    dead_letters: Counter[str] = field(default_factory=Counter)  # input the gate could not decode either
    diff: GenerationDiff | None = None

    def as_json(self) -> dict[str, Any]:
        diff = self.diff
        return {"purpose": self.purpose, "topic": self.topic, "resumed": self.resumed,
                "range": {"start": self.range.start, "end": self.range.end}, "decided": self.decided,
                "written": self.written, "dead_letters": dict(self.dead_letters),
                "diff": None if diff is None else {"old_in_range": diff.old_in_range, "new": diff.new,
                                                   "kept": diff.kept, "dropped": diff.dropped,
                                                   "added": diff.added}}


class Regate:
    def __init__(self, settings: Settings, catalog: Catalog, purpose: str, into: str,
                 start: datetime | None = None, end: datetime | None = None,
                 clock: Clock = lambda: datetime.now(timezone.utc)) -> None:
        if purpose not in catalog.purposes:
            raise RegateError(f"unknown purpose {purpose!r}; the catalog has {sorted(catalog.purposes)}")
        if not _NAME.fullmatch(into):
            raise RegateError(f"--into {into!r}: use 1-100 letters, digits, '-' or '_'")
        self.settings, self.catalog, self.purpose = settings, catalog, purpose
        self.topics = TopicNames.of(settings, catalog)
        self.old_topic = self.topics.training[purpose]
        self.topic = f"{self.old_topic}.{into}"
        self.group = f"consentgate-regate.{self.topic}"
        self._start, self._end, self._clock = start, end, clock
        self._secret = settings.require_secret()
        self._key_id = key_id(self._secret)

    def run(self) -> RegateReport:
        admin_client = admin(self.settings)
        created = self._ensure_topic(admin_client)
        registry = registry_client(self.settings)
        codecs = Codecs(registry)
        if created:
            register(registry, self.topic, "TrainingRecord")
        reader = consumer(self.settings, self.group, **{"client.id": f"consentgate-regate-{self.purpose}"})
        view = ConsentView(self.settings, self.topics.consent_state, codecs["ConsentState"], GateMetrics(),
                           f"regate-{self.topic}")
        try:
            parts = [tp.partition for tp in partitions_of(reader, self.topics.activity)]
            ends = stable_ends(admin_client, [TopicPartition(self.topics.activity, p) for p in parts])
            span = resolve(reader, self.topics.activity, {p: ends[(self.topics.activity, p)] for p in parts},
                           self._start, self._end)
            done = {tp.partition: tp.offset for tp in reader.committed(
                [TopicPartition(self.topics.activity, p) for p in parts], timeout=30) if tp.offset >= 0}
            if not done and not created and self._holds_records():
                raise RegateError(f"{self.topic} already holds records that no regate run committed; "
                                  "choose another --into")
            report = RegateReport(self.purpose, self.topic, span, resumed=bool(done))
            view.recover()
            reasons = self._decide_range(reader, view, codecs, span, done, report)
            report.diff = compare(reasons, self._record_ids(self.old_topic), self._record_ids(self.topic))
            return report
        finally:
            reader.close()
            view.close()
            registry.close()

    # -- the new generation's topic ---------------------------------------------------------

    def _ensure_topic(self, admin_client: AdminClient) -> bool:
        """Create the generation's topic like the live training topic (partitions, retention); True if new."""
        topics = admin_client.list_topics(timeout=10).topics
        if self.topic in topics:
            return False
        if self.old_topic not in topics:
            raise RegateError(f"{self.old_topic} does not exist: run `consentgate topics create`")
        resource = ConfigResource(ConfigResource.Type.TOPIC, self.old_topic)
        described = admin_client.describe_configs([resource])[resource].result()
        config = {k: described[k].value for k in _COPIED_CONFIGS if k in described and described[k].value}
        new = NewTopic(self.topic, num_partitions=len(topics[self.old_topic].partitions),
                       replication_factor=self.settings.replication_factor, config=config)
        try:
            admin_client.create_topics([new], operation_timeout=30)[self.topic].result()
        except KafkaException as exc:
            raise RegateError(f"cannot create {self.topic}: {exc.args[0].str()}") from exc
        return True

    def _holds_records(self) -> bool:
        return any(True for _ in self._committed(self.topic))

    def _committed(self, topic: str) -> Any:
        reader = consumer(self.settings, f"{self.group}-reader")
        try:
            yield from read_committed(reader, [topic])
        finally:
            reader.close()

    def _record_ids(self, topic: str) -> list[str]:
        """Every record id a training topic holds (the old generation, or the new one as committed)."""
        with registry_client(self.settings) as registry:
            codec = Codecs(registry)["TrainingRecord"]
            return [codec.decode(m.value(), topic)["record_id"] for m in self._committed(topic)
                    if m.value() is not None]

    # -- deciding ---------------------------------------------------------------------------

    def _decide_range(self, reader: Any, view: ConsentView, codecs: Codecs, span: OffsetRange,
                      done: dict[int, int], report: RegateReport) -> dict[str, str | None]:
        activity = self.topics.activity
        remaining = {p for p in span.start if span.end[p] > span.start[p]}
        reasons: dict[str, str | None] = {}
        if not remaining:
            return reasons
        reader.assign([TopicPartition(activity, p, span.start[p]) for p in sorted(remaining)])
        encode = codecs["TrainingRecord"].writer_for(self.topic)
        decode = codecs["ActivityEvent"]
        policy = RetryPolicy(Backoff(0.2, 10.0), attempts=8)
        # init_transactions fences an earlier run of this regate that is still alive.
        out = start_producer(lambda: producer(self.settings, **{
            "transactional.id": self.group, "transaction.timeout.ms": self.settings.transaction_timeout_ms}), policy)
        try:
            stalled_since = time.monotonic()
            while remaining:
                msgs = [m for m in reader.consume(self.settings.regate_batch_size, 0.5) if m.error() is None]
                view.catch_up()  # consent first: every change acknowledged before this batch applies
                now = self._clock()
                progress: dict[int, int] = {}
                out.begin_transaction()
                for msg in msgs:
                    partition, offset = msg.partition(), msg.offset()
                    assert partition is not None and offset is not None
                    if partition not in remaining or offset >= span.end[partition]:
                        continue
                    progress[partition] = offset + 1
                    self._decide_one(msg, decode, view, now, offset >= done.get(partition, 0), out, encode,
                                     reasons, report)
                ahead = {p: o for p, o in progress.items() if o > done.get(p, 0)}
                if ahead:
                    out.send_offsets_to_transaction([TopicPartition(activity, p, o) for p, o in ahead.items()],
                                                    reader.consumer_group_metadata(), 60)
                    commit(out, policy)
                    done.update(ahead)
                else:
                    out.abort_transaction(60)  # nothing new to write: only re-decided what was written
                # By position, not by the last record: transaction markers take offsets too.
                for tp in reader.position([TopicPartition(activity, p) for p in sorted(remaining)]):
                    if tp.offset >= span.end[tp.partition]:
                        remaining.discard(tp.partition)
                        reader.pause([TopicPartition(activity, tp.partition)])
                if msgs:
                    stalled_since = time.monotonic()
                elif time.monotonic() - stalled_since > STALL_TIMEOUT_S:
                    raise RegateError(f"no record of {activity} arrived for {STALL_TIMEOUT_S:.0f}s with "
                                      f"partitions {sorted(remaining)} short of the range's end")
        except KafkaException as exc:
            abort(out)  # whatever this batch wrote is discarded; committed batches stay
            raise RegateError(f"regate transaction failed ({exc.args[0].str()}); run the same command "
                              "again to resume after the last committed batch") from exc
        finally:
            out.flush(10)
        return reasons

    def _decide_one(self, msg: Message, decode: Any, view: ConsentView, now: datetime, write: bool,
                    out: Producer, encode: Callable[[dict[str, Any]], bytes], reasons: dict[str, str | None],
                    report: RegateReport) -> None:
        try:
            event = self._read(msg, decode, now)
        except RecordError as exc:
            report.dead_letters[type(exc).__name__] += 1
            return
        decision = decide(event, view.get(event.user_id), self.catalog, now)
        outcome = next((o for o in decision.outcomes if o.purpose == self.purpose), None)
        if outcome is None:
            return  # the purpose does not use this category
        report.decided += 1
        rid = record_id(self._secret, self.purpose, event.event_id)
        reasons[rid] = None if outcome.passed else outcome.reason.value  # type: ignore[union-attr]
        if outcome.passed and write:
            assert decision.consent_version is not None  # a pass rests on a consent state
            keyed = Keyed(pseudonym(self._secret, self.purpose, event.user_id), rid, self._key_id)
            produce(out, self.topic, encode(training_record(event, outcome, self.catalog, keyed,
                                                            decision.consent_version)), keyed.pseudonym.encode())
            report.written += 1

    def _read(self, msg: Message, decode: Any, now: datetime) -> ActivityEvent:
        """As the gate reads an input record: what it dead-lettered is refused here the same way."""
        value = msg.value()
        if not value:
            raise MissingValue("input record has no value")
        if len(value) > self.settings.max_record_bytes:
            raise OversizedRecord(f"record of {len(value)} bytes exceeds max_record_bytes")
        event = activity_from_avro(decode.decode(value, msg.topic(), msg.partition(), msg.offset()))
        check_occurred_at(event, now, now + self.settings.clock_skew)
        return event
