"""Reading what consentgate committed, decoded, for exact assertions."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from consentgate.connectors.jsonl import to_jsonable
from consentgate.connectors.kafka import admin, consumer, producer
from consentgate.connectors.reader import read_committed
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.records import activity_to_avro
from consentgate.streams.gate import Gate, GateStats

from consentgate.catalog import Catalog
from consentgate.model import ActivityEvent
from consentgate.settings import Settings


def committed(settings: Settings, topic: str, timeout: float = 30.0,
              group: str = "test-reader-") -> list[tuple[str | None, Any]]:
    """Every committed record of ``topic`` as (key, JSON-shaped value); tombstones have value None.

    ``group``: the prefix of the reader's group id (on a secure cluster, one the role may use)."""
    registry = registry_client(settings)
    decode = AvroDeserializer(registry, return_record_name=True)
    reader = consumer(settings, f"{group}{uuid.uuid4()}")
    out: list[tuple[str | None, Any]] = []
    try:
        for msg in read_committed(reader, [topic], timeout, admin(settings)):
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


def produce_events(settings: Settings, events: list[ActivityEvent], topic: str | None = None) -> None:
    """Publish ActivityEvents (keyed by user) and wait until every one is acknowledged."""
    topic = topic or settings.topic("activity.events")
    with registry_client(settings) as registry:
        codec = Codecs(registry)["ActivityEvent"]
        produce_raw(settings, [(e.user_id.encode(), codec.encode(topic, activity_to_avro(e))) for e in events], topic)


def produce_raw(settings: Settings, records: list[tuple[bytes | None, bytes | None]], topic: str | None = None) -> None:
    topic = topic or settings.topic("activity.events")
    out = producer(settings)
    errors: list[str] = []
    for key, value in records:
        out.produce(topic, value=value, key=key,
                    on_delivery=lambda err, msg: errors.append(err.str()) if err else None)
        out.poll(0)
    assert out.flush(30) == 0
    assert errors == []


def run_gate(settings: Settings, catalog: Catalog, idle: float = 2.0) -> GateStats:
    """Run one in-process gate worker until its input has been idle for ``idle`` seconds."""
    return Gate(settings, catalog).run(until_idle=idle)


class GateThread:
    """A gate worker running in a background thread until stopped."""

    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.gate = Gate(settings, catalog)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.gate.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def __enter__(self) -> GateThread:
        self._thread.start()
        assert self.gate.ready.wait(60), f"gate not ready: {self.error}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.stop()
        self._thread.join(60)
        assert not self._thread.is_alive(), "gate did not stop"
        if self.error is not None:
            raise self.error


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
