"""The gate's batch kernel in the loop: the compiled kernel and the Python reference write the same
records for the same input, and records written with another writer schema go through the registry
codec (deferred) without being lost, doubled or reordered out of their transaction."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from consentgate.connectors.topics import TopicNames
from consentgate.kernel import NativeKernel, ReferenceKernel, available
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.contracts import schema_json
from consentgate.schemas.records import activity_to_avro
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from consentgate.streams.gate import Gate

from consentgate.catalog import Catalog
from consentgate.errors import ConfigurationError
from consentgate.model import ActivityEvent
from tests.conftest import SettingsFactory
from tests.helpers import GateThread, produce_raw, values, wait_for
from tests.unit.kernel_cases import fail_unless_built, requires_kernel

GEN, REC, ADS = "train_ai_system.generative", "train_ai_system.recommendation", "train_ai_system.ads_ranking"
STAMPS = ("decided_at", "failed_at")  # the decision time: the only field two runs may differ in


def _evolved_schema() -> dict[str, Any]:
    """ActivityEvent with one more optional field: a later producer's writer schema (BACKWARD compatible)."""
    schema = schema_json("ActivityEvent")
    schema["fields"] = [*schema["fields"], {"name": "locale", "type": ["null", "string"], "default": None}]
    return schema


def _inputs(settings: Any, topics: TopicNames) -> list[tuple[bytes | None, bytes | None]]:
    """Records for every path: passes, drops, a hostile record, an evolved writer schema, an unknown id."""
    now = datetime.now(timezone.utc)
    events = [ActivityEvent(f"e{i}", f"u{i % 4}", cat, now, "web", payload) for i, (cat, payload) in enumerate(
        [("post", {"text": "a walk by the sea, then a long swim"}), ("search", {"query": "tide tables"}),
         ("post", {"text": "short"}), ("click", {"item_id": "i-1", "url": "https://example.org/i-1"}),
         ("voice", {"transcript": "jazz"}), ("search", {"query": "ferry times to the island"})] * 3)]
    with registry_client(settings) as registry:
        codec = Codecs(registry)["ActivityEvent"]
        shipped = [(e.user_id.encode(), codec.encode(topics.activity, activity_to_avro(e))) for e in events]
        evolved = _evolved_schema()
        evolved_id = registry.register_schema(f"{topics.activity}-evolved-value", Schema(json.dumps(evolved), "AVRO"))
    parsed = fastavro.parse_schema(evolved)
    later = []
    for event in events[:6]:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, {**activity_to_avro(event), "event_id": f"x-{event.event_id}",
                                                  "locale": "en-GB"})
        later.append((event.user_id.encode(), b"\x00" + evolved_id.to_bytes(4, "big") + body.getvalue()))
    hostile = shipped[0][1] + b"\x00"  # trailing bytes
    unknown = b"\x00" + (2**31 - 7).to_bytes(4, "big") + shipped[0][1][5:]
    # Interleaved so one fetch holds records for the kernel and records it defers.
    return [*shipped[:9], later[0], (b"u0", hostile), *shipped[9:], *later[1:], (b"u1", unknown)]


def _consent(settings: Any, catalog: Catalog) -> None:
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", "u0", "post", GEN, tier="data_sharing", plan="per_unit"),
                      ConsentRequest("grant", "u0", "click", REC),
                      ConsentRequest("grant", "u1", "search", ADS),
                      ConsentRequest("grant", "u1", "search", REC),
                      ConsentRequest("grant", "u3", "click", REC),
                      ConsentRequest("grant", "u2", "post", GEN)])
        writer.apply([ConsentRequest("erase", "u2")])


def _outputs(settings: Any, topics: TopicNames) -> Counter[str]:
    """Every committed output record, decoded, without its decision time, as a multiset."""
    out: Counter[str] = Counter()
    for topic in (topics.decisions, topics.dlq, topics.contributions, *topics.training.values()):
        for value in values(settings, topic):
            out[json.dumps({"_out": topic, **{k: v for k, v in value.items() if k not in STAMPS}},
                           sort_keys=True, default=str)] += 1
    return out


