from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentgate.catalog import load_catalog
from consentgate.quality import Assessment, assess, distance, simhash
from consentgate.valuation import (
    DuplicateIndex,
    identifier_rejection,
    next_period,
    parse_period,
    period_of,
    rate_micros,
    rejection,
    split,
    value,
    weigh,
)

CATALOG = load_catalog()
GEN, REC = "train_ai_system.generative", "train_ai_system.recommendation"


def record(**over: Any) -> dict[str, Any]:
    base = {"event_id": "e1", "purpose": GEN, "user_id": "u1", "category": "post", "units": 1, "quality": 0.5,
            "fingerprint": 7, "tier": "data_sharing", "plan": "per_unit", "receipt_id": "r", "consent_version": 1,
            "record_id": "0f" * 16, "key_id": "k0123456789a"}
    base.update(over)
    return base


def test_quality_from_content() -> None:
    assert assess("post", {"text": "I finally finished the long hike up the ridge this morning"}).quality == 0.875  # 11/12 x (0.5 + 0.5 x 10/11)
    assert assess("post", {"text": "six words about a quiet evening"}).quality == 0.5
    assert assess("post", {"text": "buy buy buy buy"}).quality == 0.208  # 4/12 length x 0.625 information
    assert assess("post", {"text": "CLICK HERE for free money today friends"}).quality == 0.0
    assert assess("post", {"text": "WOW THIS IS AMAZING LOOK AT IT EVERYONE NOW AND TELL FRIENDS"}).quality == 0.75
    assert assess("search", {"query": "tide tables"}).quality == 0.667
    assert assess("conversation", {"text": "!!!"}) == Assessment(0.0, None)
    assert assess("click", {"item_id": "i", "url": "u"}) == Assessment(1.0, None)
    assert assess("signal", {"kind": "dwell", "value": 3.0}) == Assessment(1.0, None)


def test_fingerprint_ignores_case_punctuation_and_order() -> None:
    a = assess("post", {"text": "The tide is high, and the moon is full."}).fingerprint
    assert a is not None
    assert assess("post", {"text": "the TIDE is high and the moon is full"}).fingerprint == a
    assert assess("post", {"text": "full is moon the and high is tide the"}).fingerprint == a
    other = assess("post", {"text": "a completely different sentence about trains"}).fingerprint
    assert other is not None and distance(a, other) > 3


@given(st.lists(st.sampled_from(["a", "b", "cc", "ddd", "e", "ff", "g"]), min_size=1, max_size=40))
def test_simhash_matches_the_textbook_definition(words: list[str]) -> None:
    from hashlib import blake2b

    counts = [0] * 64
    for w in words:
        h = int.from_bytes(blake2b(w.encode(), digest_size=8).digest(), "little")
        for bit in range(64):
            counts[bit] += (h >> bit) & 1
    expected = sum(1 << bit for bit in range(64) if 2 * counts[bit] > len(words))
    assert simhash(words) == (expected - (1 << 64) if expected >= 1 << 63 else expected)


def test_value_units_rate_quality() -> None:
    assert rate_micros(CATALOG, GEN, "post") == 5000
    assert value(CATALOG, record(units=3, quality=0.5), duplicate=False) == (0.5, False, 5000, 1500, 7500)
    assert value(CATALOG, record(quality=None), duplicate=False).value_micros == 5000
    assert value(CATALOG, record(), duplicate=True).value_micros == 0
    free = value(CATALOG, record(tier="free", plan=None), duplicate=False)
    assert (free.weight_milli, free.value_micros) == (0, 0)


@pytest.mark.parametrize(("over", "reason"), [
    ({"purpose": "train_ai_system.surveillance"}, "unknown purpose 'train_ai_system.surveillance'"),
    ({"category": "click"}, "purpose 'train_ai_system.generative' does not use category 'click'"),
    ({"units": 0}, "units 0 outside 1..10000"),
    ({"units": -4}, "units -4 outside 1..10000"),
    ({"units": 10**12}, "units 1000000000000 outside 1..10000"),
    ({"quality": 1.5}, "quality 1.5 outside 0..1"),
    ({"plan": None}, "a data_sharing contribution without a plan"),
    ({"user_id": ""}, "empty event_id or user_id"),
])
def test_rejections(over: dict[str, Any], reason: str) -> None:
    assert rejection(CATALOG, record(**over), 10_000) == reason


def test_accepted_records() -> None:
    assert rejection(CATALOG, record(), 10_000) is None
    assert rejection(CATALOG, record(tier="free", plan=None), 10_000) is None


