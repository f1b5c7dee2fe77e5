"""The compiled encoders write exactly the bytes fastavro writes, for every contract."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from typing import Any

import fastavro
import pytest
from consentgate.schemas.contracts import CONTRACTS, schema_json
from consentgate.schemas.fastwrite import compile_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc))
longs = st.integers(-2**63, 2**63 - 1)


def strategy(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    if isinstance(schema, list):
        return st.one_of(*[strategy(b, named) for b in schema])
    if isinstance(schema, str):
        simple = {"null": st.none(), "string": st.text(max_size=20), "long": longs, "int": st.integers(-2**31, 2**31 - 1),
                  "boolean": st.booleans(), "double": st.floats(allow_nan=False), "bytes": st.binary(max_size=20)}
        return simple[schema] if schema in simple else named[schema]
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return times | st.integers(0, 2**41)
    if kind == "record":
        fields = {f["name"]: strategy(f["type"], named) for f in schema["fields"]}
        named[schema["name"]] = named[schema["name"].rsplit(".", 1)[-1]] = st.fixed_dictionaries(fields)
        return named[schema["name"]]
    if kind == "enum":
        named[schema["name"]] = st.sampled_from(schema["symbols"])
        return named[schema["name"]]
    if kind == "array":
        return st.lists(strategy(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), strategy(schema["values"], named), max_size=4)
    return strategy(kind, named)


OUTPUTS = [c for c in CONTRACTS if c != "ActivityEvent"]  # ActivityEvent has a union of records: fastavro writes it


@pytest.mark.parametrize("contract", OUTPUTS)
def test_compiled_writer_matches_fastavro(contract: str) -> None:
    schema = schema_json(contract)
    parsed = fastavro.parse_schema(schema_json(contract))
    encode = compile_writer(schema, b"\x00\x00\x00\x00\x07")
    assert encode is not None

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(strategy(schema_json(contract), {}))
    def check(value: dict[str, Any]) -> None:
        expected = io.BytesIO()
        fastavro.schemaless_writer(expected, parsed, value)
        assert encode(value) == b"\x00\x00\x00\x00\x07" + expected.getvalue()

    check()


def test_unsupported_schemas_fall_back() -> None:
    assert compile_writer(schema_json("ActivityEvent")) is None  # a union of several records
    assert compile_writer({"type": "record", "name": "R", "fields": [
        {"name": "d", "type": {"type": "int", "logicalType": "date"}}]}) is None


def test_bad_values_raise() -> None:
    encode = compile_writer(schema_json("Contribution"))
    assert encode is not None
    with pytest.raises(KeyError):
        encode({"event_id": "e"})
    with pytest.raises(TypeError):
        compile_writer({"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]})({"n": "1"})  # type: ignore[misc]


def test_fields_with_defaults_may_be_left_out_as_fastavro_allows() -> None:
    """A writer that predates an evolved contract leaves out the fields added with defaults."""
    schema = schema_json("ConsentChange")
    defaulted = [f["name"] for f in schema["fields"] if "default" in f]
    assert {"issuer", "subject", "gpc", "collection_method"} <= set(defaulted)
    value = {"receipt_id": "r1", "user_id": "u1", "action": "grant", "category": "post",
             "purpose": "train_ai_system.generative", "at": 1_700_000_000_000, "source": "cli", "terms_version": 2,
             "notice_version": None, "jurisdiction": None, "expires_at": None, "tier": None, "plan": None,
             "consent_version": 1}
    value = {k: v for k, v in value.items() if k not in defaulted}
    encode = compile_writer(schema)
    assert encode is not None
    reference = io.BytesIO()
    fastavro.schemaless_writer(reference, fastavro.parse_schema(schema), value)
    assert encode(value) == reference.getvalue()
    required = next(f["name"] for f in schema["fields"] if "default" not in f)
    with pytest.raises(KeyError):  # a field without a default is still required
        encode({k: v for k, v in value.items() if k != required})