@requires_kernel
def test_compiled_and_reference_kernels_write_the_same_records(make_settings: SettingsFactory, topics: TopicNames,
                                                               catalog: Catalog) -> None:
    fail_unless_built()
    settings = make_settings()
    _consent(settings, catalog)
    inputs = _inputs(settings, topics)
    produce_raw(settings, inputs)

    stats = {}
    for choice, kind in (("compiled", NativeKernel), ("reference", ReferenceKernel)):
        run = make_settings(gate_kernel=choice, group_id=f"gate-{choice}", transactional_id_prefix=f"gate-{choice}",
                            worker_id="w")
        gate = Gate(run, catalog)
        assert isinstance(gate.kernel, kind)
        stats[choice] = gate.run(until_idle=2.0)
        assert stats[choice].records_in == len(inputs)

    a, b = stats["compiled"], stats["reference"]
    assert (a.decisions, a.dead_letters, a.passed, a.dropped, a.records_passed) == (
        b.decisions, b.dead_letters, b.passed, b.dropped, b.records_passed)
    # 18 shipped + 6 evolved records decided; the hostile and the unknown-id record dead-lettered.
    assert (a.decisions, a.dead_letters) == (24, 2)
    # Shipped (e0..e17): u0's posts e0, e8, e12 for generative; u1's searches e1, e5, e13, e17 for both
    # search purposes; u3's clicks e3, e15 for recommendation. Evolved (x-e0..x-e5): x-e0; x-e1, x-e5; x-e3.
    assert a.passed == {GEN: 3 + 1, REC: 4 + 2 + 3, ADS: 4 + 2}
    outputs = _outputs(settings, topics)
    # Each run wrote every record once: every output is there exactly twice, once from each kernel.
    assert set(outputs.values()) == {2}
    decisions = [json.loads(k) for k in outputs if json.loads(k)["_out"] == topics.decisions]
    assert sorted(d["event_id"] for d in decisions) == sorted(
        [f"e{i}" for i in range(18)] + [f"x-e{i}" for i in range(6)])
    decided = {(d["input"]["partition"], d["input"]["offset"]) for d in decisions}
    dlq = {(json.loads(k)["partition"], json.loads(k)["offset"]): json.loads(k)["error_class"] for k in outputs
           if json.loads(k)["_out"] == topics.dlq}
    # One decision or one dead letter per input record (each run), no record both.
    assert len(decided) == 24 and len(dlq) == 2 and not decided & set(dlq)
    assert sorted(dlq.values()) == ["UndecodableRecord", "UnknownSchemaId"]


def test_the_kernel_learns_a_writer_schema_the_codec_read_as_is(make_settings: SettingsFactory, topics: TopicNames,
                                                                catalog: Catalog) -> None:
    """When the activity subject's latest schema is not the contract itself (a later producer evolved it),
    the kernel knows no id at start: records written with the contract's own id are deferred once, the
    codec reads them and finds that id is the contract, and the kernel decodes it from then on. Records
    of the evolved schema always go through the codec (they need resolving)."""
    settings = make_settings()
    with registry_client(settings) as registry:
        codec = Codecs(registry)["ActivityEvent"]
        shipped_id = codec.as_is_id(topics.activity)
        assert shipped_id is not None
        evolved_id = registry.register_schema(f"{topics.activity}-value", Schema(json.dumps(_evolved_schema()), "AVRO"))
    with registry_client(settings) as registry:  # a new client: the old one caches the latest version
        # the latest now resolves to the contract: not as-is
        assert Codecs(registry)["ActivityEvent"].as_is_id(topics.activity) is None
    assert evolved_id != shipped_id
    parsed = fastavro.parse_schema(schema_json("ActivityEvent"))
    now = datetime.now(timezone.utc)

    def shipped(event_ids: range) -> list[tuple[bytes | None, bytes | None]]:
        out: list[tuple[bytes | None, bytes | None]] = []
        for i in event_ids:
            body = io.BytesIO()
            fastavro.schemaless_writer(body, parsed, activity_to_avro(
                ActivityEvent(f"e{i}", "u9", "search", now, "web", {"query": f"query {i}"})))
            out.append((b"u9", b"\x00" + shipped_id.to_bytes(4, "big") + body.getvalue()))
        return out

    with GateThread(settings, catalog) as running:
        kernel = running.gate.kernel
        assert isinstance(kernel, NativeKernel if available() else ReferenceKernel)
        assert kernel.known_schema_ids == frozenset()
        produce_raw(settings, shipped(range(3)))
        wait_for(lambda: len(values(settings, topics.decisions)) == 3, what="the first records decided")
        assert kernel.known_schema_ids == frozenset({shipped_id})
        produce_raw(settings, shipped(range(3, 6)))
        wait_for(lambda: len(values(settings, topics.decisions)) == 6, what="the later records decided")
    decided = values(settings, topics.decisions)
    assert sorted(d["event_id"] for d in decided) == [f"e{i}" for i in range(6)]
    assert all(d["outcomes"] == [{"purpose": REC, "passed": False, "reason": "no_consent_record"},
                                 {"purpose": ADS, "passed": False, "reason": "no_consent_record"}] for d in decided)


@pytest.mark.parametrize("choice", ["compiled", "reference"])
def test_a_kernel_that_cannot_write_the_registered_outputs_is_refused(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, choice: str) -> None:
    """A Decision schema with a field the kernel does not write: asked for by name, the gate refuses to
    start; on auto it decides record by record through the registry's writer."""
    settings = make_settings()
    schema = schema_json("Decision")
    schema["fields"] = [*schema["fields"], {"name": "note", "type": "string", "default": ""}]
    with registry_client(settings) as registry:
        registry.register_schema(f"{topics.decisions}-value", Schema(json.dumps(schema), "AVRO"))
    with pytest.raises(ConfigurationError, match="Decision on .* has a field the kernel does not write: note"):
        Gate(make_settings(gate_kernel=choice), catalog)
    gate = Gate(make_settings(gate_kernel="auto"), catalog)
    try:
        assert gate.kernel is None
    finally:
        gate.close()
