"""The compiled kernel routes a batch exactly as the Python reference does: same decisions, same
assessments, same output bytes on every topic (kernel/ vs consentgate/kernel/routing.py)."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import fastavro
import pytest
from consentgate.kernel import Fetched, NativeKernel, ReferenceKernel, UnsupportedSchema, kernel_for, plan_output
from consentgate.kernel.routing import BatchResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentgate.model import ConsentState, Grant
from consentgate.pseudonyms import key_id, pseudonym, record_id
from consentgate.quality import assess
from tests.unit.kernel_cases import (
    ACTIVITY_ID,
    BRANCH_OF,
    NOW_MS,
    SECRET,
    USERS,
    at,
    config,
    consents,
    encode_event,
    events,
    fail_unless_built,
    payloads,
    requires_kernel,
    texts,
)

pytestmark = requires_kernel


def pair(shape: str, **kw: Any) -> tuple[ReferenceKernel, NativeKernel]:
    fail_unless_built()
    cfg, schemas = config(shape, **kw)
    ref = kernel_for(cfg, schemas, compiled=False)
    native = kernel_for(cfg, schemas, compiled=True)
    assert isinstance(ref, ReferenceKernel) and isinstance(native, NativeKernel)
    return ref, native


def assert_same(a: BatchResult, b: BatchResult) -> None:
    assert a.outputs == b.outputs
    assert a.outcomes == b.outcomes
    assert a.dead_letters == b.dead_letters
    assert (a.decisions, a.records_passed, a.deferred) == (b.decisions, b.records_passed, b.deferred)


def decode(contract_schema: dict[str, Any], data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data[5:]), fastavro.parse_schema(contract_schema))


@pytest.mark.parametrize("shape", ["shipped", "reordered"])
def test_a_passing_post_is_routed_to_exact_outputs(shape: str) -> None:
    ref, native = pair(shape)
    _, schemas = config(shape)
    occurred = NOW_MS - 60_000
    event = {"event_id": "e-1", "user_id": "ü1", "category": "post", "occurred_at": occurred, "source": "web",
             "payload": ("io.consentgate.v1.PostPayload", {"text": "one two three four five six"})}
    grant = Grant("post", "train_ai_system.generative", at(occurred - 1), None, 2, "r-9")
    state = ConsentState("ü1", 42, at(NOW_MS), "data_sharing", "credits", (grant,))
    batch = [Fetched(b"k", encode_event(event), "activity.events", 3, 17, 5)]
    result = native.route(batch, {"ü1": state}.get, NOW_MS)
    assert_same(result, ref.route(batch, {"ü1": state}.get, NOW_MS))
    assert result.decisions == 1 and result.records_passed == 1 and not result.dead_letters
    [(key, decision)] = result.outputs["gate.decisions"]
    assert key == "ü1".encode()
    assert decode(schemas["Decision"], decision) == {
        "event_id": "e-1", "user_id": "ü1", "category": "post", "decided_at": at(NOW_MS),
        "outcomes": [{"purpose": "train_ai_system.recommendation", "passed": False, "reason": "no_grant"},
                     {"purpose": "train_ai_system.generative", "passed": True, "reason": None}],
        "consent_version": 42, "input": {"topic": "activity.events", "partition": 3, "offset": 17}}
    nym = pseudonym(SECRET, "train_ai_system.generative", "ü1")
    [(key, training)] = result.outputs["training.train_ai_system.generative"]
    assert key == nym.encode() and training[:5] == b"\x00\x00\x00\x00\x15"
    record = decode(schemas["TrainingRecord"], training)
    assert record["pseudonym"] == nym and record["fields"] == {"text": "one two three four five six"}
    assert record["record_id"] == record_id(SECRET, "train_ai_system.generative", "e-1")
    assert record["key_id"] == key_id(SECRET) and "event_id" not in record and "receipt_id" not in record
    assert b"e-1" not in training and "ü1".encode() not in training and b"r-9" not in training
    [(_, contribution)] = result.outputs["metering.contributions"]
    contrib = decode(schemas["Contribution"], contribution)
    assert (contrib["quality"], contrib["tier"], contrib["plan"], contrib["receipt_id"], contrib["record_id"]) == (
        0.5, "data_sharing", "credits", "r-9", record["record_id"])  # six distinct words of twelve: half
    assert contrib["fingerprint"] == assess("post", {"text": "one two three four five six"}).fingerprint
    assert result.outcomes == {("train_ai_system.recommendation", "post", "no_grant"): 1,
                               ("train_ai_system.generative", "post", "passed"): 1}


def test_rejected_and_deferred_inputs_go_where_the_reference_sends_them() -> None:
    ref, native = pair("shipped", max_record_bytes=200, dlq_value_bytes=8)
    good = encode_event({"event_id": "e", "user_id": "u1", "category": "click", "occurred_at": NOW_MS,
                         "source": "s", "payload": ("io.consentgate.v1.ClickPayload", {"item_id": "i", "url": "u"})})
    batch = [Fetched(None, None, "a", 0, 1), Fetched(None, b"", "a", 0, 2), Fetched(b"k", b"\x00" * 300, "a", 0, 3),
             Fetched(None, good + b"\x00", "a", 0, 4, -1), Fetched(None, good[:5] + good[5:], "a", 0, 5, 99),
             Fetched(None, b"\x00\x00\x00\x00\x63" + good[5:], "a", 0, 6), Fetched(None, b"\x01abcdef", "a", 0, 7)]
    result = native.route(batch, {}.get, NOW_MS)
    assert_same(result, ref.route(batch, {}.get, NOW_MS))
    assert result.dead_letters == {"MissingValue": 2, "OversizedRecord": 1, "UndecodableRecord": 2}
    assert result.deferred == [5] and result.decisions == 1
    _, schemas = config()
    letters = [decode(schemas["DeadLetter"], v) for _, v in result.outputs["gate.dlq"]]
    oversized = letters[2]
    assert (oversized["error_class"], oversized["value"], oversized["value_length"], oversized["truncated"]) == (
        "OversizedRecord", b"\x00" * 8, 300, True)
    assert oversized["value_sha256"] == hashlib.sha256(b"\x00" * 300).hexdigest()
    # frame 5, "e" 2, "u1" 3, "click" 6, time 6, "s" 2, branch 1, "i" 2, "u" 2: the extra byte is byte 29
    assert letters[3]["message"] == "cannot decode as ActivityEvent: 1 trailing bytes at byte 29"
    assert [d["offset"] for d in letters] == [1, 2, 3, 4, 7]
    for kernel in (ref, native):  # once the codec has seen id 0x63 is the reader schema, the kernel reads it
        kernel.learn_schema_id(0x63)
    again = native.route(batch, {}.get, NOW_MS)
    assert_same(again, ref.route(batch, {}.get, NOW_MS))
    assert again.deferred == [] and again.decisions == 2
    assert result.outcomes == {(p, "click", "no_consent_record"): 1
                               for p in ("train_ai_system.recommendation", "train_ai_system.ads_ranking")}


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Fetched], dict[str, Any]]:
    records = []
    for i, event in enumerate(draw(st.lists(events(), min_size=1, max_size=8))):
        value = encode_event(event)
        mutation = draw(st.integers(0, 11))
        if mutation == 0:
            value = value + draw(st.binary(min_size=1, max_size=3))
        elif mutation == 1:
            value = value[:draw(st.integers(0, len(value) - 1))]
        records.append(Fetched(draw(st.one_of(st.none(), st.binary(max_size=4))), value, "activity.events",
                               draw(st.integers(0, 2**31 - 1)), i, draw(st.one_of(st.none(), st.integers(-5, 2**41)))))
    lookup = {user: draw(consents(user)) for user in USERS}
    return records, lookup


@pytest.mark.parametrize("shape", ["shipped", "reordered"])
def test_kernel_routes_any_batch_like_the_reference(shape: str) -> None:
    ref, native = pair(shape)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batches())
    def check(case: tuple[list[Fetched], dict[str, Any]]) -> None:
        batch, consent = case
        assert_same(native.route(batch, consent.get, NOW_MS), ref.route(batch, consent.get, NOW_MS))

    check()


@st.composite
def passing_batches(draw: st.DrawFn) -> tuple[list[Fetched], dict[str, Any]]:
    """Events whose users hold current grants, so most records pass and every encoder runs."""
    records, consent = [], {}
    for i, event in enumerate(draw(st.lists(events(), min_size=1, max_size=6))):
        event["category"] = category = draw(st.sampled_from(list(BRANCH_OF)))
        event["payload"] = draw(payloads(category).filter(lambda p, c=category: p[0].endswith(BRANCH_OF[c])))
        event["occurred_at"] = NOW_MS - draw(st.integers(0, 10**9))
        user = event["user_id"] = USERS[i % len(USERS)]
        event["event_id"] = f"e-{i}-{event['event_id'][:5]}".replace("\x00", "0")
        grants = tuple(Grant(event["category"], p, at(event["occurred_at"] - draw(st.integers(-5, 10**6))),
                             draw(st.sampled_from([None, at(NOW_MS + 1), at(NOW_MS)])), draw(st.integers(1, 4)), "r")
                       for p in draw(st.lists(st.sampled_from(list(PURPOSES)), max_size=3, unique=True)))
        consent[user] = ConsentState(user, i, at(NOW_MS), "data_sharing", draw(st.sampled_from([None, "per_unit"])),
                                     grants)
        records.append(Fetched(b"k", encode_event(event), "activity.events", 0, i, NOW_MS))
    return records, consent


PURPOSES = ("train_ai_system.recommendation", "train_ai_system.generative", "train_ai_system.ads_ranking")


def test_kernel_passes_and_encodes_like_the_reference() -> None:
    ref, native = pair("shipped")
    passed = 0

    # derandomized: the closing count is a property of the strategy, not of one random draw
    @settings(max_examples=300, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(passing_batches())
    def check(case: tuple[list[Fetched], dict[str, Any]]) -> None:
        nonlocal passed
        batch, consent = case
        result = native.route(batch, consent.get, NOW_MS)
        assert_same(result, ref.route(batch, consent.get, NOW_MS))
        passed += result.records_passed

    check()
    assert passed > 100  # (162 with this derandomized run) the property ran over passing records, not only drops


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(["post", "search", "conversation"]), texts)
def test_assessment_is_bit_identical_on_adversarial_unicode(category: str, text: str) -> None:
    fail_unless_built()
    from consentgate import _kernel  # type: ignore[attr-defined]
    field = "query" if category == "search" else "text"
    expected = assess(category, {field: text})
    assert _kernel.assess_text(category, text) == (expected.quality, expected.fingerprint)


# final sigma in every context, multi-character lowercase, titlecase, ligatures, a run of 70,000 letters,
# and 70,001 words (SimHash's 16-bit lanes overflow into each other past 32,767 words, as in quality.py)
EDGE_TEXTS = ["ΑΣ", "ΑΣ.", "ΑΣ'Α", "Σ", "ΑΣ\u0345", "A\u00adΣ b", "İİ", "ǅǅ ǅ", "ﬃ ss ß", "x" * 70_000,
              " ".join(str(i % 3) for i in range(70_001)), "ǅ" * 6 + "\n" * 7]


@pytest.mark.parametrize("text", EDGE_TEXTS)
def test_assessment_edge_cases(text: str) -> None:
    fail_unless_built()
    from consentgate import _kernel  # type: ignore[attr-defined]
    expected = assess("post", {"text": text})
    assert _kernel.assess_text("post", text) == (expected.quality, expected.fingerprint)


def test_a_schema_the_kernel_cannot_write_is_refused() -> None:
    _, schemas = config()
    extra = dict(schemas["Contribution"], fields=[*schemas["Contribution"]["fields"],
                                                  {"name": "bonus", "type": "long"}])
    with pytest.raises(UnsupportedSchema, match="bonus"):
        plan_output("metering.contributions", "Contribution", extra, b"\x00\x00\x00\x00\x01")
    retyped = dict(schemas["Contribution"], fields=[dict(f, type="string") if f["name"] == "units" else f
                                                    for f in schemas["Contribution"]["fields"]])
    with pytest.raises(UnsupportedSchema, match="units"):
        plan_output("metering.contributions", "Contribution", retyped, b"\x00\x00\x00\x00\x01")


def test_known_schema_id_is_the_activity_contract() -> None:
    assert ACTIVITY_ID == 7
