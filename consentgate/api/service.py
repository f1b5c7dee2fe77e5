"""The consent service's core: one long-lived, warmed consent writer, fed one lane per partition.

Each consent.state partition has one lane: a thread that owns every change to the partition's
users. Changes queued while a transaction is in flight are committed together in the next one
(group commit), in arrival order, so concurrent changes to one user never race and 50 users
changing at once share transactions instead of queueing behind each other. A change is answered
only after the writer saw it readable with read_committed: the gate applies it before any
activity it fetches afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import KafkaException, TopicPartition
from sqlalchemy import Engine

from consentgate.api.errors import BadRequest, Unavailable
from consentgate.catalog import Catalog
from consentgate.connectors.jsonl import to_jsonable
from consentgate.connectors.kafka import admin, consumer, partition_for
from consentgate.connectors.reader import ReadTimeout, partitions_of, read_until, stable_ends
from consentgate.errors import ConsentGateError, ConsentRequestError
from consentgate.model import ConsentLookup
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.settings import Settings
from consentgate.connectors.retry import Backoff, Failure, RetryPolicy
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter

MAX_BATCH = 500
log = logging.getLogger(__name__)
PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class _Lane:
    """One partition's queue of changes and the thread that commits them."""

    def __init__(self, writer: ConsentWriter, partition: int) -> None:
        self._writer = writer
        self._queue: queue.Queue[tuple[ConsentRequest, Future[dict[str, Any]]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"consent-lane-{partition}", daemon=True)
        self._thread.start()

    def submit(self, request: ConsentRequest) -> Future[dict[str, Any]]:
        done: Future[dict[str, Any]] = Future()
        self._queue.put((request, done))
        return done

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(60)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(more)
            self._commit(batch)

    def _commit(self, batch: list[tuple[ConsentRequest, Future[dict[str, Any]]]]) -> None:
        # A caller that gave up while its change was still queued cancelled it: it is not committed.
        batch = [(request, done) for request, done in batch if done.set_running_or_notify_cancel()]
        if not batch:
            return
        try:
            receipts = self._writer.apply([request for request, _ in batch])
        except ConsentRequestError:
            # One refused change must not sink the others: commit them one by one.
            for request, done in batch:
                self._commit_one(request, done)
            return
        except BaseException as exc:  # noqa: BLE001 - every waiter learns the cause
            for _, done in batch:
                done.set_exception(exc)
            return
        for (_, done), receipt in zip(batch, receipts, strict=True):
            done.set_result(receipt)

    def _commit_one(self, request: ConsentRequest, done: Future[dict[str, Any]]) -> None:
        try:
            done.set_result(self._writer.apply([request])[0])
        except BaseException as exc:  # noqa: BLE001 - the waiter learns the cause
            done.set_exception(exc)


class ConsentService:
    """Consent changes, reads, receipt history and statements, over the same core as the CLI."""

    def __init__(self, settings: Settings, catalog: Catalog,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 change_timeout_s: float = 60.0, warm_timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.catalog = catalog
        self.clock = clock
        self._timeout = change_timeout_s
        self.writer = ConsentWriter(settings, catalog, clock)
        try:
            self._warm(warm_timeout_s)
        except BaseException:
            self.writer.close()
            raise
        self._registry = registry_client(settings)
        self._codecs = Codecs(self._registry)
        self._admin = admin(settings)
        probe = consumer(settings, f"consent-service-probe-{uuid.uuid4()}")
        try:
            lanes = len(partitions_of(probe, self.writer.topics.consent_state))
            self._change_partitions = len(partitions_of(probe, self.writer.topics.consent_changes))
        finally:
            probe.close()
        self._lanes = [_Lane(self.writer, p) for p in range(lanes)]
        self._ledger: Engine | None = None
        self._ledger_lock = threading.Lock()

    def _warm(self, timeout_s: float) -> None:
        """Take and read every consent.state partition; a cluster still settling is waited for."""
        policy = RetryPolicy(Backoff(0.1, 2.0), deadline_s=timeout_s, retry_on=frozenset(Failure))
        try:  # partitions already taken are skipped on a second call
            policy.run(self.writer.warm, what="taking the consent partitions")
        except (KafkaException, ReadTimeout) as exc:
            raise Unavailable(f"cannot take the consent partitions: {exc}") from exc
        if self.settings.metrics_port is not None:
            self.writer.metrics.serve(self.settings.metrics_port, self.settings.metrics_host,
                                      data_dir=self.settings.data_dir, worker="consent-service")

    def close(self) -> None:
        for lane in self._lanes:
            lane.stop()
        self.writer.metrics.close()
        self.writer.close()
        self._registry.close()
        if self._ledger is not None:
            self._ledger.dispose()

    def change(self, request: ConsentRequest) -> dict[str, Any]:
        """Commit one change and return its ConsentChange receipt once the gate can see it."""
        return self._settle(lambda: self.submit(request).result(self._timeout))

    async def change_async(self, request: ConsentRequest) -> dict[str, Any]:
        """``change`` for the event loop: waits on the lane without holding a thread."""
        done = asyncio.wrap_future(self.submit(request))
        try:
            return await asyncio.wait_for(done, self._timeout)
        except asyncio.TimeoutError as exc:
            raise Unavailable(f"the change was not acknowledged within {self._timeout:.0f}s; check the "
                              "receipt history before trying again") from exc
        except ConsentRequestError:
            raise
        except ConsentGateError as exc:
            raise Unavailable(f"the change could not be committed: {exc}") from exc

    def submit(self, request: ConsentRequest) -> Future[dict[str, Any]]:
        """Queue ``request`` on its partition's lane; the future holds its receipt."""
        return self._lanes[self.writer.partition_of(request.user_id)].submit(request)

    def _settle(self, wait: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return wait()
        except TimeoutError as exc:
            # Still queued or committing: it may yet land, and its receipt will then be in the history.
            raise Unavailable(f"the change was not acknowledged within {self._timeout:.0f}s; check the "
                              "receipt history before trying again") from exc
        except ConsentGateError as exc:
            if isinstance(exc, ConsentRequestError):
                raise
            raise Unavailable(f"the change could not be committed: {exc}") from exc

    def state(self, user_id: str) -> ConsentLookup:
        return self.writer.current(user_id)

    def receipts(self, user_id: str) -> list[dict[str, Any]]:
        """Every ConsentChange of ``user_id``, oldest first, read from consent.changes."""
        topic = self.writer.topics.consent_changes
        tp = TopicPartition(topic, partition_for(user_id.encode(), self._change_partitions))
        ends = stable_ends(self._admin, [tp])
        reader = consumer(self.settings, f"consent-service-receipts-{uuid.uuid4()}")
        reader.assign([TopicPartition(topic, tp.partition, -2)])
        key = user_id.encode()
        out: list[dict[str, Any]] = []
        try:
            for msg in read_until(reader, ends):
                if msg.key() == key and msg.value() is not None:
                    out.append(to_jsonable(self._codecs["ConsentChange"].decode(
                        msg.value(), topic, msg.partition(), msg.offset())))
        finally:
            reader.close()
        return out

    def statement(self, user_id: str, period: str | None) -> dict[str, Any]:
        """The user's statement, as ``consentgate metering statement --format json`` prints it."""
        from consentgate.connectors.ledger import connect
        from consentgate.statements import gather

        if period is not None and not PERIOD.match(period):
            raise BadRequest(f"period {period[:20]!r} is not YYYY-MM", "invalid_period")
        with self._ledger_lock:
            if self._ledger is None:
                self._ledger = connect(self.settings.ledger())
        statement: dict[str, Any] = to_jsonable(gather(self._ledger, self.catalog, user_id, period))
        return statement
