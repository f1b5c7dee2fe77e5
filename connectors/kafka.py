"""Kafka client factories and the Java-compatible partitioner."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from consentgate.errors import ConfigurationError
from consentgate.security.properties import redact
from consentgate.settings import Settings

log = logging.getLogger("consentgate.kafka")


def _on_error(err: KafkaError) -> None:
    # librdkafka reports transient connection trouble here and recovers by itself;
    # fatal errors also surface on the next call, where they are handled.
    (log.error if err.fatal() else log.warning)("kafka: %s", err)


Client = TypeVar("Client", Producer, Consumer, AdminClient)


def _create(kind: Callable[[dict[str, Any]], Client], settings: Settings, conf: dict[str, Any]) -> Client:
    """Create a client; librdkafka's refusal of a setting names the config file, never a secret value."""
    try:
        return kind(conf)
    except (KafkaException, ValueError, TypeError) as exc:
        origin = f" (from {settings.kafka_config})" if settings.kafka_config else ""
        detail = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        # Not chained: librdkafka's message can quote a value, and a traceback would print it unredacted.
        raise ConfigurationError(f"invalid Kafka client setting{origin}: {redact(detail, conf)}") from None


def producer(settings: Settings, **extra: Any) -> Producer:
    """A producer on ``settings``' cluster with its ``--kafka-config`` security settings."""
    return _create(Producer, settings, settings.librdkafka("producer", error_cb=_on_error, **extra))


def consumer(settings: Settings, group_id: str, **extra: Any) -> Consumer:
    """A read_committed consumer in ``group_id`` with its ``--kafka-config`` security settings."""
    return _create(Consumer, settings, settings.librdkafka(
        "consumer", **{"group.id": group_id, "error_cb": _on_error, **extra}))


def admin(settings: Settings, **extra: Any) -> AdminClient:
    """An admin client with ``--kafka-config`` security settings."""
    return _create(AdminClient, settings, settings.librdkafka("admin", error_cb=_on_error, **extra))


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
