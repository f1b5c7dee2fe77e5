"""``consentgate sink iceberg``: a training topic into an Iceberg table, exactly once, honouring erasure.

Per batch, one catalog commit (pyiceberg transaction) holds the new rows, the deletes asked for by the
batch's retractions, and the Kafka offsets of both topics in the snapshot summary. The sink resumes
from the offsets in the table (``assign`` + seek), never from a consumer group, so a crash at any
instant neither loses nor duplicates a record: files written by an uncommitted batch are unreferenced
(``sink expire`` removes them) and the batch is read again. Two sinks on one table are fenced by the
catalog's compare-and-swap: the loser re-reads the offsets from the table and continues from there.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from confluent_kafka import KafkaException, Message, TopicPartition
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from consentgate.catalog import Catalog
from consentgate.connectors import iceberg_state as state
from consentgate.streams.metrics import SinkMetrics
from consentgate.connectors.iceberg_rows import (
    InvalidTrainingRecord,
    Retraction,
    delete_filter,
    is_erased,
    merge_erased,
    retraction_of,
    to_arrow,
    training_row,
)
from consentgate.connectors.iceberg_table import (
    OFFSETS_PROPERTY,
    Offsets,
    committed_offsets,
    encode_offsets,
    load_or_create,
    open_catalog,
    table_name,
)
from consentgate.connectors.kafka import consumer
from consentgate.connectors.reader import partitions_of
from consentgate.connectors.topics import TopicNames
from consentgate.errors import SinkError
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.errors import RecordError
from consentgate.settings import Settings

log = logging.getLogger("consentgate.sink")
Clock = Callable[[], datetime]


@dataclass
class SinkStats:
    """What this run committed."""

    records_in: int = 0
    rows_written: int = 0
    erased_on_arrival: int = 0  # records of an already-erased person, never written
    retractions_applied: int = 0
    rejects: int = 0
    commits: int = 0
    conflicts: int = 0  # commits lost to another writer of the table (then resumed from the table)


@dataclass
class _Batch:
    rows: list[dict[str, object]] = field(default_factory=list)
    retractions: list[Retraction] = field(default_factory=list)
    rejects: list[state.Reject] = field(default_factory=list)
    records: int = 0
    messages: int = 0


def training_topic(settings: Settings, catalog: Catalog, purpose: str, generation: str | None = None) -> str:
    """``training.<purpose>``, or the topic of one of its regated generations."""
    if purpose not in catalog.purposes:
        raise SinkError(f"unknown purpose {purpose!r}; the catalog has {sorted(catalog.purposes)}")
    base = TopicNames.of(settings, catalog).training[purpose]
    return f"{base}.{generation}" if generation else base


class IcebergSink:
    def __init__(self, settings: Settings, catalog: Catalog, purpose: str, generation: str | None = None,
                 clock: Clock = lambda: datetime.now(timezone.utc)) -> None:
        self.settings = settings
        self.purpose = purpose
        self.topic = training_topic(settings, catalog, purpose, generation)
        self.retractions_topic = TopicNames.of(settings, catalog).retractions
        self.table_name = table_name(self.topic)
        self.stats = SinkStats()
        self.metrics = SinkMetrics(catalog)
        self._clock = clock
        self._catalog = open_catalog(settings)
        self._engine = self._catalog.engine  # type: ignore[attr-defined]
        state.ensure(self._engine)
        self.table: Table = load_or_create(self._catalog, settings, self.topic)
        self._registry = registry_client(settings)
        codecs = Codecs(self._registry)
        self._training = codecs["TrainingRecord"]
        self._retraction = codecs["Retraction"]
        self._consumer = consumer(settings, f"consentgate-sink-{self.table_name}-{uuid.uuid4().hex[:8]}",
                                  **{"client.id": f"consentgate-sink-{self.table_name}"})
        self._erased: dict[str, datetime] = {}
        self._offsets: Offsets = {}
        self._stopping = False

    def stop(self) -> None:
        """Commit the batch in hand and return (safe from a signal handler)."""
        self._stopping = True

    def close(self) -> None:
        self.metrics.close()
        self._consumer.close()
        self._registry.close()
        self._engine.dispose()

    def run(self, until_idle: float | None = None) -> SinkStats:
        try:
            self._resume()
            if self.settings.metrics_port is not None:
                self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host,
                                   data_dir=self.settings.data_dir, worker=self.table_name)
            batch, started, idle_since = _Batch(), time.monotonic(), time.monotonic()
            while not self._stopping:
                msgs = self._consumer.consume(1000, 0.2)
                for msg in msgs:
                    if msg.error() is not None:
                        if msg.error().fatal():  # type: ignore[union-attr]
                            raise KafkaException(msg.error())
                        log.warning("consumer: %s", msg.error())
                        continue
                    self._take(msg, batch)
                if msgs:
                    idle_since = time.monotonic()
                full = batch.records >= self.settings.sink_max_records
                due = time.monotonic() - started >= self.settings.sink_commit_interval_s
                idle = not msgs and until_idle is not None and time.monotonic() - idle_since >= until_idle
                if batch.messages and (full or due or not msgs):
                    self._commit(batch)
                    batch, started = _Batch(), time.monotonic()
                elif not batch.messages:
                    started = time.monotonic()
                if idle:
                    break
            if batch.messages:
                self._commit(batch)
        finally:
            self.close()
        return self.stats

    # -- resuming ----------------------------------------------------------------------------

    def _resume(self) -> None:
        """Seek both topics to the offsets the table was committed with (the beginning if none)."""
        self.table = self.table.refresh()
        recorded = committed_offsets(self.table)
        offsets: Offsets = {}
        assignment = []
        for topic in (self.topic, self.retractions_topic):
            offsets[topic] = {}
            for tp in partitions_of(self._consumer, topic):
                at = recorded.get(topic, {}).get(tp.partition, 0)
                offsets[topic][tp.partition] = at
                assignment.append(TopicPartition(topic, tp.partition, at))
        self._offsets = offsets
        self._erased = state.erased_pseudonyms(self._engine, self.table_name)
        unfinished = state.unapplied(self._engine, self.table_name)
        if unfinished:  # requested, then a crash before the delete was confirmed: apply it again
            self._delete(unfinished, {OFFSETS_PROPERTY: encode_offsets(recorded)} if recorded else {})
        self._consumer.assign(assignment)
        log.info("sink %s resumes at %s", self.table_name, encode_offsets(offsets))

    # -- one batch ---------------------------------------------------------------------------

    def _take(self, msg: Message, batch: _Batch) -> None:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None
        batch.messages += 1
        value = msg.value()
        try:
            if topic == self.topic:
                batch.records += 1
                if value is None:
                    raise InvalidTrainingRecord("a training record with no value")
                batch.rows.append(training_row(self._training.decode(value, topic, partition, offset),
                                               self.purpose, partition, offset))
            elif value is not None:  # a retraction; tombstones are not requests
                retraction = retraction_of(self._retraction.decode(value, topic, partition, offset))
                if retraction.purpose == self.purpose:
                    batch.retractions.append(retraction)
        except (RecordError, InvalidTrainingRecord) as exc:
            log.error("cannot store %s[%d]@%d: %s", topic, partition, offset, exc)
            batch.rejects.append(state.Reject(topic, partition, offset, type(exc).__name__, str(exc), value))
        self._offsets.setdefault(topic, {})[partition] = offset + 1

    def _commit(self, batch: _Batch) -> None:
        now = self._clock()
        erasures = merge_erased(self._erased, batch.retractions)
        rows = [r for r in batch.rows if not is_erased(r, self._erased)]
        # Recorded first, idempotently: a crash before the table commit replays the same rows.
        state.record_requested(self._engine, self.table_name, batch.retractions)
        state.record_rejects(self._engine, self.table_name, batch.rejects, now)
        before = self.table.current_snapshot()
        known = {s.snapshot_id for s in self.table.snapshots()}
        props = {OFFSETS_PROPERTY: encode_offsets(self._offsets)}
        try:
            with _quiet_deletes(), self.table.transaction() as tx:
                if erasures:
                    tx.delete(delete_filter(erasures), snapshot_properties=props)
                tx.append(to_arrow(rows), snapshot_properties=props)
        except CommitFailedException as exc:
            self.stats.conflicts += 1
            log.warning("another writer committed to %s first (%s); resuming from the table", self.table_name, exc)
            self._resume()
            return
        self.table = self.table.refresh()
        if batch.retractions:
            state.record_deleted(self._engine, self.table_name, batch.retractions, now,
                                 before.timestamp_ms if before is not None else None)
        self.stats.records_in += batch.records
        self.stats.rows_written += len(rows)
        self.stats.erased_on_arrival += len(batch.rows) - len(rows)
        self.stats.retractions_applied += len(batch.retractions)
        self.stats.rejects += len(batch.rejects)
        self.stats.commits += 1
        # Copy-on-write: a delete removes whole files and re-adds their surviving rows, so the rows deleted
        # are the records removed less those re-added (every added record that is not one of ours).
        summaries = [s.summary for s in self.table.snapshots() if s.snapshot_id not in known and s.summary]
        removed = sum(int(x.get("deleted-records") or 0) for x in summaries)
        readded = sum(int(x.get("added-records") or 0) for x in summaries) - len(rows)
        self.metrics.rows_written.labels(self.purpose).inc(len(rows))
        self.metrics.rows_deleted.labels(self.purpose).inc(removed - readded)
        self.metrics.snapshot_committed(self.purpose)

    def _delete(self, retractions: list[Retraction], props: dict[str, str]) -> None:
        before = self.table.current_snapshot()
        erased: dict[str, datetime] = {}
        merge_erased(erased, retractions)
        with _quiet_deletes():
            self.table.delete(delete_filter(erased), snapshot_properties=props)
        self.table = self.table.refresh()
        state.record_deleted(self._engine, self.table_name, retractions, self._clock(),
                             before.timestamp_ms if before is not None else None)


@contextlib.contextmanager
def _quiet_deletes() -> Iterator[None]:
    """pyiceberg warns when a delete matches nothing: an erased person may have no rows in this table."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Delete operation did not match any records")
        yield
