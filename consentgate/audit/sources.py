"""Read audited topics to the end committed when the audit started, in bounded chunks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from consentgate.connectors.kafka import consumer

from consentgate.audit.errors import AuditError
from consentgate.audit.scope import at_time, ends, partition_ids
from consentgate.settings import Settings

CHUNK = 100_000


def read_chunks(settings: Settings, admin: AdminClient, topic: str, from_ms: int | None,
                chunk: int = CHUNK, timeout: float = 60) -> Iterator[list[Message]]:
    """Every committed record of ``topic`` from ``from_ms`` (None: the beginning) to the end
    as it stands now, in lists of at most ``chunk`` records; tombstones included."""
    partitions = partition_ids(admin, topic)
    last = ends(admin, topic, partitions)
    first = at_time(admin, topic, partitions, from_ms, last)
    wanted = {(topic, p): last[p] for p in partitions if last[p] > first[p]}
    if not wanted:
        return
    reader = consumer(settings, f"consentgate-audit-{uuid.uuid4()}", **{
        "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024})
    try:
        reader.assign([TopicPartition(topic, p, first[p]) for (_, p) in wanted])
        try:
            yield from _batches(reader, wanted, chunk, timeout)
        except KafkaException as exc:
            raise AuditError(f"cannot read {topic}: {exc}") from exc
    finally:
        reader.close()


def _batches(reader: Consumer, ends: dict[tuple[str, int], int], chunk: int, timeout: float
             ) -> Iterator[list[Message]]:
    """What ``connectors.reader.read_until`` yields, taken from the consumer a batch at a time (no Python
    generator step per record): lists of at most ``chunk``, until each partition reaches its end."""
    remaining = dict(ends)
    batch: list[Message] = []
    deadline = time.monotonic() + timeout
    while True:
        for pos in reader.position([TopicPartition(t, p) for t, p in remaining]):
            if pos.offset >= remaining[(pos.topic, pos.partition)]:
                del remaining[(pos.topic, pos.partition)]
        if not remaining:
            break
        if time.monotonic() > deadline:
            raise AuditError(f"no progress reading {sorted(remaining)} to their end for {timeout:.0f}s")
        msgs = reader.consume(chunk - len(batch), 0)
        if not msgs:
            first = reader.poll(0.05)
            msgs = [] if first is None else [first]
        if msgs:
            deadline = time.monotonic() + timeout
            failed = [m.error() for m in msgs if m.error() is not None]
            if failed:
                raise KafkaException(failed[0])
            batch.extend(msgs)
            if len(batch) >= chunk:
                yield batch
                batch = []
    if batch:
        yield batch
