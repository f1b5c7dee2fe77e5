"""Kafka client factories and the Java-compatible partitioner."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from consentgate.settings import Settings

log = logging.getLogger("consentgate.kafka")


def _on_error(err: KafkaError) -> None:
    # librdkafka reports transient connection trouble here and recovers by itself;
    # fatal errors also surface on the next call, where they are handled.
    (log.error if err.fatal() else log.warning)("kafka: %s", err)


def producer(settings: Settings, **extra: Any) -> Producer:
    return Producer(settings.librdkafka("producer", error_cb=_on_error, **extra))


def consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    return Consumer(settings.librdkafka("consumer", **{"group.id": group_id, "error_cb": _on_error, **extra}))


def admin(settings: Settings) -> AdminClient:
    return AdminClient(settings.librdkafka("admin", error_cb=_on_error))


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash, as the Java client and librdkafka's ``murmur2_random`` compute it."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def produce(out: Producer, topic: str, value: bytes | None, key: bytes | None = None, **kwargs: Any) -> None:
    """Produce, waiting for room when librdkafka's local queue is full (never drops a record)."""
    while True:
        try:
            out.produce(topic, value=value, key=key, **kwargs)
            return
        except BufferError:
            out.poll(0.05)
