from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from consentgate.connectors.jsonl import JsonLineError, activity_from_json, to_jsonable

from consentgate.model import ActivityEvent


def line(**overrides: object) -> str:
    base: dict[str, object] = {"event_id": "e1", "user_id": "u1", "category": "post",
                               "occurred_at": "2026-11-27T10:00:00+01:00", "source": "web",
                               "payload": {"text": "hi"}}
    base.update(overrides)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def test_parses_iso_with_offset_and_epoch_millis() -> None:
    assert activity_from_json(line()) == ActivityEvent(
        "e1", "u1", "post", datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc), "web", {"text": "hi"})
    assert activity_from_json(line(occurred_at=1_000)).occurred_at == datetime(1970, 1, 1, 0, 0, 1,
                                                                               tzinfo=timezone.utc)
    sig = activity_from_json(line(category="signal", payload={"kind": "dwell_ms", "value": 5}))
    assert sig.payload == {"kind": "dwell_ms", "value": 5.0}
    other = activity_from_json(line(category="voice", payload={"transcript": "jazz"}))
    assert other.payload == {"transcript": "jazz"}


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not JSON: Expecting property name enclosed in double quotes at column 2"),
    ("[1]", "not a JSON object"),
    (line(user_id=...), "missing user_id"),
    (line(event_id=""), "event_id must be a non-empty string"),
    (line(occurred_at="2026-11-27T10:00:00"), "occurred_at '2026-11-27T10:00:00' has no UTC offset"),
    (line(occurred_at="yesterday"), "occurred_at 'yesterday' is not ISO-8601"),
    (line(occurred_at=True), "occurred_at must be ISO-8601 with offset or epoch milliseconds"),
    (line(payload="hi"), "payload must be an object"),
    (line(category="click", payload={"item_id": "i"}), "payload.url is required for category 'click'"),
    (line(payload={"text": "hi", "ssn": "1"}), "payload has fields not in category 'post': ssn"),
    (line(category="signal", payload={"kind": "k", "value": True}), "payload.value is required for category "
                                                                     "'signal'"),
    (line(category="voice", payload={"n": 1}), "payload of category 'voice' must map names to strings; n are "
                                               "not strings"),
])
def test_bad_lines_say_why(text: str, message: str) -> None:
    with pytest.raises(JsonLineError) as info:
        activity_from_json(text)
    assert str(info.value) == message


def test_to_jsonable_flattens_payload_branches_and_times() -> None:
    decoded = {"occurred_at": datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=timezone.utc),
               "payload": ("io.consentgate.v1.GenericPayload", {"fields": {"a": "b"}}),
               "raw": b"\x00\x01", "items": [("io.consentgate.v1.PostPayload", {"text": "t"})]}
    assert to_jsonable(decoded) == {"occurred_at": "2026-01-02T03:04:05.006Z", "payload": {"a": "b"},
                                    "raw": "AAE=", "items": [{"text": "t"}]}
