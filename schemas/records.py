"""Conversions between decoded Avro dicts and domain values, with contract checks."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from consentgate.schemas.contracts import GENERIC_BRANCH, PAYLOAD_BRANCH
from consentgate.schemas.errors import (
    ImpossibleTimestamp,
    InvalidIdentifier,
    MissingIdentifier,
    PayloadMismatch,
)

from consentgate.identifiers import identifier_problem
from consentgate.model import ActivityEvent, ConsentState, Grant

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def activity_from_avro(value: dict[str, Any]) -> ActivityEvent:
    """Build an ActivityEvent from a decoded record (read with ``return_record_name``)."""
    if not value["event_id"] or not value["user_id"]:
        missing = "event_id" if not value["event_id"] else "user_id"
        raise MissingIdentifier(f"record has an empty {missing}")
    category = value["category"]
    for name in ("event_id", "user_id", "category"):
        problem = identifier_problem(value[name])
        if problem is not None:
            raise InvalidIdentifier(f"{name} {problem}")
    branch, body = value["payload"]
    expected = PAYLOAD_BRANCH.get(category)
    if expected is not None and branch != expected:
        raise PayloadMismatch(f"category {category!r} needs payload {expected.rsplit('.', 1)[1]}, "
                              f"got {branch.rsplit('.', 1)[1]}")
    payload = dict(body["fields"]) if branch == GENERIC_BRANCH else body
    return ActivityEvent(value["event_id"], value["user_id"], category, value["occurred_at"], value["source"],
                         payload)


def activity_to_avro(event: ActivityEvent) -> dict[str, Any]:
    branch = PAYLOAD_BRANCH.get(event.category)
    if branch is None:
        payload: tuple[str, dict[str, Any]] = (GENERIC_BRANCH, {"fields": {k: str(v) for k, v in
                                                                          event.payload.items()}})
    else:
        payload = (branch, event.payload)
    return {"event_id": event.event_id, "user_id": event.user_id, "category": event.category,
            "occurred_at": event.occurred_at, "source": event.source, "payload": payload}


def check_occurred_at(event: ActivityEvent, now: datetime, skew_limit: datetime) -> None:
    """Reject times before the epoch or beyond ``skew_limit`` (now + allowed clock skew)."""
    if event.occurred_at > skew_limit:
        raise ImpossibleTimestamp(f"occurred_at {event.occurred_at.isoformat()} is beyond the clock-skew "
                                  f"allowance ({now.isoformat()} + {skew_limit - now})")
    if event.occurred_at < EPOCH:
        raise ImpossibleTimestamp(f"occurred_at {event.occurred_at.isoformat()} is before 1970")


def grant_from_avro(value: dict[str, Any]) -> Grant:
    return Grant(value["category"], value["purpose"], value["granted_at"], value["expires_at"],
                 value["terms_version"], value["receipt_id"])


def grant_to_avro(grant: Grant) -> dict[str, Any]:
    return {"category": grant.category, "purpose": grant.purpose, "granted_at": grant.granted_at,
            "expires_at": grant.expires_at, "terms_version": grant.terms_version,
            "receipt_id": grant.receipt_id}


def consent_from_avro(value: dict[str, Any]) -> ConsentState:
    return ConsentState(value["user_id"], value["version"], value["updated_at"], value["tier"], value["plan"],
                        tuple(grant_from_avro(g) for g in value["grants"]))


def consent_to_avro(state: ConsentState) -> dict[str, Any]:
    return {"user_id": state.user_id, "version": state.version, "updated_at": state.updated_at,
            "tier": state.tier, "plan": state.plan, "grants": [grant_to_avro(g) for g in state.grants]}
