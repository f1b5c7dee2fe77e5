"""Training records and retractions as table rows and delete filters. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import And, BooleanExpression, EqualTo, LessThanOrEqual, Or, Reference
from pyiceberg.expressions.literals import literal

from consentgate.connectors.iceberg_table import ARROW_SCHEMA
from consentgate.errors import SinkError


class InvalidTrainingRecord(SinkError):
    """A training record or retraction the sink cannot store (kept aside as a reject, never dropped)."""


@dataclass(frozen=True)
class Retraction:
    """An erasure's request to one purpose's sinks: delete what ``pseudonym`` contributed up to ``requested_at``."""

    pseudonym: str
    key_id: str
    purpose: str
    requested_at: datetime


def _text(value: dict[str, Any], name: str) -> str:
    found = value.get(name)
    if not isinstance(found, str) or not found:
        raise InvalidTrainingRecord(f"{name} is missing or empty")
    return found


def _time(value: dict[str, Any], name: str) -> datetime:
    found = value.get(name)
    if not isinstance(found, datetime) or found.tzinfo is None:
        raise InvalidTrainingRecord(f"{name} is not a timestamp")
    return found


def training_row(value: dict[str, Any], purpose: str, partition: int, offset: int) -> dict[str, Any]:
    """One decoded TrainingRecord as a row of the table; a record of another purpose is refused."""
    if value.get("purpose") != purpose:
        raise InvalidTrainingRecord(f"record of purpose {value.get('purpose')!r} on the topic of {purpose!r}")
    texts: dict[str, str] = {}
    numbers: dict[str, float] = {}
    for name, item in (value.get("fields") or {}).items():
        if isinstance(item, tuple) and len(item) == 2:  # a union value decoded with its branch name
            item = item[1]
        if isinstance(item, str):
            texts[name] = item
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            numbers[name] = float(item)
        else:
            raise InvalidTrainingRecord(f"field {name!r} is neither text nor a number")
    version = value.get("consent_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidTrainingRecord("consent_version is not a number")
    return {
        "pseudonym": _text(value, "pseudonym"), "record_id": _text(value, "record_id"),
        "key_id": _text(value, "key_id"), "purpose": purpose, "category": _text(value, "category"),
        "occurred_at": _time(value, "occurred_at"), "fields": texts, "numeric_fields": numbers,
        "consent_version": version, "source_partition": partition, "source_offset": offset,
    }


def retraction_of(value: dict[str, Any]) -> Retraction:
    return Retraction(_text(value, "pseudonym"), _text(value, "key_id"), _text(value, "purpose"),
                      _time(value, "requested_at"))


def merge_erased(erased: dict[str, datetime], retractions: Iterable[Retraction]) -> dict[str, datetime]:
    """The newest erasure time per pseudonym, ``erased`` updated in place and the batch's own returned."""
    batch: dict[str, datetime] = {}
    for r in retractions:
        if r.pseudonym not in batch or r.requested_at > batch[r.pseudonym]:
            batch[r.pseudonym] = r.requested_at
        if r.pseudonym not in erased or r.requested_at > erased[r.pseudonym]:
            erased[r.pseudonym] = r.requested_at
    return batch


def is_erased(row: Mapping[str, Any], erased: Mapping[str, datetime]) -> bool:
    """A record is erased when its person asked for erasure after it happened. Records of a person who
    consented again after an erasure (later activity) are theirs to give and are kept."""
    at = erased.get(row["pseudonym"])
    return at is not None and row["occurred_at"] <= at


def delete_filter(batch: Mapping[str, datetime]) -> BooleanExpression:
    """Rows to delete for a batch of erasures: each pseudonym's records up to its erasure time."""
    terms: list[BooleanExpression] = [
        And(EqualTo(term=Reference("pseudonym"), value=literal(nym)),
            LessThanOrEqual(term=Reference("occurred_at"), value=literal(at.isoformat())))
        for nym, at in sorted(batch.items())]
    if not terms:
        raise ValueError("no erasures to build a filter from")
    return terms[0] if len(terms) == 1 else Or(*terms)


def to_arrow(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ARROW_SCHEMA)
