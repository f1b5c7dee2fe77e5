"""Input that used to jam a partition or slip through: each goes to a dead-letter topic now, bounded,
and the worker keeps going. Each test names what happened before."""

from __future__ import annotations

import hashlib
import io
import struct
from datetime import datetime, timezone
from collections.abc import Callable, Iterator
from typing import Any

import fastavro
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from consentgate.connectors.kafka import admin
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.contracts import schema_json
from consentgate.schemas.errors import UnknownSchemaId
from consentgate.schemas.records import activity_to_avro
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from consentgate.streams.outputs import DLQ_VALUE_BYTES

from consentgate.catalog import Catalog
from consentgate.errors import ConsentRequestError
from consentgate.model import ActivityEvent, ConsentState
from consentgate.settings import Settings
from tests.helpers import GateThread, produce_raw, values, wait_for

GEN = "train_ai_system.generative"


@pytest.fixture
def registry(settings: Settings) -> Iterator[SchemaRegistryClient]:
    with registry_client(settings) as client:
        yield client


@pytest.fixture
def encode(registry: SchemaRegistryClient, topics: TopicNames) -> Callable[[ActivityEvent], bytes]:
    codec = Codecs(registry)["ActivityEvent"]
    return lambda event: codec.encode(topics.activity, activity_to_avro(event))


def _post(event_id: str, user: str = "u1", category: str = "post") -> ActivityEvent:
    payload = {"text": f"text of {event_id}"} if category == "post" else {"transcript": "hi"}
    return ActivityEvent(event_id, user, category, datetime.now(timezone.utc), "web", payload)


def _run_until(settings: Settings, catalog: Catalog, topics: TopicNames, inputs: int) -> None:
    """Run a gate until every input is decided or dead-lettered (a jammed gate fails here, bounded)."""
    with GateThread(settings, catalog):
        wait_for(lambda: len(values(settings, topics.decisions)) + len(values(settings, topics.dlq)) >= inputs,
                 timeout=90, what=f"{inputs} inputs decided or dead-lettered")


