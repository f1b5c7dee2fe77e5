"""Reading what consentgate committed, decoded, for exact assertions."""

from __future__ import annotations

import uuid
from typing import Any

from consentgate.connectors.jsonl import to_jsonable
from consentgate.connectors.kafka import consumer
from consentgate.connectors.reader import read_committed
from consentgate.schemas.codec import registry_client
from consentgate.settings import Settings
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def committed(settings: Settings, topic: str, timeout: float = 30.0) -> list[tuple[str | None, Any]]:
    """Every committed record of ``topic`` as (key, JSON-shaped value); tombstones have value None."""
    registry = registry_client(settings.require_registry())
    decode = AvroDeserializer(registry, return_record_name=True)
    reader = consumer(settings, f"test-reader-{uuid.uuid4()}")
    out: list[tuple[str | None, Any]] = []
    try:
        for msg in read_committed(reader, [topic], timeout):
            key = msg.key().decode() if msg.key() is not None else None
            value = msg.value()
            out.append((key, None if value is None else to_jsonable(
                decode(value, SerializationContext(topic, MessageField.VALUE)))))
    finally:
        reader.close()
        registry.close()
    return out


def values(settings: Settings, topic: str) -> list[Any]:
    return [v for _, v in committed(settings, topic)]
