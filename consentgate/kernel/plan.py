"""Which output fields the kernel writes, read from the registered writer schemas.

The kernel encodes each output field from a fixed source (the Decision's ``outcomes``, the
Contribution's ``quality``, ...), in the order the registered schema lists them. This module
checks every field of a registered schema against the type the kernel writes for that name; a
schema with a field the kernel does not know, or with a different type, is refused
(``UnsupportedSchema``) and the caller keeps the Python encoders. So the kernel never writes
bytes that do not fit the schema the topic has registered.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from consentgate.errors import ConsentGateError


class UnsupportedSchema(ConsentGateError):
    """A registered output schema has a field the kernel cannot write."""


_TS = {"type": "long", "logicalType": "timestamp-millis"}
_TIER = {"type": "enum", "name": "Tier", "symbols": ["free", "data_sharing"]}
_PLAN = ["null", {"type": "enum", "name": "Plan", "symbols": ["per_unit", "revenue_share", "credits", "dividend"]}]
_REASON = ["null", {"type": "enum", "name": "DropReason", "symbols": [
    "no_consent_record", "erased", "no_grant", "grant_after_event", "expired", "stale_terms", "unknown_category"]}]
_OUTCOMES = {"type": "array", "items": {"type": "record", "name": "Outcome", "fields": [
    {"name": "purpose", "type": "string"}, {"name": "passed", "type": "boolean"},
    {"name": "reason", "type": _REASON}]}}
_INPUT = {"type": "record", "name": "InputCoordinates", "fields": [
    {"name": "topic", "type": "string"}, {"name": "partition", "type": "int"}, {"name": "offset", "type": "long"}]}

# contract -> field name -> the (normalised) type the kernel writes for it
EXPECTED: dict[str, dict[str, Any]] = {
    "Decision": {"event_id": "string", "user_id": "string", "category": "string", "decided_at": _TS,
                 "outcomes": _OUTCOMES, "consent_version": ["null", "long"], "input": _INPUT},
    "TrainingRecord": {"pseudonym": "string", "record_id": "string", "key_id": "string", "event_id": "string",
                       "purpose": "string", "category": "string", "occurred_at": _TS,
                       "fields": {"type": "map", "values": ["string", "double"]}, "receipt_id": "string",
                       "consent_version": "long"},
    "Contribution": {"event_id": "string", "record_id": "string", "key_id": "string", "purpose": "string",
                     "user_id": "string", "category": "string", "units": "long", "quality": ["null", "double"],
                     "fingerprint": ["null", "long"], "occurred_at": _TS, "tier": _TIER, "plan": _PLAN,
                     "receipt_id": "string", "consent_version": "long"},
    "DeadLetter": {"key": ["null", "bytes"], "value": ["null", "bytes"], "value_length": ["null", "long"],
                   "value_sha256": ["null", "string"], "truncated": "boolean", "topic": "string", "partition": "int",
                   "offset": "long", "timestamp": ["null", _TS], "error_class": "string", "message": "string",
                   "failed_at": _TS, "worker": "string"},
}
_KEPT = ("type", "name", "symbols", "items", "values", "fields", "logicalType")


def normalise(schema: Any) -> Any:
    """Drop what does not change the bytes (docs, defaults, tags, namespaces)."""
    if isinstance(schema, list):
        return [normalise(s) for s in schema]
    if isinstance(schema, dict):
        out = {k: schema[k] for k in _KEPT if k in schema}
        if "name" in out:
            out["name"] = str(out["name"]).rsplit(".", 1)[-1]
        if out.get("type") != "record" and set(out) == {"type"}:
            return normalise(out["type"])
        if "fields" in out:
            out["fields"] = [{"name": f["name"], "type": normalise(f["type"])} for f in out["fields"]]
        for key in ("items", "values", "type"):
            if key in out and not isinstance(out[key], str):
                out[key] = normalise(out[key])
        return out
    return schema


class OutputPlan(NamedTuple):
    """One output topic as the kernel writes it."""

    topic: str
    contract: str
    fields: tuple[str, ...]  # field names in schema order
    header: bytes  # Confluent framing: magic byte 0 + the registered schema id


def plan_output(topic: str, contract: str, schema: dict[str, Any], header: bytes) -> OutputPlan:
    """Check ``schema`` (JSON form) field by field; raise ``UnsupportedSchema`` where the kernel would differ."""
    expected = EXPECTED.get(contract)
    if expected is None:
        raise UnsupportedSchema(f"the kernel writes no {contract}")
    if schema.get("type") != "record" or str(schema.get("name", "")).rsplit(".", 1)[-1] != contract:
        raise UnsupportedSchema(f"schema of {topic} is not the {contract} record")
    names = []
    for field in schema["fields"]:
        name = field["name"]
        if name not in expected:
            raise UnsupportedSchema(f"{contract} on {topic} has a field the kernel does not write: {name}")
        if normalise(field["type"]) != expected[name]:
            raise UnsupportedSchema(f"{contract}.{name} on {topic} has a type the kernel does not write")
        names.append(name)
    return OutputPlan(topic, contract, tuple(names), header)