def test_oversized_and_decompression_bomb_inputs_are_dead_lettered_bounded(
        settings: Settings, topics: TopicNames, catalog: Catalog, encode: Callable[[ActivityEvent], bytes]) -> None:
    """Before: the raw blob was copied into gate.dlq, the broker refused it, the batch aborted and retried
    without end. Now: a bounded prefix, the length and the SHA-256; the records after it pass."""
    client = admin(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topics.activity, incremental_configs=[
        ConfigEntry("max.message.bytes", str(4 * 1024 * 1024), incremental_operation=AlterConfigOpType.SET)])
    for future in client.incremental_alter_configs([resource]).values():
        future.result(30)
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", "u1", "post", GEN)])
    big = b"\x00" + bytes(range(256)) * (1_500_000 // 256)  # 1.5 MB, incompressible enough
    bomb = b"\x00" * (3 * 1024 * 1024)  # 3 MB of zeros: a few KB once gzip-compressed
    produce_raw(settings, [(b"u1", encode(_post("before")))])
    out = Producer(settings.librdkafka("producer", **{"message.max.bytes": 10_000_000, "compression.type": "gzip"}))
    for value in (big, bomb):
        out.produce(topics.activity, value=value, key=b"u1")
    assert out.flush(60) == 0
    produce_raw(settings, [(b"u1", encode(_post("after")))])
    _run_until(settings, catalog, topics, 4)

    dlq = sorted(values(settings, topics.dlq), key=lambda d: d["offset"])
    got = [(d["error_class"], d["truncated"], d["value_length"], d["value_sha256"], len(d["value"]))
           for d in dlq]
    # tail --json prints bytes as base64: 64 KiB -> 87,384 characters
    prefix_b64 = (DLQ_VALUE_BYTES + 2) // 3 * 4
    assert got == [("OversizedRecord", True, len(big), hashlib.sha256(big).hexdigest(), prefix_b64),
                   ("OversizedRecord", True, len(bomb), hashlib.sha256(bomb).hexdigest(), prefix_b64)]
    assert sorted(d["event_id"] for d in values(settings, topics.decisions)) == ["after", "before"]


def test_identifiers_are_bounded_at_the_gate(settings: Settings, topics: TopicNames, catalog: Catalog,
                                             encode: Callable[[ActivityEvent], bytes]) -> None:
    """Before: a 201-character user id passed the gate and made PostgreSQL's VARCHAR(200) refuse the
    metering batch, forever. Now: ids over 200 characters or with control characters are dead letters."""
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", "u" * 200, "post", GEN)])
    records = [
        (_post("ok-200", "u" * 200), None),
        (_post("user-201", "u" * 201), "user_id has 201 characters (at most 200)"),
        (_post("user-10k", "u" * 10_000), "user_id has 10000 characters (at most 200)"),
        (_post("e" * 201), "event_id has 201 characters (at most 200)"),
        (_post("nul", "u1\x00"), "user_id has a control or unassigned character U+0000 at position 2"),
        (_post("rtl", "\u202eu1"), "user_id has a control or unassigned character U+202E at position 0"),
        (_post("cat", "u1", "c" * 300), "category has 300 characters (at most 200)"),
        (_post("ok-last", "u" * 200), None),
    ]
    produce_raw(settings, [(b"k", encode(event)) for event, _ in records])
    _run_until(settings, catalog, topics, len(records))
    dlq = sorted(values(settings, topics.dlq), key=lambda d: d["offset"])
    assert [(d["offset"], d["error_class"], d["message"]) for d in dlq] == [
        (i, "InvalidIdentifier", message) for i, (_, message) in enumerate(records) if message]
    decided = {d["event_id"]: d["outcomes"][1]["passed"] for d in values(settings, topics.decisions)}
    assert decided == {"ok-200": True, "ok-last": True}


def _framed(encode: Callable[[ActivityEvent], bytes], event: ActivityEvent) -> tuple[bytes, bytes]:
    """A record the registry's codec wrote: (5-byte header, Avro body)."""
    data = encode(event)
    return data[:5], data[5:]


def test_strict_decoding_rejects_what_fastavro_accepts(settings: Settings, topics: TopicNames, catalog: Catalog,
                                                       encode: Callable[[ActivityEvent], bytes]) -> None:
    """Before: fastavro read trailing bytes, overlong varints and a negative union index (which silently
    selected GenericPayload) as valid records. Now each is an UndecodableRecord in the DLQ."""
    header, body = _framed(encode, _post("e1"))
    _, voice = _framed(encode, _post("v1", category="voice"))
    # The payload index is the byte right after the five fields before it; GenericPayload is the last
    # branch, index n-1, zig-zag encoded as one byte; -1 (zig-zag 0x01) names the same branch in Python.
    branches = len(schema_json("ActivityEvent")["fields"][5]["type"])
    index_at = voice.index(bytes([(branches - 1) << 1]) + b"\x02")  # followed by the map's block count 1
    hostile = {
        "trailing": header + body + b"\x00\x00",
        "overlong": header + bytes([body[0] | 0x80, 0x00]) + body[1:],  # event_id's length as two bytes
        "negative union index": header + voice[:index_at] + b"\x01" + voice[index_at + 1:],
    }
    parsed = fastavro.parse_schema(schema_json("ActivityEvent"))
    for data in hostile.values():  # what the old decoder did: read them without complaint
        assert isinstance(fastavro.schemaless_reader(io.BytesIO(data[5:]), parsed), dict)
    produce_raw(settings, [(b"u1", header + body), *((b"u1", v) for v in hostile.values()), (b"u1", header + body)])
    _run_until(settings, catalog, topics, 5)
    dlq = sorted(values(settings, topics.dlq), key=lambda d: d["offset"])
    assert [(d["offset"], d["error_class"]) for d in dlq] == [(1, "UndecodableRecord"), (2, "UndecodableRecord"),
                                                              (3, "UndecodableRecord")]
    # The gate's batch kernel decodes them (its strict decoder names the defect and where it is).
    end = len(header + body)
    assert dlq[0]["message"] == f"cannot decode as ActivityEvent: 2 trailing bytes at byte {end}"
    assert dlq[1]["message"] == "cannot decode as ActivityEvent: overlong varint at byte 5"
    assert dlq[2]["message"] == f"cannot decode as ActivityEvent: payload union index -1 out of range at byte {5 + index_at}"


def test_unknown_schema_ids_cost_one_registry_call(topics: TopicNames, registry: SchemaRegistryClient) -> None:
    """Before: every record naming an unknown schema id asked the registry again."""
    asked: list[int] = []
    real = registry.get_schema

    def counting(schema_id: int, *args: Any, **kwargs: Any) -> Any:
        asked.append(schema_id)
        return real(schema_id, *args, **kwargs)

    registry.get_schema = counting  # type: ignore[method-assign]
    codec = Codecs(registry)["ActivityEvent"]
    unknown = b"\x00" + struct.pack(">I", 987_654_321) + b"\x02e"
    for offset in range(50):
        try:
            codec.decode(unknown, topics.activity, 0, offset)
        except UnknownSchemaId as exc:
            assert exc.offset == offset and exc.raw == unknown
        else:
            raise AssertionError("an unknown schema id was decoded")
    assert asked == [987_654_321]


def test_unexpected_schemas_are_dead_letters(settings: Settings, topics: TopicNames, catalog: Catalog,
                                             registry: SchemaRegistryClient,
                                             encode: Callable[[ActivityEvent], bytes]) -> None:
    """A record whose schema id names a schema the gate does not expect (not a record, another record)
    is a SchemaMismatch dead letter; the gate goes on."""
    ids = {
        "string": registry.register_schema(f"{topics.activity}-odd-value", Schema('"string"', "AVRO")),
        "other record": registry.register_schema(f"{topics.activity}-other-value", Schema(
            '{"type": "record", "name": "Elsewhere", "fields": [{"name": "x", "type": "long"}]}', "AVRO")),
    }
    header, body = _framed(encode, _post("e1"))
    odd = [b"\x00" + struct.pack(">I", ids["string"]) + b"\x06abc",
           b"\x00" + struct.pack(">I", ids["other record"]) + b"\x02"]
    produce_raw(settings, [(b"u1", header + body), *((b"u1", v) for v in odd), (b"u1", header + body)])
    _run_until(settings, catalog, topics, 4)
    dlq = sorted(values(settings, topics.dlq), key=lambda d: d["offset"])
    assert [(d["offset"], d["error_class"]) for d in dlq] == [(1, "SchemaMismatch"), (2, "SchemaMismatch")]
    assert len(values(settings, topics.decisions)) == 2


def test_a_corrupt_consent_record_never_blocks_the_writer(settings: Settings, topics: TopicNames,
                                                          catalog: Catalog) -> None:
    """Before: one unreadable consent.state record made grant, revoke, erase and show fail for every user
    on its partition, so nobody there could withdraw consent. Now only its own user is affected, and
    even that user can be revoked and erased."""
    with ConsentWriter(settings, catalog) as writer:
        home = writer.partition_of("victim")
        neighbour = next(u for u in (f"n{i}" for i in range(1000)) if writer.partition_of(u) == home)
        writer.apply([ConsentRequest("grant", "victim", "post", GEN), ConsentRequest("grant", neighbour, "post", GEN)])
    produce_raw(settings, [(b"victim", b"\x00\x00\x00\x00\x01garbage")], topic=topics.consent_state)
    with ConsentWriter(settings, catalog) as writer:
        shown = writer.show("victim")
        assert isinstance(shown, ConsentState) and shown.grants == ()
        assert writer.show(neighbour).grants[0].purpose == GEN  # type: ignore[union-attr]
        revoked = writer.apply([ConsentRequest("revoke", neighbour, "post", GEN)])
        assert revoked[0]["consent_version"] == 2
        again = writer.apply([ConsentRequest("revoke", "victim")])
        assert again[0]["consent_version"] == 2
        erased = writer.apply([ConsentRequest("erase", "victim")])
        assert erased[0]["consent_version"] == 3
        assert writer.show("victim") is not None and writer.show(neighbour).grants == ()  # type: ignore[union-attr]
        m = writer.metrics  # the writer's metrics say what happened
        assert [m.value("consentgate_consent_changes_total", action=a) for a in ("grant", "revoke", "erase")] == [
            0, 2, 1]
        assert m.value("consentgate_consent_visible_seconds_count") == 3
        assert m.value("consentgate_consent_corrupt_skipped_total") >= 1
        with pytest.raises(ConsentRequestError):
            writer.apply([ConsentRequest("grant", "victim", "post", "train_ai_system.nothing")])
        assert m.value("consentgate_consent_refused_total") == 1
