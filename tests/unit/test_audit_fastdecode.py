"""The compiled decoder gives exactly what the reference decoder gives, and hands it what it cannot read."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
from hypothesis import given, settings
from hypothesis import strategies as st
from consentgate.schemas.contracts import schema_json, schema_text
from consentgate.schemas.errors import UndecodableRecord

from consentgate.audit import columns
from consentgate.audit.fastdecode import REASONS, decoder_for
from consentgate.audit.findings import Finding

SCHEMA_ID = 7


class Record:
    """What the decoders read of a consumed Kafka record."""

    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "t.training.p"

    def partition(self) -> int:
        return self._offset % 3

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_000 + self._offset


class Registered:
    def __init__(self, text: str) -> None:
        self.schema_str = text


class Registry:
    def get_schema(self, schema_id: int) -> Registered:
        assert schema_id == SCHEMA_ID
        return Registered(self.text)

    text = ""


class ReferenceCodec:
    """Reads with fastavro, refusing trailing bytes, as a stand-in for the registry codec."""

    def __init__(self, contract: str) -> None:
        self.contract = contract
        self._client = Registry()
        self._client.text = schema_text(contract)
        self._schema = fastavro.parse_schema(schema_json(contract))

    def decode(self, data: bytes, topic: str, partition: int, offset: int) -> dict[str, Any]:
        buffer = io.BytesIO(data[5:])
        try:
            value = fastavro.schemaless_reader(buffer, self._schema, None, return_record_name=True)
            assert data[:5] == b"\0" + struct.pack(">I", SCHEMA_ID) and buffer.tell() == len(data) - 5
        except Exception as exc:
            raise UndecodableRecord(f"cannot decode: {exc!r}", raw=data, topic=topic, partition=partition,
                                    offset=offset) from exc
        assert isinstance(value, dict)
        return value


def encode(contract: str, value: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(b"\0" + struct.pack(">I", SCHEMA_ID))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema_json(contract)), value)
    return out.getvalue()


text = st.text(max_size=12)
longs = st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)
decisions = st.fixed_dictionaries({
    "event_id": text, "user_id": text, "category": text, "decided_at": longs,
    "outcomes": st.lists(st.fixed_dictionaries({"purpose": text, "passed": st.booleans(),
                                                "reason": st.one_of(st.none(), st.sampled_from(REASONS))}),
                         max_size=4),
    "consent_version": st.one_of(st.none(), longs),
    "input": st.fixed_dictionaries({"topic": text, "partition": st.integers(-(2 ** 31), 2 ** 31 - 1),
                                    "offset": longs})})
training = st.fixed_dictionaries({
    "pseudonym": text, "record_id": text, "key_id": text, "purpose": text, "category": text, "occurred_at": longs,
    "fields": st.dictionaries(text, st.one_of(text, st.floats(allow_nan=False)), max_size=3),
    "consent_version": longs})
contributions = st.fixed_dictionaries({
    "event_id": text, "purpose": text, "record_id": text, "key_id": text, "user_id": text, "category": text,
    "units": longs, "quality": st.one_of(st.none(), st.floats(allow_nan=False)),
    "fingerprint": st.one_of(st.none(), longs), "occurred_at": longs,
    "tier": st.sampled_from(["free", "data_sharing"]),
    "plan": st.one_of(st.none(), st.sampled_from(["per_unit", "revenue_share", "credits", "dividend"])),
    "receipt_id": text, "consent_version": longs})
changes = st.fixed_dictionaries({
    "receipt_id": text, "user_id": text, "action": st.sampled_from(["grant", "revoke", "erase", "tier", "gpc_opt_out"]),
    "category": st.one_of(st.none(), text), "purpose": st.one_of(st.none(), text), "at": longs, "source": text,
    "terms_version": st.one_of(st.none(), st.integers(-(2 ** 31), 2 ** 31 - 1)),
    "notice_version": st.one_of(st.none(), text), "jurisdiction": st.one_of(st.none(), text),
    "expires_at": st.one_of(st.none(), longs), "tier": st.one_of(st.none(), st.sampled_from(["free", "data_sharing"])),
    "plan": st.one_of(st.none(), st.sampled_from(["per_unit", "revenue_share", "credits", "dividend"])),
    "consent_version": longs, "issuer": st.one_of(st.none(), text), "subject": st.one_of(st.none(), text),
    "gpc": st.booleans(), "collection_method": st.one_of(st.none(), text)})
REFERENCE = {"ConsentChange": columns.changes, "Decision": columns.decisions,  # the reference decoders
            "TrainingRecord": columns.training, "Contribution": columns.contributions}


def both(contract: str, values: list[bytes]) -> tuple[list[str], list[str], list[Finding], list[Finding]]:
    codec = ReferenceCodec(contract)
    msgs = [Record(v, n) for n, v in enumerate(values)]
    fast = decoder_for(codec)  # type: ignore[arg-type]
    assert fast is not None
    fast_bad: list[Finding] = []
    slow_bad: list[Finding] = []
    got = fast(codec, msgs, fast_bad)  # type: ignore[arg-type]
    want = REFERENCE[contract](codec, msgs, slow_bad)  # type: ignore[arg-type]
    return rows(got), rows(want), fast_bad, slow_bad


def rows(table: Any) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True) for r in (table if isinstance(table, list) else table.to_pylist()))


def mangled(data: st.DataObject, values: list[bytes]) -> list[bytes]:
    """Some records cut short or given trailing bytes: both paths must refuse exactly those."""
    out = []
    for value in values:
        cut = data.draw(st.sampled_from(["keep", "keep", "short", "long"]))
        out.append(value[:-1] if cut == "short" else value + b"\0" if cut == "long" else value)
    return out


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([("Decision", decisions), ("TrainingRecord", training), ("Contribution", contributions),
                        ("ConsentChange", changes)]),
       st.data())
def test_compiled_decoding_equals_the_reference(case: tuple[str, Any], data: st.DataObject) -> None:
    contract, strategy = case
    values = mangled(data, [encode(contract, v) for v in data.draw(st.lists(strategy, max_size=12))])
    got, want, fast_bad, slow_bad = both(contract, values)
    assert got == want
    assert [f.where for f in fast_bad] == [f.where for f in slow_bad]


def test_an_unknown_schema_id_takes_the_reference_path() -> None:
    value = encode("Contribution", {
        "event_id": "e", "purpose": "p", "record_id": "r", "key_id": "k", "user_id": "u", "category": "post",
        "units": 1, "quality": None, "fingerprint": None, "occurred_at": 5, "tier": "free", "plan": None,
        "receipt_id": "x", "consent_version": 2})
    other = b"\0" + struct.pack(">I", 99) + value[5:]
    got, want, fast_bad, _ = both("Contribution", [value, other])
    assert got == want and len(got) == 1
    assert [f.where for f in fast_bad] == ["t.training.p[1]@1"]


class RefusingCodec(ReferenceCodec):
    """A codec whose own decoding fails the test: only the compiled path may read these records."""

    def decode(self, data: bytes, topic: str, partition: int, offset: int) -> dict[str, Any]:
        raise AssertionError(f"{self.contract} record {offset} left the compiled path")


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([("Decision", decisions), ("TrainingRecord", training), ("Contribution", contributions),
                        ("ConsentChange", changes)]),
       st.data())
def test_the_shipped_contracts_take_the_compiled_path(case: tuple[str, Any], data: st.DataObject) -> None:
    """Every record written with the shipped schema is decoded by the kernel (a contract that gains a field
    without the kernel's plan following would silently fall back to the reference path, ~100x slower)."""
    contract, strategy = case
    value = data.draw(strategy.filter(lambda v: all(-62135596800000 <= v.get(f, 0) <= 253402300799999
                                                    for f in ("decided_at", "occurred_at", "at", "expires_at")
                                                    if v.get(f) is not None)))
    codec = RefusingCodec(contract)
    fast = decoder_for(codec)  # type: ignore[arg-type]
    assert fast is not None
    bad: list[Finding] = []
    got = fast(codec, [Record(encode(contract, value), 0)], bad)  # type: ignore[arg-type]
    assert len(got) == 1 and bad == []
