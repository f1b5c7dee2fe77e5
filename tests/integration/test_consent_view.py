"""The compact consent view against a real broker and registry: it recovers and catches up to exactly the
states the raw-bytes view holds, reports each unreadable record once and denies its user, keeps records of
a newer writer schema raw for the codec, and hands the kernel its table."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.contracts import schema_json
from consentgate.schemas.records import consent_to_avro
from consentgate.streams.consent_view import ConsentView
from consentgate.streams.metrics import GateMetrics

from consentgate.model import ConsentState, Erased, Grant
from consentgate.settings import Settings
from tests.helpers import produce_raw

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
PAIRS = [("post", "train_ai_system.recommendation"), ("search", "train_ai_system.ads_ranking"),
         ("conversation", "train_ai_system.generative"), ("post", "train_ai_system.generative"),
         ("click", "train_ai_system.ads_ranking")]
GARBAGE = b"\x00\x00\x00\x00\x01garbage"


def state(user: str, version: int, pairs: list[tuple[str, str]]) -> ConsentState:
    return ConsentState(user, version, T0 + timedelta(seconds=version), "data_sharing", "per_unit", tuple(
        Grant(c, p, T0 - timedelta(days=i), T0 + timedelta(days=30) if i % 2 else None, 3, str(uuid.uuid4()))
        for i, (c, p) in enumerate(pairs)))


class Views:
    """A compact and a raw-bytes (memory) view of the same consent.state, with their metrics."""

    def __init__(self, settings: Settings, topics: TopicNames) -> None:
        self.settings = settings
        self.registry = registry_client(settings)
        self.codec = Codecs(self.registry)["ConsentState"]
        self.topic = topics.consent_state
        self.metrics = {kind: GateMetrics() for kind in ("compact", "memory")}
        self.views = {kind: ConsentView(settings.model_copy(update={"consent_store": kind}), self.topic,
                                        Codecs(self.registry)["ConsentState"], self.metrics[kind], f"w-{kind}")
                      for kind in ("compact", "memory")}

    def write(self, records: list[tuple[str, ConsentState | bytes | None]]) -> None:
        produce_raw(self.settings, [
            (user.encode(), self.codec.encode(self.topic, consent_to_avro(value)) if isinstance(value, ConsentState)
             else value) for user, value in records], self.topic)

    def close(self) -> None:
        for view in self.views.values():
            view.close()
        self.registry.__exit__(None, None, None)


@pytest.fixture
def views(settings: Settings, topics: TopicNames) -> Iterator[Views]:
    made = Views(settings, topics)
    yield made
    made.close()


def newer_schema_record(views: Views, user: str, value: ConsentState) -> bytes:
    """``value`` written with a newer, BACKWARD-compatible ConsentState (one more field): the codec resolves it."""
    schema: dict[str, Any] = schema_json("ConsentState")
    schema["fields"].append({"name": "region", "type": "string", "default": "eu"})
    schema_id = views.registry.register_schema(f"{views.topic}-value", Schema(json.dumps(schema), "AVRO"))
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), {**consent_to_avro(value), "region": "us"})
    return out.getvalue()


def test_the_compact_view_holds_what_the_raw_view_holds(views: Views) -> None:
    users = [f"user-{i}" for i in range(40)] + ["üser-ß", str(uuid.uuid4())]
    first = {u: state(u, 1, PAIRS) for u in users}
    views.write([(u, s) for u, s in first.items()])
    newer = state("newer", 1, PAIRS[:2])
    views.write([("erased-1", None), ("victim", GARBAGE), ("impostor", first["user-0"]),
                 ("newer", newer_schema_record(views, "newer", newer))])
    compact, memory = views.views["compact"], views.views["memory"]
    assert compact.recover() == memory.recover() == len(users) + 4
    assert len(compact) == len(memory) == len(users) + 4
    everyone = [*users, "erased-1", "victim", "impostor", "newer", "nobody"]
    got = {u: compact.get(u) for u in everyone}
    assert got == {u: memory.get(u) for u in everyone}
    assert got["user-3"] == first["user-3"] and got["newer"] == newer
    table: Any = compact.kernel_lookup()
    assert isinstance(table.get("user-3"), tuple) and isinstance(table.get("newer"), bytes)  # packed; kept raw
    assert (got["erased-1"], got["victim"], got["impostor"], got["nobody"]) == (Erased("erased-1"), None, None, None)
    assert compact.corrupt == memory.corrupt == 2  # the garbage and the impostor, each reported once
    for u in everyone:  # asking again reports nothing more, and hands out the same objects
        assert compact.get(u) is got[u]
    assert compact.corrupt == 2
    assert views.metrics["compact"].value("consentgate_consent_corrupt_total") == 2

    # live changes: a revocation, an erasure, a fix for the victim, new garbage; the view keeps going
    revoked = state("user-1", 2, PAIRS[1:])
    fixed = state("victim", 2, PAIRS[:1])
    views.write([("user-1", revoked), ("user-2", None), ("victim", fixed), ("user-4", GARBAGE),
                 ("user-5", b""), ("late", state("late", 1, PAIRS))])
    assert compact.catch_up() == memory.catch_up() == 6
    everyone += ["late"]
    got = {u: compact.get(u) for u in everyone}
    assert got == {u: memory.get(u) for u in everyone}
    assert (got["user-1"], got["user-2"], got["victim"], got["user-4"]) == (revoked, Erased("user-2"), fixed, None)
    assert got["user-6"] is not None and compact.get("user-6") is got["user-6"]
    assert compact.corrupt == memory.corrupt == 3
    # user-1 lost a grant, user-2, user-4 (unreadable now: denied) and user-5 lost all of theirs
    for kind in ("compact", "memory"):
        assert views.metrics[kind].value("consentgate_revocation_enforcement_seconds_count") == 4


def test_the_kernel_reads_the_compact_views_table(views: Views) -> None:
    views.write([("u1", state("u1", 1, PAIRS))])
    raw = newer_schema_record(views, "u2", state("u2", 1, PAIRS))  # writers now use the newer schema
    views.write([("u2", raw)])
    compact, memory = views.views["compact"], views.views["memory"]
    compact.recover()
    memory.recover()
    table: Any = compact.kernel_lookup()
    assert type(table).__name__ == "ConsentTable" and len(table) == 2
    assert table.fallback == compact.get  # what the route calls for a user kept raw
    assert table.get("u2") == raw and isinstance(table.get("u1"), tuple)
    assert memory.kernel_lookup() == memory.get
