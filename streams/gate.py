"""The gate: a batch consume-decide-produce loop, one Kafka transaction per batch.

Per batch: fetch activity, bring the consent view up to the read_committed end of
consent.state (consent first), decide every record, then commit decisions, training
records, contributions, dead letters and the input offsets in one transaction.
"""

from __future__ import annotations

import gc
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
from consentgate.connectors.retry import (
    Backoff,
    Failure,
    Pause,
    RetryPolicy,
    Stopped,
    abort,
    classify,
    commit,
    start_producer,
)
from consentgate.connectors.reader import ReadTimeout
from consentgate.connectors.topics import TopicNames
from consentgate.kernel import (
    BatchResult,
    Fetched,
    KernelConfig,
    NativeKernel,
    OutputPlan,
    ReferenceKernel,
    UnsupportedSchema,
    kernel_for,
    plan_output,
)
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.errors import (
    MissingValue,
    OversizedRecord,
    RecordError,
    RegistryUnavailable,
)
from consentgate.schemas.records import activity_from_avro, check_occurred_at
from consentgate.streams.consent_view import ConsentView
from consentgate.streams.metrics import GateMetrics
from consentgate.streams.outputs import (
    Keyed,
    contribution_record,
    dead_letter,
    decision_record,
    training_record,
)

from consentgate.catalog import Catalog
from consentgate.decision import decide
from consentgate.errors import ConfigurationError
from consentgate.pseudonyms import key_id, pseudonym, record_id
from consentgate.quality import assess
from consentgate.settings import Settings

log = logging.getLogger("consentgate.gate")


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
    """What one transaction holds so far: it may span several fetches (up to the commit interval)."""

    started: float  # monotonic time of the fetch that opened it
    records: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    dlq: Counter[str] = field(default_factory=Counter)
    decisions: int = 0
    records_passed: int = 0
    oldest_ms: int | None = None  # the smallest Kafka timestamp of its input records

    def add(self, result: BatchResult) -> None:
        """Count what a kernel routed into this transaction."""
        self.outcomes.update(result.outcomes)
        self.dlq.update(result.dead_letters)
        self.decisions += result.decisions
        self.records_passed += result.records_passed


def fetched(msg: Message) -> Fetched:
    """What the reference kernel reads of a fetched record."""
    kind, timestamp = msg.timestamp()
    return Fetched(msg.key(), msg.value(), msg.topic(), msg.partition(), msg.offset(),  # type: ignore[arg-type]
                   timestamp if kind else None)


