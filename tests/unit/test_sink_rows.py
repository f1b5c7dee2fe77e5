"""The sink's pure pieces: rows, erasure rules, delete filters, offsets in snapshot summaries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.expressions import And, EqualTo, LessThanOrEqual, Or

from consentgate.connectors.iceberg_rows import (
    InvalidTrainingRecord,
    Retraction,
    delete_filter,
    is_erased,
    merge_erased,
    retraction_of,
    to_arrow,
    training_row,
)
from consentgate.connectors.iceberg_table import (
    OFFSETS_PROPERTY,
    committed_offsets,
    decode_offsets,
    encode_offsets,
    load_or_create,
    open_catalog,
    table_name,
)
from consentgate.errors import SinkError
from consentgate.settings import Settings

REC = "train_ai_system.recommendation"
T = datetime(2026, 4, 2, 10, 0, tzinfo=timezone.utc)


def record(**over: Any) -> dict[str, Any]:
    return {"pseudonym": "p1", "record_id": "r1", "key_id": "k1", "purpose": REC, "category": "signal",
            "occurred_at": T, "fields": {"kind": "dwell", "value": 12.5}, "consent_version": 3, **over}


def test_a_training_record_becomes_one_row_with_text_and_numbers_apart() -> None:
    assert training_row(record(), REC, 2, 41) == {
        "pseudonym": "p1", "record_id": "r1", "key_id": "k1", "purpose": REC, "category": "signal",
        "occurred_at": T, "fields": {"kind": "dwell"}, "numeric_fields": {"value": 12.5}, "consent_version": 3,
        "source_partition": 2, "source_offset": 41}
    # A union value decoded with its branch name is read the same way.
    assert training_row(record(fields={"value": ("double", 1.0)}), REC, 0, 0)["numeric_fields"] == {"value": 1.0}


@pytest.mark.parametrize("over, message", [
    ({"record_id": ""}, "record_id is missing or empty"),
    ({"key_id": None}, "key_id is missing or empty"),
    ({"purpose": "train_ai_system.generative"}, "record of purpose 'train_ai_system.generative'"),
    ({"occurred_at": "2026-04-02"}, "occurred_at is not a timestamp"),
    ({"occurred_at": datetime(2026, 4, 2)}, "occurred_at is not a timestamp"),
    ({"fields": {"x": [1]}}, "field 'x' is neither text nor a number"),
    ({"fields": {"x": True}}, "field 'x' is neither text nor a number"),
    ({"consent_version": "3"}, "consent_version is not a number"),
])
def test_records_the_table_cannot_hold_are_refused_with_the_reason(over: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidTrainingRecord, match=message.replace("(", r"\(")):
        training_row(record(**over), REC, 0, 0)


def test_erasure_holds_records_up_to_its_time_and_keeps_a_later_consent() -> None:
    erased: dict[str, datetime] = {"p0": T}
    batch = merge_erased(erased, [Retraction("p1", "k1", REC, T), Retraction("p1", "k1", REC, T - timedelta(days=1)),
                                  Retraction("p0", "k1", REC, T + timedelta(hours=1))])
    assert batch == {"p1": T, "p0": T + timedelta(hours=1)}
    assert erased == {"p0": T + timedelta(hours=1), "p1": T}
    assert is_erased({"pseudonym": "p1", "occurred_at": T}, erased)
    assert not is_erased({"pseudonym": "p1", "occurred_at": T + timedelta(milliseconds=1)}, erased)
    assert not is_erased({"pseudonym": "p9", "occurred_at": T}, erased)


def test_delete_filter_names_each_pseudonym_up_to_its_erasure() -> None:
    later = T + timedelta(hours=2)
    assert delete_filter({"b": later, "a": T}) == Or(
        And(EqualTo("pseudonym", "a"), LessThanOrEqual("occurred_at", T.isoformat())),
        And(EqualTo("pseudonym", "b"), LessThanOrEqual("occurred_at", later.isoformat())))
    with pytest.raises(ValueError):
        delete_filter({})


def test_retraction_of_a_decoded_record() -> None:
    assert retraction_of({"pseudonym": "p", "key_id": "k", "purpose": REC, "sink_topic": "t", "requested_at": T,
                          "consent_version": 4}) == Retraction("p", "k", REC, T)
    with pytest.raises(InvalidTrainingRecord, match="key_id is missing"):
        retraction_of({"pseudonym": "p", "key_id": "", "purpose": REC, "requested_at": T})


def test_offsets_round_trip_and_bad_ones_are_refused() -> None:
    offsets = {"t.training": {2: 40, 0: 7}, "t.retractions": {0: 3}}
    text = encode_offsets(offsets)
    assert text == '{"t.retractions":{"0":3},"t.training":{"0":7,"2":40}}'
    assert decode_offsets(text) == offsets
    with pytest.raises(SinkError, match="is not valid"):
        decode_offsets('{"t": [1, 2]}')


def test_table_names_and_resume_offsets_come_from_the_table(tmp_path: Path) -> None:
    assert table_name("pfx.training.train_ai_system.recommendation") == "pfx_training_train_ai_system_recommendation"
    settings = Settings(data_dir=tmp_path)
    catalog = open_catalog(settings)
    table = load_or_create(catalog, settings, "training.x")
    assert committed_offsets(table) == {}  # never written: from the beginning
    row = training_row(record(), REC, 0, 0)
    table.append(to_arrow([row]), snapshot_properties={OFFSETS_PROPERTY: encode_offsets({"training.x": {0: 1}})})
    table.append(to_arrow([]))  # another engine's commit, without offsets: the sink's last one still counts
    assert committed_offsets(table.refresh()) == {"training.x": {0: 1}}
    other = load_or_create(catalog, settings, "training.y")
    other.append(to_arrow([row]))  # rows nobody recorded offsets for: refuse to guess
    with pytest.raises(SinkError, match="holds 1 records but no snapshot records the offsets"):
        committed_offsets(other.refresh())
    # A lost commit race must fail, never be rebased (a duplicate batch): the sink puts that back.
    assert table.properties["commit.retry.num-retries"] == "0"
    with table.transaction() as tx:
        tx.set_properties({"commit.retry.num-retries": "4"})
    assert load_or_create(catalog, settings, "training.x").properties["commit.retry.num-retries"] == "0"
    catalog.engine.dispose()  # type: ignore[attr-defined]