def test_periods() -> None:
    assert period_of(datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc)) == "2026-12"
    assert next_period("2026-12") == "2027-01" and next_period("2026-01") == "2026-02"
    assert parse_period("2026-11") == "2026-11"
    for bad in ("2026-13", "2026-1", "26-11", "2026/11", "2026-00"):
        with pytest.raises(ValueError, match="is not YYYY-MM"):
            parse_period(bad)


def test_split_largest_remainder() -> None:
    assert split(100, {"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}
    assert split(10, {"a": 3, "b": 3, "c": 4}) == {"a": 3, "b": 3, "c": 4}
    assert split(1, {"b": 5, "a": 5}) == {"a": 1, "b": 0}
    assert split(7, {"x": 1}) == {"x": 7}
    with pytest.raises(ValueError):
        split(5, {"a": 0})


@given(st.integers(0, 10**12), st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 10**9),
                                                min_size=1, max_size=60).filter(lambda w: sum(w.values()) > 0))
def test_split_sums_exactly_and_is_fair(amount: int, weights: dict[str, int]) -> None:
    shares = split(amount, weights)
    total = sum(weights.values())
    assert sum(shares.values()) == amount
    for key, w in weights.items():
        exact = amount * w / total
        assert exact - 1 < shares[key] < exact + 1
        assert w or shares[key] == 0


def test_duplicate_index() -> None:
    index = DuplicateIndex()
    assert index.check_and_add("u1", GEN, 0b1011) is False
    assert index.check_and_add("u1", GEN, 0b1011) is True  # exact
    assert index.check_and_add("u1", GEN, 0b0011) is True  # one bit away
    assert index.check_and_add("u1", REC, 0b1011) is False  # another purpose
    assert index.check_and_add("u2", GEN, 0b1011) is False  # another user
    assert index.check_and_add("u1", GEN, 0b1011 ^ 0xF0F0) is False  # 8 bits away
    assert index.check_and_add("u1", GEN, None) is False
    assert len(index) == 5


def test_usefulness_multiplies_weight_and_value_exactly() -> None:
    assert weigh(3, 0.5, True, 5000) == (1500, 7500)  # neutral: as before usefulness existed
    assert weigh(3, 0.5, True, 5000, 2667) == (4000, 20000)  # 3 x 500 x 2.667 = 4000.5 -> 4000 (half even)
    assert weigh(1, 0.875, True, 5000, 1801) == (1576, 7880)  # 875 x 1.801 = 1575.875 -> 1576
    assert weigh(2, 1.0, True, 10_000, 0) == (0, 0)  # matched nothing the model needs
    assert weigh(2, 1.0, False, 10_000, 3000) == (0, 0)  # unpaid (free tier, copy) whatever its usefulness
    assert value(CATALOG, record(units=3, quality=0.5), False, usefulness_milli=2000).value_micros == 15000


@pytest.mark.parametrize(("over", "reason"), [
    ({"event_id": "e" * 201}, "event_id has 201 characters (at most 200)"),
    ({"user_id": "u" * 10_000}, "user_id has 10000 characters (at most 200)"),
    ({"receipt_id": "r" * 81}, "receipt_id has 81 characters (at most 80)"),
    ({"user_id": "ab\x00c"}, "user_id has a control or unassigned character U+0000 at position 2"),
    ({"event_id": "a\u2028b"}, "event_id has a control or unassigned character U+2028 at position 1"),
    ({"event_id": ""}, "event_id is empty"),
    ({"record_id": "0" * 65}, "record_id is not a keyed hash of at most 64 letters and digits"),
    ({"record_id": "ab-cd"}, "record_id is not a keyed hash of at most 64 letters and digits"),
    ({"key_id": "k" * 33}, "key_id is not a keyed hash of at most 32 letters and digits"),
])
def test_identifier_rejections(over: dict[str, Any], reason: str) -> None:
    assert identifier_rejection(record(**over)) == reason


def test_identifiers_accepted() -> None:
    assert identifier_rejection(record()) is None
    assert identifier_rejection(record(event_id="e" * 200, user_id="ü" * 200, receipt_id="r" * 80)) is None
    assert identifier_rejection(record(record_id="", key_id="")) is None  # made before keyed record ids


def test_rejection_messages_never_echo_long_input() -> None:
    reason = rejection(CATALOG, record(purpose="p" * 10_000), 10_000)
    assert reason == f"unknown purpose {'p' * 60!r}... (10000 characters)"