class Gate:
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.topics = TopicNames.of(settings, catalog)
        self.worker_id = settings.worker_id or socket.gethostname()
        self.metrics = GateMetrics(catalog)  # every outcome series starts at 0, so its first increase shows
        self.stats = GateStats()
        self._secret = settings.require_secret()
        self._key_id = key_id(self._secret)
        self._nyms: dict[tuple[str, str], str] = {}  # HMACs of active users, bounded
        self._registry = registry_client(settings)
        codecs = Codecs(self._registry)
        self._activity = codecs["ActivityEvent"]
        self._enc_decision = codecs["Decision"].writer_for(self.topics.decisions)
        self._enc_dlq = codecs["DeadLetter"].writer_for(self.topics.dlq)
        self._enc_contribution = codecs["Contribution"].writer_for(self.topics.contributions)
        self._enc_training = {p: codecs["TrainingRecord"].writer_for(t) for p, t in self.topics.training.items()}
        try:
            self.kernel = self._kernel(codecs)
        except BaseException:
            self._registry.close()
            raise
        self._native = isinstance(self.kernel, NativeKernel)  # reads fetched messages as they are
        self.view = ConsentView(settings, self.topics.consent_state, codecs["ConsentState"], self.metrics,
                                self.worker_id)
        self._consumer = consumer(settings, settings.group_id, **{
            "session.timeout.ms": settings.session_timeout_ms,
            "client.id": f"consentgate-gate-{self.worker_id}"})
        self._producer: Producer | None = None
        self._open: _Batch | None = None  # the open transaction
        self._stopping = False
        # init_transactions: up to 10 tries, 1 s to 10 s apart; commit: 5 tries; rewinding the input
        # after a failed batch: until it works or the worker stops (consuming on would skip records).
        self._init_policy = RetryPolicy(Backoff(1.0, 10.0), attempts=10)
        self._commit_policy = RetryPolicy(Backoff(0.1, 1.6), attempts=5)
        self._rewind_policy = RetryPolicy(Backoff(1.0, 10.0), retry_on=frozenset({Failure.RETRIABLE,
                                                                                   Failure.PERMANENT}))
        self._pause = Pause(Backoff(0.25, 5.0))  # between retries of a batch the cluster could not take
        self.ready = threading.Event()  # set once the view is recovered and the worker has subscribed

    def _kernel(self, codecs: Codecs) -> NativeKernel | ReferenceKernel | None:
        """The batch kernel the settings ask for, over the outputs' registered schemas; None (decide record
        by record) when a registered output schema has a field the kernel cannot write."""
        choice = self.settings.gate_kernel
        topics = self.topics
        schemas: dict[str, dict[str, Any]] = {}

        def plan(topic: str, contract: str) -> OutputPlan:
            schema, header = codecs[contract].registered(topic)
            schemas.setdefault(contract, schema)
            if schemas[contract] != schema:  # one schema per contract in the reference's writers
                raise UnsupportedSchema(f"{contract} is registered with different schemas on different topics")
            return plan_output(topic, contract, schema, header)

        try:
            config = KernelConfig(
                catalog=self.catalog, secret=self._secret,
                decisions=plan(topics.decisions, "Decision"), dead_letters=plan(topics.dlq, "DeadLetter"),
                contributions=plan(topics.contributions, "Contribution"),
                training={p: plan(t, "TrainingRecord") for p, t in topics.training.items()},
                known_schema_ids=frozenset(i for i in (self._activity.as_is_id(topics.activity),) if i is not None),
                worker=self.worker_id,
                clock_skew_ms=int(self.settings.clock_skew_s * 1000), max_record_bytes=self.settings.max_record_bytes)
        except UnsupportedSchema as exc:
            if choice != "auto":
                raise ConfigurationError(f"gate_kernel={choice}: {exc}") from exc
            log.warning("deciding record by record: %s", exc)
            return None
        return kernel_for(config, schemas, compiled={"auto": None, "compiled": True, "reference": False}[choice])

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and leave (safe from a signal handler)."""
        self._stopping = True

    def _new_producer(self) -> Producer:
        """A transactional producer; init_transactions fences a previous incarnation of this worker."""
        return start_producer(lambda: producer(self.settings, **{
            "transactional.id": f"{self.settings.transactional_id_prefix}-{self.worker_id}",
            "transaction.timeout.ms": self.settings.transaction_timeout_ms,
            "queue.buffering.max.messages": 1_000_000,
            "client.id": f"consentgate-gate-{self.worker_id}"}), self._init_policy, lambda: self._stopping)

    def run(self, until_idle: float | None = None) -> GateStats:
        """Decide activity until stopped (or idle for ``until_idle`` seconds)."""
        started = time.monotonic()
        self.view.recover()
        # What recovery built lives as long as the worker: keep it out of the cyclic collector's full passes,
        # which otherwise walk the whole view and pause the loop for hundreds of milliseconds.
        gc.freeze()
        log.info("consent view recovered: %d users in %.1fs", len(self.view), time.monotonic() - started)
        if self.settings.metrics_port is not None:
            self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host,
                               data_dir=self.settings.data_dir, worker=self.worker_id)
        if self._stopping:  # asked to stop while starting: nothing was consumed or written
            self._consumer.close()
            return self.stats
        self._producer = self._new_producer()
        self._consumer.subscribe([self.topics.activity], on_revoke=self._on_revoke, on_lost=self._on_lost)
        self.ready.set()
        idle_since = time.monotonic()
        try:
            while not self._stopping:
                msgs = self._fetch(self._wait_s())
                if msgs:
                    self._take(msgs)
                    idle_since = time.monotonic()
                elif self._open is None:
                    self._refresh_view()
                    self.metrics.observe_consumer_lag(self._consumer)
                    if not self._consumer.assignment():
                        idle_since = time.monotonic()  # waiting for partitions is not being idle
                    elif until_idle is not None and time.monotonic() - idle_since >= until_idle:
                        break
                if self._open is not None and self._commit_due():
                    self._commit_open()
            if self._open is not None:  # stopping: commit what was decided
                self._commit_open()
        except Stopped:
            log.info("stopped while recovering from an error; uncommitted input will be decided again")
        finally:
            self.close()
        return self.stats

    def _fetch(self, wait_s: float) -> list[Message]:
        """What has arrived, without waiting for a full batch: take the queued records at once, and when
        none are queued wait at most ``wait_s`` for the first one (then take whatever came with it)."""
        msgs = self._consumer.consume(self.settings.batch_size, 0)
        if not msgs:
            first = self._consumer.poll(wait_s)
            if first is None:
                return []
            msgs = [first, *self._consumer.consume(self.settings.batch_size - 1, 0)]
        return self._records(msgs)

    def _wait_s(self) -> float:
        """How long a fetch may wait: until the open transaction is due, else the idle poll interval."""
        if self._open is None:
            return self.settings.batch_timeout_s
        return max(0.0, self._open.started + self.settings.commit_interval_ms / 1000 - time.monotonic())

    def _commit_due(self) -> bool:
        batch = self._open
        assert batch is not None
        return (batch.records >= self.settings.batch_size
                or time.monotonic() - batch.started >= self.settings.commit_interval_ms / 1000)

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
            self.metrics.close()

    # -- one batch ---------------------------------------------------------------------------

    def _take(self, msgs: list[Message]) -> None:
        """Decide fetched records into the open transaction (opening one if needed); outputs are produced
        as they are decided, so librdkafka ships them while the next records are being decided."""
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
            self._abandon(None)
            return
        try:
            if self._open is None:
                prod.begin_transaction()
                self._open = _Batch(started=started)
            self._decide_all(msgs, prod, self._open)
        except RegistryUnavailable as exc:
            log.warning("schema registry unavailable, retrying the batch: %s", exc)
            self.metrics.aborts.labels("registry").inc()
            self._abandon(None)
        except KafkaException as exc:
            self._abandon(exc.args[0])

    def _commit_open(self) -> bool:
        """Commit the open transaction with its input offsets; False when it had to be abandoned."""
        batch, prod = self._open, self._producer
        assert batch is not None and prod is not None
        try:
            prod.send_offsets_to_transaction(
                [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()],
                self._consumer.consumer_group_metadata(), 60)
            commit(prod, self._commit_policy)
        except KafkaException as exc:
            self._abandon(exc.args[0])
            return False
        self._open = None
        self._pause.after_success()
        self._account(batch)
        self.metrics.batch_seconds.observe(time.monotonic() - batch.started)
        if batch.oldest_ms is not None:
            self.metrics.record_age.observe(max(time.time() - batch.oldest_ms / 1000, 0.0))
        return True

    def _abandon(self, err: KafkaError | None, rewind: bool = True) -> None:
        """Give up the open transaction (if any) and its input: undo, then back off before trying again."""
        self._open = None
        self._undo(err, rewind)
        if rewind:
            self._pause.after_failure()

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions are leaving this worker: commit what was decided from them while they are ours."""
        if self._open is not None:
            self._commit_open()

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions were taken away (session lost): what was decided from them must not commit."""
        if self._open is not None:
            self._abandon(None, rewind=False)

    def _decide_all(self, msgs: list[Message], prod: Producer, batch: _Batch) -> None:
        # Decide with exactly the (millisecond) time the Decision records, so a replay agrees.
        now_ms = time.time_ns() // 1_000_000
        batch.records += len(msgs)
        offsets = batch.offsets
        oldest = batch.oldest_ms
        for msg in msgs:  # error events were removed by _records
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1  # type: ignore[index,operator]
            kind, stamp = msg.timestamp()
            if kind and stamp >= 0 and (oldest is None or stamp < oldest):
                oldest = stamp
        batch.oldest_ms = oldest
        kernel = self.kernel
        if kernel is None:
            self._decide_records(msgs, prod, batch, now_ms)
            return
        result = kernel.route(msgs if self._native else [fetched(m) for m in msgs], self.view.kernel_lookup(),
                              now_ms)
        send = prod.produce
        for topic, records in result.outputs.items():
            for key, value in records:
                try:
                    send(topic, value, key)
                except BufferError:  # librdkafka's queue is full: wait for room (never drop a record)
                    produce(prod, topic, value, key)
        batch.add(result)
        if result.deferred:  # written with a schema id the kernel has not seen read as-is: the codec reads them
            deferred = [msgs[i] for i in result.deferred]
            self._decide_records(deferred, prod, batch, now_ms)
            for msg in deferred:
                schema_id = int.from_bytes(msg.value()[1:5], "big")  # type: ignore[index]
                if self._activity.reads_natively(schema_id):
                    kernel.learn_schema_id(schema_id)

    def _decide_records(self, msgs: list[Message], prod: Producer, batch: _Batch, now_ms: int) -> None:
        """Decide record by record through the registry codec and the Python modules: records the kernel
        defers (another writer schema), or all of them when the kernel cannot write the registered outputs."""
        now = datetime.fromtimestamp(now_ms / 1000, timezone.utc)
        skew_limit = now + self.settings.clock_skew
        topics = self.topics
        for msg in msgs:
            # A fetched record always has its coordinates; the stubs type them Optional.
            topic: str = msg.topic()  # type: ignore[assignment]
            partition: int = msg.partition()  # type: ignore[assignment]
            offset: int = msg.offset()  # type: ignore[assignment]
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
                    keyed = Keyed(self._pseudonym(outcome.purpose, event.user_id),
                                  record_id(self._secret, outcome.purpose, event.event_id), self._key_id)
                    produce(prod, topics.training[outcome.purpose], self._enc_training[outcome.purpose](
                        training_record(event, outcome, self.catalog, keyed, decision.consent_version)),
                        keyed.pseudonym.encode())
                    if assessment is None:
                        assessment = assess(event.category, event.payload)
                    produce(prod, topics.contributions, self._enc_contribution(
                        contribution_record(event, outcome, consent, assessment, keyed)), user_key)
                    batch.outcomes[(outcome.purpose, event.category, "passed")] += 1
                else:
                    assert outcome.reason is not None
                    batch.outcomes[(outcome.purpose, event.category, outcome.reason.value)] += 1
            batch.records_passed += passed_any

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

    def _undo(self, err: KafkaError | None, rewind: bool = True) -> None:
        """Undo a failed batch (``err``: the Kafka error, if one caused it): abort, or replace a fenced
        or fatally failed producer (its successor's init_transactions settles the transaction), then
        rewind the input to the committed offsets."""
        if err is not None:
            failure = classify(err)
            log.warning("transaction failed (%s): %s", failure.value, err.str())
            self.metrics.aborts.labels(failure.value).inc()
            replace = failure in (Failure.FENCED, Failure.FATAL)
        else:
            replace = False
        assert self._producer is not None
        if replace or not abort(self._producer):
            self._producer = self._new_producer()
        if rewind:
            self._rewind()

    def _rewind(self) -> None:
        """Seek every assigned partition back to its committed offset.

        Keeps trying through a broker outage: consuming on from un-rewound positions would skip the
        records of the failed batch. Stopping ends it: nothing is committed past the last good batch.
        """
        def seek_committed() -> None:
            assignment = self._consumer.assignment()
            if assignment:
                for tp in self._consumer.committed(assignment, timeout=30):
                    self._consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else -2))

        try:
            self._rewind_policy.run(seek_committed, what="rewind to committed offsets",
                                    stopping=lambda: self._stopping)
        except Stopped:
            return

    def _account(self, batch: _Batch) -> None:
        records = batch.records
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
        self.metrics.observe_consumer_lag(self._consumer)
        self.metrics.record_outcomes(batch.outcomes)
        for error_class, count in batch.dlq.items():
            self.metrics.dlq.labels(error_class).inc(count)
