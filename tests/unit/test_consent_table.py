"""The compact consent store (``consentgate._kernel.ConsentTable``) reads consent.state exactly as the
registry codec does: the same ConsentState for every readable record, CORRUPT for every record the codec
refuses, raw bytes for other writer schemas; and the kernel's route reads it as it reads the view."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from consentgate.kernel import Fetched
from consentgate.schemas.codec import Codec
from consentgate.schemas.contracts import schema_json, schema_text
from consentgate.schemas.errors import RecordError
from consentgate.schemas.records import consent_from_avro, consent_to_avro
from consentgate.streams.consent_store import CORRUPT, TOMBSTONE, CompactStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentgate.model import ConsentLookup, ConsentState, Erased, Grant
from tests.unit.kernel_cases import NOW_MS, SPECIAL, fail_unless_built, requires_kernel
from tests.unit.test_kernel_route import batches, pair

pytestmark = requires_kernel

SCHEMA_ID = 7  # the registered ConsentState
NEWER_ID = 8  # a writer schema the table does not read itself
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MIN_MS, MAX_MS = -62_135_596_800_000, 253_402_300_799_999  # the datetime range
_SCHEMA = fastavro.parse_schema(schema_json("ConsentState"))


def _loose() -> Any:
    """The ConsentState schema with every time and int a plain long: it writes values the contract
    cannot hold (times outside the datetime range, terms past 32 bits) in the same layout."""
    schema = schema_json("ConsentState")
    fields = {f["name"]: f for f in schema["fields"]}
    fields["updated_at"]["type"] = "long"
    grant = {f["name"]: f for f in fields["grants"]["type"]["items"]["fields"]}
    grant["granted_at"]["type"] = grant["terms_version"]["type"] = "long"
    grant["expires_at"]["type"] = ["null", "long"]
    return fastavro.parse_schema(schema)


_LOOSE = _loose()


class Registered:
    schema_type = "AVRO"

    def __init__(self, text: str) -> None:
        self.schema_str = text


class Registry:
    """The registry as the codec asks it: schema id -> schema text."""

    def get_schema(self, schema_id: int) -> Registered:
        assert schema_id in (SCHEMA_ID, NEWER_ID)
        return Registered(schema_text("ConsentState"))


def table(classify: Any = None, fallback: Any = None) -> CompactStore:
    fail_unless_built()
    from consentgate._kernel import ConsentTable  # type: ignore[attr-defined]

    return CompactStore(ConsentTable(classify or (lambda schema_id: schema_id == SCHEMA_ID), fallback))


def encode(value: dict[str, Any], schema_id: int = SCHEMA_ID, schema: Any = _SCHEMA) -> bytes:
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, schema, value)
    return out.getvalue()


def codec_reading(codec: Codec, user: str, data: bytes) -> ConsentLookup | bytes:
    """What the view makes of ``data`` with the registry codec: a state, or CORRUPT."""
    try:
        state = consent_from_avro(codec.decode(data, "consent.state"))
    except RecordError:
        return CORRUPT
    return state if state.user_id == user else CORRUPT


# -- strategies --------------------------------------------------------------------------------

unicode = st.text(st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from(SPECIAL)), max_size=40)
uuids = st.uuids().map(str)
receipts = st.one_of(uuids, uuids.map(str.upper), uuids.map(lambda u: u[:9] + u[9:].upper()),
                     uuids.map(lambda u: u[:-1]), unicode)
times = st.one_of(st.integers(MIN_MS, MAX_MS), st.sampled_from([MIN_MS, MAX_MS, 0, -1, NOW_MS]))
terms = st.integers(-2**31, 2**31 - 1)
# values the contract cannot hold: times outside datetime's range, terms past 32 bits
wild_times = st.one_of(times, st.sampled_from([MIN_MS - 1, MAX_MS + 1, -2**63, 2**63 - 1]))
wild_terms = st.one_of(terms, st.sampled_from([-2**31 - 1, 2**31, 2**40]))
users = st.one_of(unicode, uuids, uuids.map(str.upper), st.sampled_from(["", "u1", "\u00fc", "\x00"]))


@st.composite
def states(draw: st.DrawFn, user: str) -> dict[str, Any]:
    wild = draw(st.integers(0, 4)) == 0
    times_, terms_ = (wild_times, wild_terms) if wild else (times, terms)
    grants = []
    for _ in range(draw(st.integers(0, 6))):
        grants.append({"category": draw(st.one_of(st.sampled_from(["post", "search", "click"]), unicode)),
                       "purpose": draw(st.one_of(st.sampled_from(["train_ai_system.generative"]), unicode)),
                       "granted_at": draw(times_), "expires_at": draw(st.one_of(st.none(), times_)),
                       "terms_version": draw(terms_), "receipt_id": draw(receipts)})
    return {"user_id": user, "version": draw(st.integers(-2**63, 2**63 - 1)), "updated_at": draw(times_),
            "tier": draw(st.sampled_from(["free", "data_sharing"])),
            "plan": draw(st.sampled_from([None, "per_unit", "revenue_share", "credits", "dividend"])),
            "grants": grants}


@st.composite
def records(draw: st.DrawFn) -> tuple[str, bytes]:
    """A user and a value for them: mostly well-formed, some another user's, cut, extended or mangled."""
    user = draw(users)
    owner = draw(users) if draw(st.integers(0, 9)) == 0 else user
    data = encode(draw(states(owner)), schema=_LOOSE)
    mutation = draw(st.integers(0, 15))
    if mutation == 0:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif mutation == 1:
        data = data + draw(st.binary(min_size=1, max_size=3))
    elif mutation == 2:
        at = draw(st.integers(5, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    elif mutation == 3:
        data = draw(st.binary(max_size=40))
    return user, data


# -- properties --------------------------------------------------------------------------------

@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(records(), min_size=1, max_size=6))
def test_the_table_reads_every_record_as_the_codec_does(items: list[tuple[str, bytes]]) -> None:
    codec = Codec(Registry(), "ConsentState")  # type: ignore[arg-type]
    store = table()
    first, second = items[: len(items) // 2], items[len(items) // 2:]
    reported = [user for user, _ in store.put_many(first)]
    reported += [user for user, data in second if store.put(user, data) is not None]
    readings = [(user, TOMBSTONE if data == b"" else codec_reading(codec, user, data)) for user, data in items]
    assert reported == [user for user, reading in readings if reading == CORRUPT]  # each reported once, in order
    expected = dict(readings)  # the latest per user
    for user, want in expected.items():
        got = store.get(user)
        assert got == want, (user, got, want)
    assert len(store) == len(expected)


def test_edges_of_the_schema_read_exactly() -> None:
    codec = Codec(Registry(), "ConsentState")  # type: ignore[arg-type]
    store = table()
    grant = {"category": "post", "purpose": "p", "granted_at": EPOCH + timedelta(milliseconds=MIN_MS),
             "expires_at": EPOCH + timedelta(milliseconds=MAX_MS), "terms_version": -2**31,
             "receipt_id": "0F8FAD5B-D9CB-469F-A165-70867728950E"}
    state = {"user_id": "9b2e0a4e-8f41-4c4b-9a57-3c1f1f4c0e11", "version": -2**63, "updated_at": EPOCH,
             "tier": "free", "plan": None, "grants": [grant, grant | {"receipt_id": "r", "expires_at": None}]}
    data = encode(state)
    assert store.put(state["user_id"], data) is None
    got = store.get(state["user_id"])
    assert got == codec_reading(codec, state["user_id"], data)
    assert isinstance(got, ConsentState) and got.grants[0] == Grant(
        "post", "p", datetime(1, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59, 999000, timezone.utc),
        -2**31, "0F8FAD5B-D9CB-469F-A165-70867728950E")
    # a time one millisecond past the range: the codec refuses it, so does the table
    too_late = encode({**state, "updated_at": MAX_MS + 1, "grants": []}, schema=_LOOSE)
    assert codec_reading(codec, state["user_id"], too_late) == CORRUPT
    assert "outside the datetime range" in (store.put(state["user_id"], too_late) or "")
    assert store.get(state["user_id"]) == CORRUPT


def test_markers_raw_records_and_surrogate_keys() -> None:
    asked: list[int] = []

    def classify(schema_id: int) -> bool | None:
        asked.append(schema_id)
        return None if schema_id == 9 else schema_id == SCHEMA_ID

    store = table(classify)
    newer = encode({"user_id": "n", "version": 1, "updated_at": EPOCH, "tier": "free", "plan": None, "grants": []},
                   NEWER_ID)
    assert store.put_many([("gone", TOMBSTONE), ("n", newer), ("m", newer)]) == []
    assert [store.get(u) for u in ("gone", "n", "nobody")] == [TOMBSTONE, newer, None]
    assert asked == [NEWER_ID]  # classified once
    unsure = b"\x00\x00\x00\x00\x09" + newer[5:]
    assert store.put("s", unsure) is None and store.get("s") == unsure
    store.put("s", unsure)
    assert asked == [NEWER_ID, 9, 9]  # asked again: it could not tell
    store.table.mark_corrupt("n")
    assert store.get("n") == CORRUPT
    lone = "\ud800x"  # not UTF-8: held under its surrogatepass bytes, never matching a user_id
    assert store.put(lone, TOMBSTONE) is None and store.get(lone) == TOMBSTONE
    assert "key and user_id differ" in (store.put(lone, encode({
        "user_id": "\ufffdx", "version": 1, "updated_at": EPOCH, "tier": "free", "plan": None, "grants": []})) or "")
    assert len(store) == 5 and store.memory() > 0


@pytest.mark.parametrize("raw_user", [None, "u2"])
def test_the_route_reads_the_table_as_it_reads_the_view(raw_user: str | None) -> None:
    """Same outputs with the table as with a lookup of the same states; a user kept raw goes to the fallback."""
    _, native = pair("shipped")

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(batches())
    def check(case: tuple[list[Fetched], dict[str, Any]]) -> None:
        batch, consent = case
        called: list[str] = []

        def fallback(user: str) -> ConsentLookup:
            called.append(user)
            return consent.get(user)  # type: ignore[no-any-return]

        store = table(fallback=fallback)
        for user, state in consent.items():
            if isinstance(state, Erased):
                store.put(user, TOMBSTONE)
            elif state is not None:
                assert store.put(user, encode(consent_to_avro(state), NEWER_ID if user == raw_user else SCHEMA_ID)) \
                    is None
        want = native.route(batch, consent.get, NOW_MS)
        got = native.route(batch, store.table, NOW_MS)
        routed, called[:] = list(called), []
        assert (got.outputs, got.outcomes, got.dead_letters, got.decisions, got.records_passed, got.deferred) == (
            want.outputs, want.outcomes, want.dead_letters, want.decisions, want.records_passed, want.deferred)
        # only the user kept raw goes to the fallback, once a batch
        assert len(routed) == len(set(routed))
        assert set(routed) <= ({raw_user} if isinstance(consent.get(raw_user or ""), ConsentState) else set())
        assert [store.table(u) for u in consent] == list(consent.values()) and called == list(consent)

    check()


def test_the_route_refuses_a_raw_user_without_a_fallback() -> None:
    _, native = pair("shipped")
    store = table()
    store.put("u1", encode({"user_id": "u1", "version": 1, "updated_at": EPOCH, "tier": "free", "plan": None,
                            "grants": []}, NEWER_ID))
    from tests.unit.kernel_cases import encode_event

    event = {"event_id": "e", "user_id": "u1", "category": "post", "occurred_at": NOW_MS, "source": "web",
             "payload": ("io.consentgate.v1.PostPayload", {"text": "hi"})}
    with pytest.raises(ValueError, match="keeps this user.s record raw and has no fallback"):
        native.route([Fetched(b"u1", encode_event(event), "activity.events", 0, 0, NOW_MS)], store.table, NOW_MS)
