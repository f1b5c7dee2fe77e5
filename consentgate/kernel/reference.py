"""A strict, pure-Python decoder of Confluent-framed ActivityEvent records: the kernel's reference.

fastavro reads more than the Avro specification allows (trailing bytes after the record,
varints longer than needed, a negative union index that silently selects the last branch).
This decoder accepts exactly the canonical encoding of the ActivityEvent contract and names
the first thing that is wrong, with its byte position. The compiled kernel mirrors it line
for line (same checks, same order, same messages); the fuzz test holds the two equal.

Checks after decoding (ids, payload branch, time) follow ``consentgate.schemas.records``.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from consentgate.kernel.errors import (
    InvalidIdentifier,
    MissingIdentifier,
    PayloadMismatch,
    UndecodableRecord,
)

from consentgate.identifiers import identifier_problem
from consentgate.schemas.contracts import NAMESPACE, PAYLOAD_BRANCH

# datetime's range (years 1..9999) in epoch milliseconds: what a timestamp-millis may hold
MIN_MILLIS = -62_135_596_800_000
MAX_MILLIS = 253_402_300_799_999
BRANCHES = ("PostPayload", "SearchPayload", "ConversationPayload", "ClickPayload", "SignalPayload",
            "GenericPayload")
_BRANCH_FIELDS: tuple[tuple[str, ...], ...] = (("text",), ("query",), ("text", "thread_id"), ("item_id", "url"),
                                               ("kind", "value"), ())
_unpack_double = struct.Struct("<d").unpack_from
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class DecodedEvent(NamedTuple):
    """An ActivityEvent as the kernel sees it: ``occurred_at`` in epoch milliseconds."""

    schema_id: int
    event_id: str
    user_id: str
    category: str
    occurred_at: int
    source: str
    branch: str  # short record name, e.g. "PostPayload"
    payload: dict[str, Any]


class _Malformed(Exception):
    def __init__(self, detail: str, position: int) -> None:
        super().__init__(f"cannot decode as ActivityEvent: {detail} at byte {position}")


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def long(self) -> int:
        data, start = self.data, self.pos
        value = shift = 0
        for i in range(10):
            if start + i >= len(data):
                raise _Malformed("truncated varint", start)
            byte = data[start + i]
            if i == 9 and byte > 1:
                raise _Malformed("varint longer than 64 bits", start)
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise _Malformed("overlong varint", start)
                self.pos = start + i + 1
                return (value >> 1) ^ -(value & 1)
        raise AssertionError("unreachable: the tenth byte ends the varint")

    def raw(self) -> bytes:
        start = self.pos
        n = self.long()
        if n < 0:
            raise _Malformed(f"negative length {n}", start)
        if n > len(self.data) - self.pos:
            raise _Malformed(f"length {n} past the end", start)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def string(self) -> str:
        start = self.pos
        raw = self.raw()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Malformed("invalid UTF-8", start) from exc

    def double(self) -> float:
        if len(self.data) - self.pos < 8:
            raise _Malformed("truncated double", self.pos)
        (value,) = _unpack_double(self.data, self.pos)
        self.pos += 8
        return float(value)

    def string_map(self) -> dict[str, str]:
        out: dict[str, str] = {}
        while True:
            start = self.pos
            count = self.long()
            if count == 0:
                return out
            block_end = None
            if count < 0:  # a negative count is followed by the block's size in bytes
                count = -count
                size_at = self.pos
                size = self.long()
                if size < 0:
                    raise _Malformed("negative map block size", size_at)
                block_end = self.pos + size
            if count * 2 > len(self.data) - self.pos:  # every entry holds at least two length bytes
                raise _Malformed(f"map block of {count} entries past the end", start)
            for _ in range(count):
                key = self.string()
                out[key] = self.string()
            if block_end is not None and self.pos != block_end:
                raise _Malformed("map block size does not match its entries", start)


def decode_activity(data: bytes) -> DecodedEvent:
    """Decode one framed ActivityEvent strictly; raises ``UndecodableRecord`` naming the defect."""
    try:
        if len(data) < 5 or data[0] != 0:
            raise _Malformed("not Confluent-framed (no magic byte 0 and 4-byte schema id)", 0)
        schema_id = int.from_bytes(data[1:5], "big")
        reader = _Reader(data, 5)
        event_id = reader.string()
        user_id = reader.string()
        category = reader.string()
        at = reader.pos
        occurred_at = reader.long()
        if not MIN_MILLIS <= occurred_at <= MAX_MILLIS:
            raise _Malformed(f"timestamp {occurred_at} outside years 1..9999", at)
        source = reader.string()
        at = reader.pos
        index = reader.long()
        if not 0 <= index < len(BRANCHES):
            raise _Malformed(f"payload union index {index} out of range", at)
        payload: dict[str, Any]
        if index == 5:
            payload = reader.string_map()
        elif index == 4:
            payload = {"kind": reader.string(), "value": reader.double()}
        else:
            payload = {name: reader.string() for name in _BRANCH_FIELDS[index]}
        if reader.pos != len(data):
            raise _Malformed(f"{len(data) - reader.pos} trailing bytes", reader.pos)
    except _Malformed as exc:
        raise UndecodableRecord(str(exc), raw=data) from None
    return DecodedEvent(schema_id, event_id, user_id, category, occurred_at, source, BRANCHES[index], payload)


def check_event(event: DecodedEvent) -> None:
    """The contract checks of ``schemas.records.activity_from_avro``, in its order and with its messages."""
    if not event.event_id or not event.user_id:
        missing = "event_id" if not event.event_id else "user_id"
        raise MissingIdentifier(f"record has an empty {missing}")
    for name, value in (("event_id", event.event_id), ("user_id", event.user_id), ("category", event.category)):
        problem = identifier_problem(value)
        if problem is not None:
            raise InvalidIdentifier(f"{name} {problem}")
    expected = PAYLOAD_BRANCH.get(event.category)
    if expected is not None and expected != f"{NAMESPACE}.{event.branch}":
        raise PayloadMismatch(f"category {event.category!r} needs payload {expected.rsplit('.', 1)[1]}, "
                              f"got {event.branch}")


def as_fastavro(event: DecodedEvent) -> dict[str, Any]:
    """The dict fastavro returns for the same bytes (``return_record_name=True``), for comparisons."""
    occurred = _EPOCH + timedelta(milliseconds=event.occurred_at)
    body: dict[str, Any] = {"fields": event.payload} if event.branch == "GenericPayload" else dict(event.payload)
    return {"event_id": event.event_id, "user_id": event.user_id, "category": event.category,
            "occurred_at": occurred, "source": event.source, "payload": (f"{NAMESPACE}.{event.branch}", body)}


__all__ = ["BRANCHES", "DecodedEvent", "as_fastavro", "check_event", "decode_activity"]
