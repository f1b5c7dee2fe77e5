"""What the gate writes for one input record, as Avro-ready dicts. Pure: no I/O, no clock."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from consentgate.catalog import Catalog
from consentgate.quality import Assessment
from consentgate.model import (
    ActivityEvent,
    ConsentLookup,
    ConsentState,
    Decision,
    Outcome,
)

# A dead letter keeps at most this much of the input's key and of its value (the rest is identified
# by length and SHA-256), so every dead letter fits gate.dlq's max.message.bytes.
DLQ_VALUE_BYTES = 64 * 1024


def decision_record(decision: Decision, decided_at_ms: int, topic: str, partition: int, offset: int
                    ) -> dict[str, Any]:
    # A DropReason is a str, so it goes to the Avro enum as it is.
    return {
        "event_id": decision.event_id, "user_id": decision.user_id, "category": decision.category,
        "decided_at": decided_at_ms,
        "outcomes": [{"purpose": o.purpose, "passed": o.passed, "reason": o.reason} for o in decision.outcomes],
        "consent_version": decision.consent_version,
        "input": {"topic": topic, "partition": partition, "offset": offset},
    }


@dataclass(frozen=True)
class Keyed:
    """The keyed hashes that stand in for a passed record's ids outside the gate (see consentgate.pseudonyms)."""

    pseudonym: str
    record_id: str
    key_id: str


def training_record(event: ActivityEvent, outcome: Outcome, catalog: Catalog, keyed: Keyed,
                    consent_version: int) -> dict[str, Any]:
    """Minimised to the fields the catalog keeps for this purpose and category; no raw id of any kind."""
    keep = catalog.purposes[outcome.purpose].categories[event.category].keep
    payload = event.payload
    return {
        "pseudonym": keyed.pseudonym, "record_id": keyed.record_id, "key_id": keyed.key_id,
        "purpose": outcome.purpose, "category": event.category, "occurred_at": event.occurred_at,
        "fields": {name: payload[name] for name in keep if name in payload}, "consent_version": consent_version,
    }


def contribution_record(event: ActivityEvent, outcome: Outcome, consent: ConsentLookup,
                        assessment: Assessment, keyed: Keyed) -> dict[str, Any]:
    assert outcome.grant is not None and isinstance(consent, ConsentState)
    return {
        "event_id": event.event_id, "purpose": outcome.purpose, "record_id": keyed.record_id,
        "key_id": keyed.key_id, "user_id": event.user_id,
        "category": event.category, "units": 1, "quality": assessment.quality,
        "fingerprint": assessment.fingerprint, "occurred_at": event.occurred_at,
        "tier": consent.tier, "plan": consent.plan, "receipt_id": outcome.grant.receipt_id,
        "consent_version": consent.version,
    }


def dead_letter(msg: Message, error: Exception, failed_at_ms: int, worker: str,
                max_bytes: int = DLQ_VALUE_BYTES) -> dict[str, Any]:
    """The input's coordinates and error, with key and value cut to ``max_bytes`` each: an oversized or
    decompressed-bomb input must not become a dead letter the broker refuses (which would jam the gate).
    The value's length and SHA-256 identify it whole."""
    kind, ts = msg.timestamp()
    key, value = msg.key(), msg.value()
    return {
        "key": key[:max_bytes] if key is not None else None,
        "value": value[:max_bytes] if value is not None else None,
        "value_length": len(value) if value is not None else None,
        "value_sha256": hashlib.sha256(value).hexdigest() if value is not None else None,
        "truncated": (key is not None and len(key) > max_bytes) or (value is not None and len(value) > max_bytes),
        "topic": msg.topic(), "partition": msg.partition(),
        "offset": msg.offset(), "timestamp": ts if kind and ts >= 0 else None,
        "error_class": type(error).__name__, "message": str(error)[:1000], "failed_at": failed_at_ms,
        "worker": worker,
    }
