"""What the gate writes for one input record, as Avro-ready dicts. Pure: no I/O, no clock."""

from __future__ import annotations

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


def training_record(event: ActivityEvent, outcome: Outcome, catalog: Catalog, nym: str,
                    consent_version: int) -> dict[str, Any]:
    """Minimised to the fields the catalog keeps for this purpose and category."""
    assert outcome.grant is not None
    keep = catalog.purposes[outcome.purpose].categories[event.category].keep
    payload = event.payload
    return {
        "pseudonym": nym, "event_id": event.event_id, "purpose": outcome.purpose, "category": event.category,
        "occurred_at": event.occurred_at, "fields": {name: payload[name] for name in keep if name in payload},
        "receipt_id": outcome.grant.receipt_id, "consent_version": consent_version,
    }


def contribution_record(event: ActivityEvent, outcome: Outcome, consent: ConsentLookup,
                        assessment: Assessment) -> dict[str, Any]:
    assert outcome.grant is not None and isinstance(consent, ConsentState)
    return {
        "event_id": event.event_id, "purpose": outcome.purpose, "user_id": event.user_id,
        "category": event.category, "units": 1, "quality": assessment.quality,
        "fingerprint": assessment.fingerprint, "occurred_at": event.occurred_at,
        "tier": consent.tier, "plan": consent.plan, "receipt_id": outcome.grant.receipt_id,
        "consent_version": consent.version,
    }


def dead_letter(msg: Message, error: Exception, failed_at_ms: int, worker: str) -> dict[str, Any]:
    kind, ts = msg.timestamp()
    return {
        "key": msg.key(), "value": msg.value(), "topic": msg.topic(), "partition": msg.partition(),
        "offset": msg.offset(), "timestamp": ts if kind and ts >= 0 else None,
        "error_class": type(error).__name__, "message": str(error)[:1000], "failed_at": failed_at_ms,
        "worker": worker,
    }
