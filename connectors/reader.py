"""Read partitions up to their last stable offset: the records committed so far, no more."""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from consentgate.errors import ConsentGateError


class ReadTimeout(ConsentGateError):
    """Partitions could not be read to their end within the allowed time."""


def stable_ends(admin: AdminClient, partitions: list[TopicPartition], timeout: float = 10.0,
                committed: bool = True) -> dict[tuple[str, int], int]:
    """Last stable offset of each partition (everything below it is committed or aborted);
    with ``committed=False``, the high watermark instead."""
    request = {TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in partitions}
    level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    futures = admin.list_offsets(request, isolation_level=level, request_timeout=timeout)
    try:
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
    except KafkaException as exc:
        raise ReadTimeout(f"cannot list offsets: {exc.args[0].str()}") from exc


def partitions_of(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[TopicPartition]:
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise ReadTimeout(f"topic {topic} does not exist")
    return [TopicPartition(topic, p) for p in sorted(metadata.partitions)]


def read_until(consumer: Consumer, ends: dict[tuple[str, int], int], timeout: float = 30.0,
               batch: int = 5000) -> Iterator[Message]:
    """Yield records of the consumer's assignment until each partition reaches ``ends`` (see
    ``read_batches_until``)."""
    for msgs in read_batches_until(consumer, ends, timeout, batch):
        yield from msgs


def read_batches_until(consumer: Consumer, ends: dict[tuple[str, int], int], timeout: float = 30.0,
                       batch: int = 5000) -> Iterator[list[Message]]:
    """Yield the records of the consumer's assignment, as fetched (lists of at most ``batch``), until
    each partition reaches ``ends``.

    The consumer must be assigned the partitions of ``ends``, read ``read_committed``, and never have
    been positioned on them before: right after a re-assign librdkafka can report the previous
    position, which would end the read early. librdkafka moves the position past transaction
    markers, so positions reach the ends.
    ``timeout`` bounds a stall (no record arriving), not the whole read.
    """
    remaining = dict(ends)
    deadline = time.monotonic() + timeout
    while True:
        for pos in consumer.position([TopicPartition(t, p) for t, p in remaining]):
            if pos.offset >= remaining[(pos.topic, pos.partition)] or remaining[(pos.topic, pos.partition)] <= 0:
                del remaining[(pos.topic, pos.partition)]
        if not remaining:
            return
        if time.monotonic() > deadline:
            raise ReadTimeout(f"no progress reading {sorted(remaining)} to their end for {timeout:.0f}s")
        # What is already fetched, at once; otherwise wait for the next record only as long as it takes
        # to arrive (consume(n, t) would wait the whole t for a batch that the end may never fill).
        msgs = consumer.consume(batch, 0)
        if not msgs:
            first = consumer.poll(0.05)
            msgs = [] if first is None else [first]
        if msgs:
            deadline = time.monotonic() + timeout
            for msg in msgs:
                if msg.error():
                    raise KafkaException(msg.error())
            yield msgs


def read_committed(consumer: Consumer, topics: list[str], timeout: float = 30.0,
                   admin: AdminClient | None = None) -> Iterator[Message]:
    """Assign ``topics`` from the beginning and yield every committed record.

    ``admin`` lists the end offsets; pass one made with the same security settings as ``consumer``
    (``connectors.kafka.admin``): the fallback is a plaintext client on the consumer's brokers.
    """
    partitions = [tp for topic in topics for tp in partitions_of(consumer, topic)]
    if admin is None:  # not `admin or ...`: a client with nothing queued has len() 0, so is falsy
        admin = AdminClient({"bootstrap.servers": _bootstrap(consumer)})
    ends = stable_ends(admin, partitions)
    consumer.assign([TopicPartition(tp.topic, tp.partition, -2) for tp in partitions])
    yield from read_until(consumer, ends, timeout)


def _bootstrap(consumer: Consumer) -> str:
    brokers = consumer.list_topics(timeout=10).brokers.values()
    return ",".join(f"{b.host}:{b.port}" for b in brokers)
