"""The gate: a batch consume-decide-produce loop, one Kafka transaction per batch.

Per batch: fetch activity, bring the consent view up to the read_committed end of
consent.state (consent first), decide every record, then commit decisions, training
records, contributions, dead letters and the input offsets in one transaction.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import (
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from consentgate.connectors.kafka import consumer, produce, producer
from consentgate.connectors.reader import ReadTimeout
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.errors import (
    MissingValue,
    OversizedRecord,
    RecordError,
    RegistryUnavailable,
)
from consentgate.schemas.records import activity_from_avro, check_occurred_at
from consentgate.streams.consent_view import ConsentView
from consentgate.streams.consent_writer import pseudonym
from consentgate.streams.metrics import GateMetrics
from consentgate.streams.outputs import (
    contribution_record,
    dead_letter,
    decision_record,
    training_record,
)

from consentgate.catalog import Catalog
from consentgate.decision import decide
from consentgate.quality import assess
from consentgate.settings import Settings

log = logging.getLogger("consentgate.gate")


class Stopping(Exception):
    """Raised inside a retry loop when the worker was asked to stop."""


@dataclass
class GateStats:
    """What this worker committed; counts only records in committed transactions."""

    records_in: int = 0
    decisions: int = 0
    dead_letters: int = 0
    passed: Counter[str] = field(default_factory=Counter)  # purpose -> passed records
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> dropped (record, purpose) pairs
    records_passed: int = 0  # decided records that passed for at least one purpose
    first_fetch: float | None = None  # monotonic time of the first non-empty fetch
    last_commit: float | None = None  # monotonic time of the last committed batch
    first_fetch_epoch: float | None = None  # the same two as wall-clock seconds, comparable across processes
    last_commit_epoch: float | None = None


@dataclass
class _Batch:
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    dlq: Counter[str] = field(default_factory=Counter)
    decisions: int = 0
    records_passed: int = 0


class Gate:
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.topics = TopicNames.of(settings, catalog)
        self.worker_id = settings.worker_id or socket.gethostname()
        self.metrics = GateMetrics()
        self.stats = GateStats()
        self._secret = settings.require_secret()
        self._nyms: dict[tuple[str, str], str] = {}  # HMACs of active users, bounded
        self._registry = registry_client(settings)
        codecs = Codecs(self._registry)
        self._activity = codecs["ActivityEvent"]
        self._enc_decision = codecs["Decision"].writer_for(self.topics.decisions)
        self._enc_dlq = codecs["DeadLetter"].writer_for(self.topics.dlq)
        self._enc_contribution = codecs["Contribution"].writer_for(self.topics.contributions)
        self._enc_training = {p: codecs["TrainingRecord"].writer_for(t) for p, t in self.topics.training.items()}
        self.view = ConsentView(settings, self.topics.consent_state, codecs["ConsentState"], self.metrics,
                                self.worker_id)
        self._consumer = consumer(settings, settings.group_id, **{
            "session.timeout.ms": settings.session_timeout_ms,
            "client.id": f"consentgate-gate-{self.worker_id}"})
        self._producer: Producer | None = None
        self._stopping = False
        self.ready = threading.Event()  # set once the view is recovered and the worker has subscribed

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and leave (safe from a signal handler)."""
        self._stopping = True

    def _new_producer(self) -> Producer:
        """A transactional producer; init_transactions fences a previous incarnation of this worker."""
        for attempt in range(10):
            if self._stopping:
                raise Stopping()
            prod = producer(self.settings, **{
                "transactional.id": f"{self.settings.transactional_id_prefix}-{self.worker_id}",
                "transaction.timeout.ms": self.settings.transaction_timeout_ms,
                "queue.buffering.max.messages": 1_000_000,
                "client.id": f"consentgate-gate-{self.worker_id}"})
            try:
                prod.init_transactions(60)
                return prod
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or attempt == 9 or not (err.retriable() or err.code() == KafkaError._TIMED_OUT):
                    raise
                log.warning("init_transactions failed (%s), retrying", err.str())
                time.sleep(min(2 ** attempt, 10))
        raise AssertionError("unreachable")

    def run(self, until_idle: float | None = None) -> GateStats:
        """Decide activity until stopped (or idle for ``until_idle`` seconds)."""
        started = time.monotonic()
        self.view.recover()
        log.info("consent view recovered: %d users in %.1fs", len(self.view), time.monotonic() - started)
        if self.settings.metrics_port is not None:
            self.metrics.serve(self.settings.metrics_port)
        if self._stopping:  # asked to stop while starting: nothing was consumed or written
            self._consumer.close()
            return self.stats
        self._producer = self._new_producer()
        self._consumer.subscribe([self.topics.activity])
        self.ready.set()
        idle_since = time.monotonic()
        try:
            while not self._stopping:
                msgs = self._records(self._consumer.consume(self.settings.batch_size, self.settings.batch_timeout_s))
                if msgs:
                    self._process(msgs)
                    idle_since = time.monotonic()
                else:
                    self._refresh_view()
                    if not self._consumer.assignment():
                        idle_since = time.monotonic()  # waiting for partitions is not being idle
                    elif until_idle is not None and time.monotonic() - idle_since >= until_idle:
                        break
        except Stopping:
            log.info("stopped while recovering from an error; uncommitted input will be decided again")
        finally:
            self.close()
        return self.stats

    def _records(self, msgs: list[Message]) -> list[Message]:
        """Drop the consumer's error events (they are not records); a fatal one stops the worker."""
        errors = [m for m in msgs if m.error() is not None]
        for msg in errors:
            err = msg.error()
            assert err is not None
            if err.fatal():
                raise KafkaException(err)
            log.warning("consumer: %s", err.str())
        return [m for m in msgs if m.error() is None] if errors else msgs

    def _refresh_view(self) -> None:
        """Keep the view current while idle; a broker outage here only delays it."""
        try:
            self.view.catch_up()
        except (ReadTimeout, KafkaException) as exc:
            log.warning("consent view not refreshed: %s", exc)

    def close(self) -> None:
        try:
            self._consumer.close()
        finally:
            if self._producer is not None:
                self._producer.flush(10)
                self._producer = None
            self.view.close()
            self._registry.close()

    # -- one batch ---------------------------------------------------------------------------

    def _process(self, msgs: list[Message]) -> None:
        """Decide and commit one fetched batch; outputs are produced as they are decided, so
        librdkafka ships them while the next records are being decided."""
        started = time.monotonic()
        if self.stats.first_fetch is None:
            self.stats.first_fetch = started
            self.stats.first_fetch_epoch = time.time()
        prod = self._producer
        assert prod is not None
        try:
            self.view.catch_up()  # consent first: everything acknowledged before the fetch
        except (ReadTimeout, KafkaException) as exc:
            # Without the consent acknowledged before this fetch, nothing may be decided.
            log.warning("consent view cannot catch up, retrying the batch: %s", exc)
            self.metrics.aborts.labels("consent_view").inc()
            self._rewind()
            time.sleep(1.0)
            return
        try:
            prod.begin_transaction()
            batch = self._decide_all(msgs, prod)
            prod.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()],
                self._consumer.consumer_group_metadata(), 60)
            self._commit_transaction(prod)
        except RegistryUnavailable as exc:
            log.warning("schema registry unavailable, retrying the batch: %s", exc)
            self.metrics.aborts.labels("registry").inc()
            self._abort_quietly()
            self._rewind()
            time.sleep(1.0)
            return
        except KafkaException as exc:
            self._recover(exc.args[0])
            return
        self._account(batch, len(msgs))
        self.metrics.batch_seconds.observe(time.monotonic() - started)

    def _decide_all(self, msgs: list[Message], prod: Producer) -> _Batch:
        # Decide with exactly the (millisecond) time the Decision records, so a replay agrees.
        now_ms = time.time_ns() // 1_000_000
        now = datetime.fromtimestamp(now_ms / 1000, timezone.utc)
        skew_limit = now + self.settings.clock_skew
        batch = _Batch()
        topics = self.topics
        for msg in msgs:  # error events were removed by _records
            # A fetched record always has its coordinates; the stubs type them Optional.
            topic: str = msg.topic()  # type: ignore[assignment]
            partition: int = msg.partition()  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
            batch.offsets[(topic, partition)] = offset + 1
            try:
                event = self._read(msg, now, skew_limit)
            except RecordError as exc:
                produce(prod, topics.dlq, self._enc_dlq(dead_letter(msg, exc, now_ms, self.worker_id)))
                batch.dlq[type(exc).__name__] += 1
                continue
            consent = self.view.get(event.user_id)
            decision = decide(event, consent, self.catalog, now)
            user_key = event.user_id.encode()
            produce(prod, topics.decisions, self._enc_decision(
                decision_record(decision, now_ms, topic, partition, offset)), user_key)
            batch.decisions += 1
            passed_any = False
            assessment = None
            for outcome in decision.outcomes:
                if outcome.passed:
                    assert decision.consent_version is not None
                    passed_any = True
                    nym = self._pseudonym(outcome.purpose, event.user_id)
                    produce(prod, topics.training[outcome.purpose], self._enc_training[outcome.purpose](
                        training_record(event, outcome, self.catalog, nym, decision.consent_version)), nym.encode())
                    if assessment is None:
                        assessment = assess(event.category, event.payload)
                    produce(prod, topics.contributions, self._enc_contribution(
                        contribution_record(event, outcome, consent, assessment)), user_key)
                    batch.outcomes[(outcome.purpose, event.category, "passed")] += 1
                else:
                    assert outcome.reason is not None
                    batch.outcomes[(outcome.purpose, event.category, outcome.reason.value)] += 1
            batch.records_passed += passed_any
        return batch

    def _pseudonym(self, purpose: str, user_id: str) -> str:
        key = (purpose, user_id)
        nym = self._nyms.get(key)
        if nym is None:
            if len(self._nyms) >= 500_000:
                self._nyms.clear()
            nym = self._nyms[key] = pseudonym(self._secret, purpose, user_id)
        return nym

    def _read(self, msg: Message, now: datetime, skew_limit: datetime) -> Any:
        value = msg.value()
        if not value:
            raise MissingValue("input record has no value")
        if len(value) > self.settings.max_record_bytes:
            raise OversizedRecord(f"record of {len(value)} bytes exceeds max_record_bytes="
                                  f"{self.settings.max_record_bytes}")
        event = activity_from_avro(self._activity.decode(value, msg.topic(), msg.partition(), msg.offset()))
        check_occurred_at(event, now, skew_limit)
        return event

    # -- the transaction ---------------------------------------------------------------------

    def _abort_quietly(self) -> None:
        assert self._producer is not None
        try:
            self._producer.abort_transaction(60)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError._STATE:  # _STATE: no transaction was open
                self._recover(err)

    def _commit_transaction(self, prod: Producer) -> None:
        for attempt in range(5):
            try:
                prod.commit_transaction(60)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable() or attempt == 4:
                    raise
                time.sleep(0.1 * 2 ** attempt)

    def _recover(self, err: KafkaError) -> None:
        """Undo a failed batch: abort (or replace a fenced producer), then rewind the input."""
        log.warning("transaction failed (%s): %s", "fatal" if err.fatal() else "abortable", err.str())
        if err.fatal():
            self.metrics.aborts.labels("fatal").inc()
            self._producer = self._new_producer()
        else:
            self.metrics.aborts.labels("abortable" if err.txn_requires_abort() else "other").inc()
            assert self._producer is not None
            try:
                self._producer.abort_transaction(60)
            except KafkaException as abort_exc:
                log.warning("abort failed, replacing the producer: %s", abort_exc.args[0].str())
                self._producer = self._new_producer()
        self._rewind()

    def _rewind(self) -> None:
        """Seek every assigned partition back to its committed offset.

        Keeps trying through a broker outage: consuming on from un-rewound positions would
        skip the records of the failed batch.
        """
        for attempt in range(1_000_000):
            assignment = self._consumer.assignment()
            if not assignment or self._stopping:
                return  # stopping: nothing is committed past the last good batch anyway
            try:
                committed = self._consumer.committed(assignment, timeout=30)
                for tp in committed:
                    self._consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else -2))
                return
            except KafkaException as exc:
                if exc.args[0].fatal():
                    raise
                log.warning("cannot rewind yet (%s), retrying", exc.args[0].str())
                time.sleep(min(2 ** attempt, 10))

    def _account(self, batch: _Batch, records: int) -> None:
        self.stats.records_in += records
        self.stats.decisions += batch.decisions
        self.stats.records_passed += batch.records_passed
        self.stats.last_commit = time.monotonic()
        self.stats.last_commit_epoch = time.time()
        self.stats.dead_letters += sum(batch.dlq.values())
        for (purpose, _category, result), count in batch.outcomes.items():
            if result == "passed":
                self.stats.passed[purpose] += count
            else:
                self.stats.dropped[result] += count
        self.metrics.records_in.inc(records)
        self.metrics.batches.inc()
        self.metrics.record_outcomes(batch.outcomes)
        for error_class, count in batch.dlq.items():
            self.metrics.dlq.labels(error_class).inc(count)
