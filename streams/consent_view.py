"""A worker's view of consent.state, applied before any activity it covers is decided."""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from confluent_kafka import Message, TopicPartition
from consentgate.connectors.kafka import admin, consumer
from consentgate.connectors.reader import (
    ReadTimeout,
    partitions_of,
    read_batches_until,
    read_until,
    stable_ends,
)
from consentgate.schemas.codec import Codec
from consentgate.schemas.errors import RecordError
from consentgate.schemas.records import consent_from_avro
from consentgate.streams.consent_store import (
    CORRUPT,
    TOMBSTONE,
    CompactStore,
    ConsentStore,
    MemoryStore,
    RocksStore,
)
from consentgate.streams.metrics import GateMetrics

from consentgate.kernel import native
from consentgate.model import ConsentLookup, ConsentState, Erased
from consentgate.settings import Settings

log = logging.getLogger("consentgate.consent_view")
CACHE_SIZE = 200_000
RECOVERY_BATCH = 10_000


class ConsentView:
    """Holds every user's latest consent; ``catch_up`` is the consent-first barrier."""

    def __init__(self, settings: Settings, topic: str, codec: Codec, metrics: GateMetrics,
                 worker_id: str) -> None:
        self._settings = settings
        self._topic = topic
        self._codec = codec
        self._metrics = metrics
        self._admin = admin(settings)
        self._consumer = consumer(settings, f"consent-view-{uuid.uuid4()}")
        self._store = self._open_store(worker_id)
        self._cache: OrderedDict[str, ConsentLookup] = OrderedDict()
        self._partitions = partitions_of(self._consumer, topic)
        self._consumer.assign([TopicPartition(topic, tp.partition, -2) for tp in self._partitions])
        self.corrupt = 0

    def _open_store(self, worker_id: str) -> ConsentStore:
        kind = self._settings.consent_store
        if kind == "rocksdb":
            return RocksStore(self._settings.data_dir / "views" / worker_id)
        if kind == "compact":
            module, why = native.load()
            if module is not None:
                return CompactStore(module.ConsentTable(self._codec.reads_natively, self.get))
            log.warning("the compact consent store needs the compiled kernel: %s; keeping raw bytes in memory", why)
        return MemoryStore()

    def close(self) -> None:
        self._consumer.close()
        self._store.close()

    def kernel_lookup(self) -> Callable[[str], ConsentLookup]:
        """What ``Kernel.route`` reads consent through: the compact store's table (read natively, this
        view's ``get`` for users it keeps raw), else ``get``."""
        if isinstance(self._store, CompactStore):
            return self._store.table
        return self.get

    def __len__(self) -> int:
        return len(self._store)

    def recover(self, timeout: float = 30.0) -> int:
        """Load every committed consent record, written to the store as fetched.

        The cyclic garbage collector pauses meanwhile: recovery makes no reference cycles, and each
        collection would only rescan the objects of the fetch in hand (about 15% of a 10M recovery)."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._read(live=False, timeout=timeout)
        finally:
            if collecting:
                gc.enable()

    def catch_up(self, timeout: float = 30.0) -> int:
        """Apply every consent record committed before this call (the consent-first barrier)."""
        return self._read(live=True, timeout=timeout)

    def _read(self, live: bool, timeout: float) -> int:
        try:
            ends = stable_ends(self._admin, self._partitions)
        except ReadTimeout:
            self._admin = admin(self._settings)  # may hold stale metadata from before a broker restart
            raise
        applied = 0
        if live:
            for msg in read_until(self._consumer, ends, timeout):
                self._apply(msg)
                applied += 1
        else:  # recovering: nothing to compare with, so write as fetched
            for msgs in read_batches_until(self._consumer, ends, timeout, RECOVERY_BATCH):
                items = [(key.decode(errors="replace"), msg.value() or TOMBSTONE)
                         for msg in msgs if (key := msg.key()) is not None]
                if len(items) < len(msgs):
                    for msg in msgs:
                        if msg.key() is None:
                            self._corrupt(f"[{msg.partition()}]@{msg.offset()} has no key; ignored")
                self._put_many(items)
                applied += len(items)
        lag = sum(ends.values()) - sum(max(p.offset, 0) for p in self._consumer.position(self._partitions))
        self._metrics.consent_view_lag.set(max(lag, 0))
        self._metrics.consent_view_size.set(len(self._store))
        return applied

    def _apply(self, msg: Message) -> None:
        key = msg.key()
        if key is None:
            self._corrupt(f"[{msg.partition()}]@{msg.offset()} has no key; ignored")
            return
        user = key.decode(errors="replace")
        previous = self.get(user)
        problem = self._store.put(user, TOMBSTONE if msg.value() is None else msg.value())
        self._cache.pop(user, None)
        if problem is not None:
            self._unreadable(problem)
        if isinstance(previous, ConsentState) and _revokes(previous, self.get(user)):
            _, ts = msg.timestamp()
            if ts > 0:
                self._metrics.revocation_latency.observe(max(time.time() - ts / 1000, 0.0))

    def _put_many(self, items: list[tuple[str, bytes]]) -> None:
        for _, problem in self._store.put_many(items):
            self._unreadable(problem)

    def _unreadable(self, problem: str) -> None:
        """A store that decodes on the way in found a record unreadable (it holds the user as CORRUPT)."""
        self._corrupt(f"for a user: {problem}; the user is denied until a valid state arrives")

    def _corrupt(self, what: str) -> None:
        self.corrupt += 1
        self._metrics.consent_corrupt.inc()
        log.error("unreadable consent.state record %s", what)

    def _decode(self, user: str, raw: bytes | ConsentState | None) -> ConsentLookup:
        if isinstance(raw, ConsentState):  # decoded by the store
            return raw
        if raw is None or raw == CORRUPT:
            return None
        if raw == TOMBSTONE:
            return Erased(user)
        try:
            state = consent_from_avro(self._codec.decode(raw, self._topic))
        except (RecordError, KeyError, TypeError, ValueError) as exc:
            state = None
            self._corrupt(f"for a user: {exc}; the user is denied until a valid state arrives")
        else:
            if state.user_id != user:
                state = None
                self._corrupt("whose key and user_id differ; the user is denied")
        if state is None:
            self._store.put(user, CORRUPT)  # report once, deny from now on
        return state

    def get(self, user_id: str) -> ConsentLookup:
        cached = self._cache.get(user_id, _MISS)
        if cached is not _MISS:
            return cached  # type: ignore[return-value]
        lookup = self._decode(user_id, self._store.get(user_id))
        self._cache[user_id] = lookup
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return lookup


_MISS = object()


def _revokes(before: ConsentState, after: ConsentLookup) -> bool:
    if not isinstance(after, ConsentState):
        return True
    kept = {(g.category, g.purpose) for g in after.grants}
    return any((g.category, g.purpose) not in kept for g in before.grants)
