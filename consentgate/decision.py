"""The consent decision (SPEC §3), a pure function of its arguments.

No Kafka, no Avro, no clock reads: the caller passes ``now``. A drop is an
``Outcome`` with a reason, never an exception. Default is deny.
"""

from __future__ import annotations

from datetime import datetime

from consentgate.catalog import Catalog
from consentgate.model import (
    ActivityEvent,
    ConsentLookup,
    Decision,
    DropReason,
    Erased,
    Outcome,
)


def decide(event: ActivityEvent, consent: ConsentLookup, catalog: Catalog, now: datetime) -> Decision:
    """Decide ``event`` for every purpose whose catalog entry accepts its category."""
    version = consent.version if consent is not None and not isinstance(consent, Erased) else None
    if event.category not in catalog.categories:
        outcomes = tuple(Outcome(p, False, DropReason.UNKNOWN_CATEGORY) for p in catalog.purposes)
        return Decision(event.event_id, event.user_id, event.category, outcomes, version)
    outcomes = tuple(
        _outcome(event, consent, purpose.name, purpose.terms_version, now)
        for purpose in catalog.purposes_for(event.category)
    )
    return Decision(event.event_id, event.user_id, event.category, outcomes, version)


def _outcome(event: ActivityEvent, consent: ConsentLookup, purpose: str, terms_version: int,
             now: datetime) -> Outcome:
    if consent is None:
        return Outcome(purpose, False, DropReason.NO_CONSENT_RECORD)
    if isinstance(consent, Erased):
        return Outcome(purpose, False, DropReason.ERASED)
    grant = consent.grant_for(event.category, purpose)
    if grant is None:
        return Outcome(purpose, False, DropReason.NO_GRANT)
    if grant.granted_at > event.occurred_at:
        return Outcome(purpose, False, DropReason.GRANT_AFTER_EVENT)
    if grant.expires_at is not None and (grant.expires_at <= event.occurred_at or grant.expires_at <= now):
        return Outcome(purpose, False, DropReason.EXPIRED)
    if grant.terms_version < terms_version:
        return Outcome(purpose, False, DropReason.STALE_TERMS)
    return Outcome(purpose, True, None, grant)
