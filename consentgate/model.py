"""Domain values shared by the decision, the codecs and the processors. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, NamedTuple


class DropReason(str, Enum):
    NO_CONSENT_RECORD = "no_consent_record"
    ERASED = "erased"
    NO_GRANT = "no_grant"
    GRANT_AFTER_EVENT = "grant_after_event"
    EXPIRED = "expired"
    STALE_TERMS = "stale_terms"
    UNKNOWN_CATEGORY = "unknown_category"


TIERS = ("free", "data_sharing")
PLANS = ("per_unit", "revenue_share", "credits", "dividend")


class ActivityEvent(NamedTuple):
    """One activity record. NamedTuples (not frozen dataclasses) for the per-record types:
    they are immutable too and several times cheaper to build in the gate's loop."""

    event_id: str
    user_id: str
    category: str
    occurred_at: datetime
    source: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Grant:
    category: str
    purpose: str
    granted_at: datetime
    expires_at: datetime | None
    terms_version: int
    receipt_id: str


@dataclass(frozen=True, slots=True)
class ConsentState:
    user_id: str
    version: int
    updated_at: datetime
    tier: str
    plan: str | None
    grants: tuple[Grant, ...] = ()

    def grant_for(self, category: str, purpose: str) -> Grant | None:
        for grant in self.grants:
            if grant.category == category and grant.purpose == purpose:
                return grant
        return None


@dataclass(frozen=True, slots=True)
class Erased:
    """The user was erased: consent.state holds a tombstone for them."""

    user_id: str


ConsentLookup = ConsentState | Erased | None


class Outcome(NamedTuple):
    purpose: str
    passed: bool
    reason: DropReason | None = None
    grant: Grant | None = None  # the grant a pass rests on


class Decision(NamedTuple):
    event_id: str
    user_id: str
    category: str
    outcomes: tuple[Outcome, ...]
    consent_version: int | None

    @property
    def passed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.passed)
