"""The JSON shapes of SPEC §6: ActivityEvents read from JSON lines, any record printed as JSON."""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from consentgate.schemas.errors import InvalidRecord

from consentgate.model import ActivityEvent

# Fields each built-in category's payload must carry, with their JSON types.
PAYLOAD_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "post": {"text": str},
    "search": {"query": str},
    "conversation": {"text": str, "thread_id": str},
    "click": {"item_id": str, "url": str},
    "signal": {"kind": str, "value": (int, float)},
}
_REQUIRED = ("event_id", "user_id", "category", "occurred_at", "source", "payload")


class JsonLineError(InvalidRecord):
    """A JSON line is not a valid ActivityEvent."""


def parse_time(value: Any, name: str) -> datetime:
    """ISO-8601 with an offset, or epoch milliseconds, as an aware UTC datetime."""
    if isinstance(value, bool):
        raise JsonLineError(f"{name} must be ISO-8601 with offset or epoch milliseconds")
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
        except (OverflowError, OSError, ValueError) as exc:
            raise JsonLineError(f"{name} {value} is out of range") from exc
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise JsonLineError(f"{name} {value!r} is not ISO-8601") from exc
        if parsed.tzinfo is None:
            raise JsonLineError(f"{name} {value!r} has no UTC offset")
        return parsed.astimezone(timezone.utc)
    raise JsonLineError(f"{name} must be ISO-8601 with offset or epoch milliseconds")


def activity_from_json(line: str) -> ActivityEvent:
    """Parse one JSON line into an ActivityEvent, or raise JsonLineError saying why."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise JsonLineError(f"not JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(obj, dict):
        raise JsonLineError("not a JSON object")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise JsonLineError(f"missing {', '.join(missing)}")
    for key in ("event_id", "user_id", "category", "source"):
        if not isinstance(obj[key], str) or not obj[key]:
            raise JsonLineError(f"{key} must be a non-empty string")
    payload = obj["payload"]
    if not isinstance(payload, dict):
        raise JsonLineError("payload must be an object")
    fields = PAYLOAD_FIELDS.get(obj["category"])
    if fields is None:
        bad = [k for k, v in payload.items() if not isinstance(v, str)]
        if bad:
            raise JsonLineError(f"payload of category {obj['category']!r} must map names to strings; "
                                f"{', '.join(bad)} are not strings")
        clean: dict[str, Any] = dict(payload)
    else:
        clean = {}
        for name, kind in fields.items():
            value = payload.get(name)
            if value is None or not isinstance(value, kind) or isinstance(value, bool):
                raise JsonLineError(f"payload.{name} is required for category {obj['category']!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise JsonLineError(f"payload.{name} must be finite")
            clean[name] = float(value) if kind == (int, float) else value  # type: ignore[arg-type]
        extra = sorted(set(payload) - set(fields))
        if extra:
            raise JsonLineError(f"payload has fields not in category {obj['category']!r}: {', '.join(extra)}")
    return ActivityEvent(obj["event_id"], obj["user_id"], obj["category"],
                         parse_time(obj["occurred_at"], "occurred_at"), obj["source"], clean)


def to_jsonable(value: Any) -> Any:
    """Decoded Avro (with record names) to JSON: ISO times, base64 bytes, flat payloads."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        branch, body = value
        if branch.endswith(".GenericPayload"):
            return to_jsonable(body["fields"])
        return to_jsonable(body)
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, Enum):
        return value.value
    return value
