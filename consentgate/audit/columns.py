"""Decoded records as Arrow columns, one table shape per contract (the reference decoder).

Every record goes through the project's codecs (``consentgate.schemas``), so any writer
schema the registry knows is read. A record that cannot be decoded becomes an
``unreadable`` finding with its coordinates; it is never skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
from confluent_kafka import Message
from consentgate.schemas.codec import Codec
from consentgate.schemas.errors import RecordError

from consentgate.audit.findings import Finding, Kind
from consentgate.audit.history import Change

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)
RAW_ID_FIELDS = ("event_id", "user_id", "receipt_id")

OUTCOME = pa.struct([("purpose", pa.string()), ("passed", pa.bool_()), ("reason", pa.string())])
DECISIONS = pa.schema([
    ("event_id", pa.string()), ("user_id", pa.string()), ("category", pa.string()), ("decided_at", pa.int64()),
    ("consent_version", pa.int64()), ("in_topic", pa.string()), ("in_partition", pa.int32()),
    ("in_offset", pa.int64()), ("outcomes", pa.list_(OUTCOME)),
    ("part", pa.int32()), ("off", pa.int64()), ("ts", pa.int64())])
TRAINING = pa.schema([
    ("pseudonym", pa.string()), ("record_id", pa.string()), ("key_id", pa.string()), ("purpose", pa.string()),
    ("category", pa.string()), ("occurred_at", pa.int64()), ("consent_version", pa.int64()),
    ("field_names", pa.list_(pa.string())),
    ("field_values", pa.list_(pa.string())),  # the string values (a raw id would be one)
    ("raw_fields", pa.list_(pa.string())), ("topic", pa.string()),
    ("part", pa.int32()), ("off", pa.int64()), ("ts", pa.int64())])
CONTRIBUTIONS = pa.schema([
    ("event_id", pa.string()), ("purpose", pa.string()), ("user_id", pa.string()), ("category", pa.string()),
    ("occurred_at", pa.int64()), ("consent_version", pa.int64()), ("units", pa.int64()),
    ("record_id", pa.string()), ("key_id", pa.string()),
    ("part", pa.int32()), ("off", pa.int64()), ("ts", pa.int64())])
DEAD_LETTERS = pa.schema([
    ("in_topic", pa.string()), ("in_partition", pa.int32()), ("in_offset", pa.int64()),
    ("error_class", pa.string()), ("part", pa.int32()), ("off", pa.int64()), ("ts", pa.int64())])
RETRACTIONS = pa.schema([
    ("pseudonym", pa.string()), ("key_id", pa.string()), ("purpose", pa.string()), ("sink_topic", pa.string()),
    ("requested_at", pa.int64()), ("consent_version", pa.int64()), ("receipt_id", pa.string()),
    ("part", pa.int32()), ("off", pa.int64()), ("ts", pa.int64())])


def ms(value: Any) -> int | None:
    """Epoch milliseconds of a decoded timestamp-millis (a datetime) or None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value - EPOCH) // MS
    return int(value)


def where(msg: Message) -> str:
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def _decoded(codec: Codec, msgs: list[Message], unreadable: list[Finding]) -> list[tuple[Message, dict[str, Any]]]:
    out: list[tuple[Message, dict[str, Any]]] = []
    for msg in msgs:
        value = msg.value()
        if value is None:
            unreadable.append(Finding(Kind.UNREADABLE.value, None, None, "a record without a value", where(msg)))
            continue
        try:
            out.append((msg, codec.decode(value, msg.topic() or "", msg.partition() or 0, msg.offset() or 0)))
        except RecordError as exc:
            unreadable.append(Finding(Kind.UNREADABLE.value, None, None, f"{type(exc).__name__}: {exc}", where(msg)))
    return out


def _coords(msg: Message) -> tuple[int, int, int]:
    return msg.partition() or 0, msg.offset() or 0, msg.timestamp()[1]


def _table(schema: pa.Schema, rows: list[tuple[Any, ...]]) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(columns, schema)], schema=schema)


def decisions(codec: Codec, msgs: list[Message], unreadable: list[Finding]) -> pa.Table:
    rows = []
    for msg, d in _decoded(codec, msgs, unreadable):
        coords = d["input"]
        rows.append((d["event_id"], d["user_id"], d["category"], ms(d["decided_at"]), d["consent_version"],
                     coords["topic"], coords["partition"], coords["offset"],
                     [{"purpose": o["purpose"], "passed": o["passed"], "reason": o["reason"]} for o in d["outcomes"]],
                     *_coords(msg)))
    return _table(DECISIONS, rows)


def training(codec: Codec, msgs: list[Message], unreadable: list[Finding]) -> pa.Table:
    rows = []
    for msg, t in _decoded(codec, msgs, unreadable):
        fields = t.get("fields") or {}
        rows.append((t["pseudonym"], t.get("record_id"), t.get("key_id"), t["purpose"], t["category"],
                     ms(t["occurred_at"]), t["consent_version"], list(fields),
                     [v for v in fields.values() if isinstance(v, str)],
                     [name for name in RAW_ID_FIELDS if t.get(name)], msg.topic(), *_coords(msg)))
    return _table(TRAINING, rows)


def contributions(codec: Codec, msgs: list[Message], unreadable: list[Finding]) -> pa.Table:
    rows = [(c["event_id"], c["purpose"], c["user_id"], c["category"], ms(c["occurred_at"]), c["consent_version"],
             c["units"], c.get("record_id"), c.get("key_id"), *_coords(msg))
            for msg, c in _decoded(codec, msgs, unreadable)]
    return _table(CONTRIBUTIONS, rows)


def dead_letters(codec: Codec, msgs: list[Message], unreadable: list[Finding]) -> pa.Table:
    rows = [(d["topic"], d["partition"], d["offset"], d["error_class"], *_coords(msg))
            for msg, d in _decoded(codec, msgs, unreadable)]
    return _table(DEAD_LETTERS, rows)


def retractions(codec: Codec, msgs: list[Message], unreadable: list[Finding]) -> pa.Table:
    rows = [(r["pseudonym"], r.get("key_id"), r["purpose"], r["sink_topic"], ms(r["requested_at"]),
             r.get("consent_version"), r.get("receipt_id"), *_coords(msg))
            for msg, r in _decoded(codec, msgs, unreadable)]
    return _table(RETRACTIONS, rows)


def changes(codec: Codec, msgs: list[Message], unreadable: list[Finding]) -> list[Change]:
    return [Change(c["user_id"], c["consent_version"], c["action"], c["category"], c["purpose"], ms(c["at"]) or 0,
                   ms(c["expires_at"]), c["terms_version"], c["receipt_id"], msg.timestamp()[1], where(msg))
            for msg, c in _decoded(codec, msgs, unreadable)]


Decoder = Callable[[Codec, list[Message], list[Finding]], pa.Table]
