"""A person's consent receipt, shaped after the Kantara Consent Receipt v1.1 and ISO/IEC TS 27560.

The ConsentChange record on ``consent.changes`` is the evidence; this is how the person (and an
auditor) reads it. Kantara v1.1 fields carry the who/what/when a receipt needs: ``version``,
``jurisdiction``, ``consentTimestamp``, ``collectionMethod``, ``consentReceiptID``,
``piiPrincipalId``, ``piiControllers``, ``policyUrl``, ``services[].purposes[]`` (purpose,
purposeCategory, consentType, piiCategory, termination). TS 27560 adds what Kantara lacks and
GDPR Art 7(1) needs to prove consent: the notice and terms version shown, the event type
(given, withdrawn, erased), and who acted (the token's issuer and subject, which differ from the
person when a platform back-end acts with ``consent:admin``). Those sit under ``record``.
Nothing in a receipt is free text from the caller: every value comes from the catalog, the
service's settings or the verified token.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from consentgate.catalog import Catalog

RECEIPT_VERSION = "KI-CR-v1.1.0"
EVENTS = {"grant": "given", "revoke": "withdrawn", "erase": "erased", "tier": "tier_changed",
          "gpc_opt_out": "gpc_opt_out"}


def _epoch_s(at: Any) -> int:
    if isinstance(at, datetime):
        return int(at.timestamp())
    if isinstance(at, (int, float)):
        return int(at / 1000)
    return int(datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp())


def _iso(at: Any) -> str | None:
    if at is None:
        return None
    if isinstance(at, (int, float)):
        at = datetime.fromtimestamp(at / 1000, timezone.utc)
    if isinstance(at, datetime):
        return at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(at)


def consent_receipt(change: dict[str, Any], catalog: Catalog, controller: str, policy_url: str) -> dict[str, Any]:
    """The receipt for one ConsentChange (as the writer returns it or ``tail --json`` prints it)."""
    action = change["action"]
    purposes: list[dict[str, Any]] = []
    names = [change["purpose"]] if change.get("purpose") else (sorted(catalog.purposes) if action != "tier" else [])
    for name in names:
        purpose = catalog.purposes.get(name)
        categories = [change["category"]] if change.get("category") else (
            sorted(purpose.categories) if purpose else [])
        purposes.append({
            "purpose": purpose.title if purpose else name,
            "purposeCategory": [name],
            "consentType": "EXPLICIT",
            "piiCategory": [catalog.categories[c].fideslang if c in catalog.categories else c for c in categories],
            "primaryPurpose": False,  # training is never needed for the core service
            "termination": (f"at {_iso(change['expires_at'])} or on withdrawal" if change.get("expires_at")
                            else "on withdrawal"),
            "thirdPartyDisclosure": False,
        })
    return {
        "version": RECEIPT_VERSION,
        "jurisdiction": change.get("jurisdiction") or "",
        "consentTimestamp": _epoch_s(change["at"]),
        "collectionMethod": change.get("collection_method") or change.get("source") or "",
        "consentReceiptID": change["receipt_id"],
        "language": "en",
        "piiPrincipalId": change["user_id"],
        "piiControllers": [{"piiController": controller, "onBehalf": False, "url": policy_url}],
        "policyUrl": policy_url,
        "services": [{"service": "AI training", "purposes": purposes}] if purposes else [],
        "sensitive": False,
        "spiCat": [],
        "record": {
            "event": EVENTS.get(action, action),
            "action": action,
            "at": _iso(change["at"]),
            "category": change.get("category"),
            "purpose": change.get("purpose"),
            "terms_version": change.get("terms_version"),
            "notice_version": change.get("notice_version"),
            "expires_at": _iso(change.get("expires_at")),
            "tier": change.get("tier"),
            "plan": change.get("plan"),
            "consent_version": change["consent_version"],
            "source": change.get("source"),
            "actor": {"issuer": change.get("issuer"), "subject": change.get("subject")},
            "gpc": bool(change.get("gpc")),
        },
    }


def notice_version(catalog: Catalog, purpose: str) -> str:
    """The version of the notice text a person was shown for ``purpose``: catalog and terms version."""
    return f"catalog-{catalog.version}/{purpose}/terms-{catalog.purposes[purpose].terms_version}"
