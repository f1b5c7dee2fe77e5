"""Mutated ActivityEvent records through the compiled decoder and both Python ones: no crash, the same
accept/reject, the same error class and message, the same decoded record.

Three decoders: the kernel's (Rust), the kernel's strict Python reference (``consentgate.kernel.reference``,
which it must match message for message), and the gate's own path (``schemas.strict`` checker + fastavro +
``schemas.records.activity_from_avro``, which it must match in outcome, error class and value).
The default run sends 200,000 mutants; ``pytest -m fuzz`` sends 1,000,000.
"""

from __future__ import annotations

import io
import random
import struct
from collections import Counter
from typing import Any

import fastavro
import pytest
from consentgate.kernel.reference import as_fastavro, check_event, decode_activity
from consentgate.schemas.contracts import schema_json
from consentgate.schemas.errors import RecordError
from consentgate.schemas.records import activity_from_avro
from consentgate.schemas.strict import StrictDecodeError, compile_checker

from tests.unit.kernel_cases import NOW_MS, encode_event, fail_unless_built, requires_kernel

pytestmark = requires_kernel
_SCHEMA = fastavro.parse_schema(schema_json("ActivityEvent"))
_CHECK = compile_checker(schema_json("ActivityEvent"))
SPECIAL_BYTES = (0x00, 0x01, 0x02, 0x7F, 0x80, 0x81, 0xC0, 0xED, 0xF4, 0xFF, 0x0B, 0x0C)


def seeds() -> list[bytes]:
    rng = random.Random(7)
    texts = ["hello world", "ΣΑΣ ΟΔΟΣ", "İ", "", "click here now", "x" * 70, "😀 \u200d e\u0301"]
    out = []
    for i in range(60):
        category, branch, body = rng.choice([
            ("post", "PostPayload", {"text": rng.choice(texts)}),
            ("search", "SearchPayload", {"query": rng.choice(texts)}),
            ("conversation", "ConversationPayload", {"text": rng.choice(texts), "thread_id": "t"}),
            ("click", "ClickPayload", {"item_id": "i-1", "url": "https://x"}),
            ("signal", "SignalPayload", {"kind": "dwell_ms", "value": rng.choice([1.5, -0.0, float("nan"), 1e308])}),
            ("video", "GenericPayload", {"fields": {"text": rng.choice(texts), "k": "v"}}),
            ("post", "SearchPayload", {"query": "mismatch"}),
        ])
        out.append(encode_event({"event_id": f"e-{i}", "user_id": rng.choice(["u", "ü", "u" * 199]),
                                 "category": category, "occurred_at": NOW_MS + rng.randint(-10**12, 10**9),
                                 "source": "web", "payload": (f"io.consentgate.v1.{branch}", body)}))
    # blocks with a negative count and a byte size (allowed by the spec), right and wrong
    generic = bytearray(encode_event({"event_id": "e", "user_id": "u", "category": "video", "occurred_at": 0,
                                      "source": "s", "payload": ("io.consentgate.v1.GenericPayload", {"fields": {}})}))
    out.append(bytes(generic[:-1]) + b"\x01\x08\x02a\x04bc\x00")  # -1 entries, 4 bytes: "a" -> "bc"
    out.append(bytes(generic[:-1]) + b"\x01\x0a\x02a\x04bc\x00")  # declares 5 bytes
    return out


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(8)
        at = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[at] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[at] = rng.choice(SPECIAL_BYTES)
        elif op == 2:
            b.insert(at, rng.choice(SPECIAL_BYTES))
        elif op == 3 and b:
            del b[at]
        elif op == 4:
            del b[rng.randrange(len(b) + 1):]
        elif op == 5:
            b += bytes(rng.choice(SPECIAL_BYTES) for _ in range(rng.randrange(1, 4)))
        elif op == 6 and len(b) > 6:
            b[at:at] = b"\x80"  # a redundant continuation group: an overlong varint where it lands on one
        elif op == 7:
            b[at:at] = struct.pack("<d", rng.random())
    if rng.randrange(20) == 0:
        b[0:5] = b"\x00\x00\x00\x00\x07"  # keep the frame, so the body's defects are reached
    return bytes(b)


def reference(data: bytes) -> tuple[str, Any]:
    try:
        event = decode_activity(data)
        check_event(event)
    except RecordError as exc:
        return type(exc).__name__, str(exc)
    return "ok", (event.schema_id, event.event_id, event.user_id, event.category, event.occurred_at, event.source,
                  event.branch, list(event.payload.items()))


def gate_path(data: bytes) -> tuple[str, Any]:
    """The gate's own decoding (codec.decode without the registry) and contract checks."""
    if len(data) < 5 or data[0] != 0:
        return "UndecodableRecord", None
    try:
        _CHECK(data, 5)
        value = fastavro.schemaless_reader(io.BytesIO(data[5:]), _SCHEMA, None, return_record_name=True)
    except StrictDecodeError:
        return "UndecodableRecord", None
    except Exception:  # fastavro's own failures (e.g. a time outside datetime's range)
        return "UndecodableRecord", None
    try:
        activity_from_avro(value)
    except RecordError as exc:
        return type(exc).__name__, None
    return "ok", value


def same_value(a: Any, b: Any) -> bool:
    """Equality that holds NaN equal to itself (doubles compared by their bytes)."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return bool(a == b)


def fuzz(records: int, gate_every: int) -> Counter[str]:
    fail_unless_built()
    from consentgate import _kernel  # type: ignore[attr-defined]
    rng = random.Random(20261128)
    base = seeds()
    outcomes: Counter[str] = Counter()
    for start in range(0, records, 10_000):
        batch = [mutate(rng, rng.choice(base)) for _ in range(min(10_000, records - start))]
        for i, (data, native) in enumerate(zip(batch, _kernel.decode_many(batch))):
            expected = reference(data)
            assert native[0] == expected[0] and same_value(native[1], expected[1]), data
            outcomes[native[0]] += 1
            if i % gate_every == 0:
                gate = gate_path(data)
                assert gate[0] == native[0], (data, gate, native)
                if gate[0] == "ok":
                    event = decode_activity(data)
                    assert same_value(gate[1], as_fastavro(event)), data
    return outcomes


def test_two_hundred_thousand_mutants_decode_alike() -> None:
    outcomes = fuzz(200_000, gate_every=10)
    assert sum(outcomes.values()) == 200_000
    # the mutants reach every rejection and still decode often enough to compare values
    assert {"ok", "UndecodableRecord", "PayloadMismatch", "InvalidIdentifier"} <= set(outcomes)
    assert outcomes["ok"] > 10_000


@pytest.mark.fuzz
def test_a_million_mutants_decode_alike() -> None:
    outcomes = fuzz(1_000_000, gate_every=10)
    assert sum(outcomes.values()) == 1_000_000
