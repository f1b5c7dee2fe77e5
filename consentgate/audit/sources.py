"""Read audited topics to the end committed when the audit started, in bounded chunks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from confluent_kafka import KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from consentgate.connectors.kafka import consumer
from consentgate.connectors.reader import ReadTimeout, read_until

from consentgate.audit.errors import AuditError
from consentgate.audit.scope import at_time, ends, partition_ids
from consentgate.settings import Settings

CHUNK = 100_000


def read_chunks(settings: Settings, admin: AdminClient, topic: str, from_ms: int | None,
                chunk: int = CHUNK) -> Iterator[list[Message]]:
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
        batch: list[Message] = []
        try:
            for msg in read_until(reader, wanted, timeout=60, batch=chunk):
                batch.append(msg)
                if len(batch) >= chunk:
                    yield batch
                    batch = []
        except (ReadTimeout, KafkaException) as exc:
            raise AuditError(f"cannot read {topic}: {exc}") from exc
        if batch:
            yield batch
    finally:
        reader.close()
