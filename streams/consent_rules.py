"""Pure consent-change rules: what a grant, revoke or erase does to a ConsentState."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from consentgate.catalog import Catalog
from consentgate.errors import ConsentRequestError
from consentgate.model import PLANS, TIERS, ConsentLookup, ConsentState, Erased, Grant


def check_grant(catalog: Catalog, category: str, purpose: str, expires_at: datetime | None, now: datetime,
                tier: str | None, plan: str | None, terms_version: int | None = None) -> None:
    """Refuse a grant the catalog cannot honour, with a message a person can act on."""
    if purpose not in catalog.purposes:
        raise ConsentRequestError(f"unknown purpose {purpose!r}; the catalog has: "
                                  f"{', '.join(sorted(catalog.purposes))}")
    if category not in catalog.categories:
        raise ConsentRequestError(f"unknown category {category!r}; the catalog has: "
                                  f"{', '.join(sorted(catalog.categories))}")
    if not catalog.purposes[purpose].accepts(category):
        accepted = ", ".join(sorted(catalog.purposes[purpose].categories))
        raise ConsentRequestError(f"purpose {purpose!r} does not use category {category!r} "
                                  f"(it uses: {accepted})")
    if expires_at is not None and expires_at <= now:
        raise ConsentRequestError(f"expiry {expires_at.isoformat()} is not in the future")
    if tier is not None and tier not in TIERS:
        raise ConsentRequestError(f"unknown tier {tier!r}; choose from {', '.join(TIERS)}")
    if plan is not None and plan not in PLANS:
        raise ConsentRequestError(f"unknown plan {plan!r}; choose from {', '.join(PLANS)}")
    if terms_version is not None and not 1 <= terms_version <= catalog.purposes[purpose].terms_version:
        raise ConsentRequestError(f"terms_version {terms_version} is not a version of {purpose!r}'s terms "
                                  f"(1..{catalog.purposes[purpose].terms_version})")
    if tier == "free" and plan is not None:
        raise ConsentRequestError("the free tier has no compensation plan")


def with_grant(current: ConsentLookup, user_id: str, grant: Grant, version: int, now: datetime,
               tier: str | None, plan: str | None) -> ConsentState:
    """The state after ``grant``; a grant replaces any earlier one for the same (category, purpose)."""
    if current is None or isinstance(current, Erased):
        base = ConsentState(user_id, version, now, tier or "free", plan if (tier or "free") != "free" else None)
    else:
        new_tier = tier or current.tier
        base = replace(current, version=version, updated_at=now, tier=new_tier,
                       plan=None if new_tier == "free" else (plan or current.plan))
    kept = tuple(g for g in base.grants if (g.category, g.purpose) != (grant.category, grant.purpose))
    return replace(base, grants=(*kept, grant))


def without_grants(current: ConsentState, version: int, now: datetime, category: str | None,
                   purpose: str | None) -> ConsentState:
    """The state after revoking every grant matching ``category`` and ``purpose`` (None = any)."""
    kept = tuple(g for g in current.grants
                 if not ((category is None or g.category == category) and (purpose is None or g.purpose == purpose)))
    return replace(current, version=version, updated_at=now, grants=kept)


def check_tier(tier: str | None, plan: str | None) -> None:
    """Refuse a tier change that names no tier, an unknown one, or a plan the tier cannot have."""
    if tier not in TIERS:
        raise ConsentRequestError(f"unknown tier {tier!r}; choose from {', '.join(TIERS)}")
    if plan is not None and plan not in PLANS:
        raise ConsentRequestError(f"unknown plan {plan!r}; choose from {', '.join(PLANS)}")
    if tier == "free" and plan is not None:
        raise ConsentRequestError("the free tier has no compensation plan")
    if tier == "data_sharing" and plan is None:
        raise ConsentRequestError("the data_sharing tier needs a plan; choose from " + ", ".join(PLANS))


def with_tier(current: ConsentLookup, user_id: str, version: int, now: datetime, tier: str,
              plan: str | None) -> ConsentState:
    """The state after choosing ``tier`` (and ``plan``); grants are untouched: a tier never grants."""
    if current is None or isinstance(current, Erased):
        return ConsentState(user_id, version, now, tier, plan)
    return replace(current, version=version, updated_at=now, tier=tier, plan=plan)
