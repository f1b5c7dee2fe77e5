"""The metering worker: ``metering.contributions`` into the payout ledger, exactly once.

Each batch is one database transaction holding the contributions, their valuations and
the next offset of every partition the batch read. On (re)assignment the worker seeks to
the offsets the ledger holds, so a crash at any point either loses the whole batch (and
it is read again) or keeps all of it (and it is never read again). The primary key
(event_id, purpose) makes a contribution delivered twice, under a new offset, harmless too.

The offsets row is also a fence: a batch commits only if each partition's stored offset
is still the one this worker last saw, so a worker that lost its partitions in a
rebalance cannot write behind the new owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from sqlalchemy import Connection, Engine, select, update

from consentgate.catalog import Catalog
from consentgate.connectors.kafka import consumer, produce, producer
from consentgate.connectors.retry import Backoff, Pause
from consentgate.connectors.ledger import (
    connect,
    contributions,
    insert_new,
    lock_periods,
    offsets,
    periods,
    valuations,
)
from consentgate.connectors.topics import TopicNames
from consentgate.errors import ConsentGateError
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.errors import InvalidIdentifier, InvalidRecord, MissingValue, RecordError
from consentgate.settings import Settings
from consentgate.streams.metrics import MeteringMetrics
from consentgate.streams.outputs import dead_letter
from consentgate.valuation import DuplicateIndex, identifier_rejection, next_period, period_of, rejection, value

log = logging.getLogger(__name__)


class InvalidContribution(InvalidRecord):
    """A contribution that decodes but cannot be credited (unknown purpose, absurd units...)."""


class LedgerFenced(ConsentGateError):
    """Another worker advanced a partition this worker was about to write."""


@dataclass
class MeteringStats:
    records_in: int = 0
    credited: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    retries: int = 0
    late: int = 0
    redelivered: int = 0  # already in the ledger under another offset: skipped
    first_batch_at: float | None = None  # time.monotonic() when the first batch began
    last_batch_at: float | None = None  # ... and when the last one was stored


@dataclass
class _Pending:
    record: dict[str, Any]
    partition: int
    offset: int


class MeteringWorker:
    def __init__(self, settings: Settings, catalog: Catalog, engine: Engine | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self._owns_engine = engine is None
        self.engine = engine or connect(settings.ledger())
        self.topics = TopicNames.of(settings, catalog)
        self.stats = MeteringStats()
        self.ready = threading.Event()  # set once the worker has caught up (an empty poll)
        self.worker_id = settings.worker_id or "metering"
        self._stop = threading.Event()
        self._index = DuplicateIndex()
        self._expected: dict[int, int | None] = {}  # partition -> next offset the ledger holds
        self._consumer: Consumer | None = None
        self.metrics = MeteringMetrics(catalog)
        # Between retries of a batch the ledger refused (not after a fence: that one is settled by re-reading).
        self._pause = Pause(Backoff(0.5, 10.0))

    def stop(self) -> None:
        self._stop.set()

    def run(self, idle_exit_s: float | None = None) -> MeteringStats:
        """Meter until stopped (or, with ``idle_exit_s``, until nothing arrived for that long)."""
        settings = self.settings
        with registry_client(settings) as registry:
            codecs = Codecs(registry)
            decode = codecs["Contribution"].decode
            encode_dlq = codecs["DeadLetter"].writer_for(self.topics.metering_dlq)
            cons = self._consumer = consumer(settings, settings.metering_group_id,
                                             **{"session.timeout.ms": settings.session_timeout_ms})
            prod = producer(settings)
            cons.subscribe([self.topics.contributions], on_assign=self._on_assign, on_revoke=self._on_revoke)
            if settings.metrics_port is not None:
                self.metrics.serve(settings.metrics_port, settings.metrics_host, data_dir=settings.data_dir,
                                   worker=self.worker_id)
            idle_since = time.monotonic()
            try:
                while not self._stop.is_set():
                    msgs = cons.consume(settings.batch_size, settings.batch_timeout_s)
                    if not msgs:
                        self.metrics.observe_consumer_lag(cons)
                        if not self._expected:  # not assigned yet: idleness counts from assignment
                            idle_since = time.monotonic()
                            continue
                        self.ready.set()
                        if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                            break
                        continue
                    idle_since = time.monotonic()
                    if self.stats.first_batch_at is None:
                        self.stats.first_batch_at = idle_since
                    self._batch(msgs, decode, encode_dlq, prod, cons)
                    self.stats.last_batch_at = time.monotonic()
            finally:
                self.metrics.close()
                cons.close()
                prod.flush(30)
                if self._owns_engine:
                    self.engine.dispose()
        return self.stats

    # -- assignment --------------------------------------------------------------------------

    def _on_assign(self, cons: Consumer, partitions: list[TopicPartition]) -> None:
        self._expected = self._ledger_offsets([tp.partition for tp in partitions])
        for tp in partitions:
            stored = self._expected[tp.partition]
            tp.offset = OFFSET_BEGINNING if stored is None else stored
        self._rebuild_index()
        cons.assign(partitions)

    def _on_revoke(self, cons: Consumer, partitions: list[TopicPartition]) -> None:
        self._expected = {}
        self.ready.clear()

    def _ledger_offsets(self, partitions: list[int]) -> dict[int, int | None]:
        with self.engine.connect() as conn:
            stored = dict(conn.execute(select(offsets.c.partition, offsets.c.next_offset).where(
                offsets.c.topic == self.topics.contributions, offsets.c.partition.in_(partitions))).all())
        return {p: stored.get(p) for p in partitions}

    def _rebuild_index(self) -> None:
        """Fingerprints the ledger holds for the assigned partitions, in the open periods."""
        self._index = DuplicateIndex()
        if not self._expected:
            return
        with self.engine.connect() as conn:
            open_periods = select(periods.c.period).where(periods.c.status == "open")
            rows = conn.execute(
                select(contributions.c.user_id, contributions.c.purpose, contributions.c.fingerprint)
                .where(contributions.c.source_partition.in_(list(self._expected)),
                       contributions.c.period.in_(open_periods), contributions.c.fingerprint.is_not(None))
                .order_by(contributions.c.source_partition, contributions.c.source_offset))
            self._index.load(rows)

    def _rewind(self, cons: Consumer) -> None:
        """After a failed batch: back to what the ledger holds."""
        self._expected = self._ledger_offsets(list(self._expected))
        self._rebuild_index()
        for partition, stored in self._expected.items():
            cons.seek(TopicPartition(self.topics.contributions, partition,
                                     OFFSET_BEGINNING if stored is None else stored))

    # -- one batch ---------------------------------------------------------------------------

    def _batch(self, msgs: list[Message], decode: Callable[..., dict[str, Any]],
               encode_dlq: Callable[[dict[str, Any]], bytes], prod: Producer, cons: Consumer) -> None:
        now_ms = int(time.time() * 1000)
        pending: list[_Pending] = []
        rejected: list[tuple[Message, RecordError]] = []
        ends: dict[int, int] = {}
        for msg in msgs:
            if msg.error() is not None:
                raise KafkaException(msg.error())
            partition, offset = msg.partition(), msg.offset()
            if partition not in self._expected:
                continue  # revoked during this poll
            expected = self._expected[partition]
            if expected is not None and offset < expected:
                continue  # already in the ledger
            ends[partition] = offset + 1
            try:
                raw = msg.value()
                if not raw:
                    raise MissingValue("contribution record has no value")
                record = decode(raw, msg.topic(), partition, offset)
                # Identifiers first: a value the ledger's columns cannot hold would roll the whole
                # batch back and the same batch would be read again forever.
                bad_id = identifier_rejection(record)
                if bad_id is not None:
                    raise InvalidIdentifier(bad_id)
                reason = rejection(self.catalog, record, self.settings.max_units)
                if reason is not None:
                    raise InvalidContribution(reason)
            except RecordError as exc:
                rejected.append((msg, exc))
                continue
            pending.append(_Pending(record, partition, offset))
        if not ends:
            return
        # Dead letters first, acknowledged before the ledger moves past them (at least once).
        for msg, exc in rejected:
            produce(prod, self.topics.metering_dlq, encode_dlq(dead_letter(msg, exc, now_ms, self.worker_id)))
        if rejected and prod.flush(30) != 0:
            raise ConsentGateError("metering dead letters not acknowledged within 30 s")
        started = time.monotonic()
        try:
            with self.engine.begin() as conn:
                credited_by_purpose, late = self._write(conn, pending, ends)
        except Exception as exc:  # noqa: BLE001 - any failure: the batch is read again
            log.warning("metering batch not written, rewinding to the ledger's offsets: %s", exc)
            self.stats.retries += 1
            self.metrics.retries.inc()
            if not isinstance(exc, LedgerFenced):
                self._pause.after_failure()
            self._rewind(cons)
            return
        self._pause.after_success()
        credited = sum(credited_by_purpose.values())
        self._expected.update(ends)
        self.stats.records_in += len(pending) + len(rejected)
        self.stats.credited += credited
        self.stats.redelivered += len(pending) - credited
        m = self.metrics
        m.commit_seconds.observe(time.monotonic() - started)
        m.records_in.inc(len(pending) + len(rejected))
        for purpose, count in credited_by_purpose.items():
            m.credited.labels(purpose).inc(count)
        m.redelivered.inc(len(pending) - credited)
        m.batches.inc()
        for _, error in rejected:
            m.dlq.labels(type(error).__name__).inc()
        m.observe_consumer_lag(cons)
        self.stats.late += late
        self.stats.batches += 1
        self.stats.dead_letters.update(type(exc).__name__ for _, exc in rejected)
        cons.commit(offsets=[TopicPartition(self.topics.contributions, p, o) for p, o in ends.items()],
                    asynchronous=True)  # for lag dashboards only; the ledger's offsets are the truth

    def _write(self, conn: Connection, pending: list[_Pending], ends: dict[int, int]
               ) -> tuple[Counter[str], int]:
        """Credit what is new; returns the credited contributions per purpose and how many were late."""
        self._fence(conn, ends)
        target = self._periods(conn, {period_of(p.record["occurred_at"]) for p in pending})
        contribution_rows, valuation_rows, late = [], [], 0
        keys: set[tuple[str, str]] = set()
        for item in pending:
            rec = item.record
            if (rec["event_id"], rec["purpose"]) in keys:
                continue  # delivered twice within this batch
            keys.add((rec["event_id"], rec["purpose"]))
            occurred = period_of(rec["occurred_at"])
            duplicate = self._index.check_and_add(rec["user_id"], rec["purpose"], rec["fingerprint"])
            valued = value(self.catalog, rec, duplicate)
            late += target[occurred] != occurred
            contribution_rows.append({
                "event_id": rec["event_id"], "purpose": rec["purpose"], "user_id": rec["user_id"],
                "category": rec["category"], "units": rec["units"], "occurred_at": rec["occurred_at"],
                "period": target[occurred], "occurred_period": occurred, "tier": rec["tier"], "plan": rec["plan"],
                "receipt_id": rec["receipt_id"], "consent_version": rec["consent_version"],
                "fingerprint": rec["fingerprint"], "source_partition": item.partition, "source_offset": item.offset,
                "record_id": rec.get("record_id") or None, "key_id": rec.get("key_id") or None,
            })
            valuation_rows.append({
                "event_id": rec["event_id"], "purpose": rec["purpose"], "quality": valued.quality,
                "duplicate": int(valued.duplicate), "rate_micros": valued.rate_micros,
                "weight_milli": valued.weight_milli, "value_micros": valued.value_micros,
            })
        new = insert_new(conn, contributions, contribution_rows)
        insert_new(conn, valuations, [v for v in valuation_rows if (v["event_id"], v["purpose"]) in new])
        credited = Counter(purpose for _, purpose in new)
        for partition, end in ends.items():
            if self._expected[partition] is None:
                conn.execute(offsets.insert().values(topic=self.topics.contributions, partition=partition,
                                                     next_offset=end))
            else:
                conn.execute(update(offsets).where(offsets.c.topic == self.topics.contributions,
                                                   offsets.c.partition == partition).values(next_offset=end))
        return credited, late

    def _fence(self, conn: Connection, ends: dict[int, int]) -> None:
        query = select(offsets.c.partition, offsets.c.next_offset).where(
            offsets.c.topic == self.topics.contributions, offsets.c.partition.in_(list(ends)))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        stored = dict(conn.execute(query).all())
        moved = [p for p in ends if stored.get(p) != self._expected[p]]
        if moved:
            raise LedgerFenced(f"partitions {moved} were advanced by another worker")

    def _periods(self, conn: Connection, occurred: set[str]) -> dict[str, str]:
        """occurred period -> the period it is credited to: itself, or the next open one."""
        status = lock_periods(conn, sorted(occurred))
        target: dict[str, str] = {}
        for period in occurred:
            candidate = period
            while status.get(candidate) == "closed":
                candidate = next_period(candidate)
                if candidate not in status:
                    status.update(lock_periods(conn, [candidate]))
            target[period] = candidate
        return target
