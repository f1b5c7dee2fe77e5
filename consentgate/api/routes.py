"""``/v1`` routes of SPEC §9: thin over the consent writer, the catalog and the statements the CLI uses."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from consentgate.api.access import Access, Caller
from consentgate.api.errors import BadRequest, Conflict, NotFound, Unprocessable
from consentgate.api.receipts import consent_receipt, notice_version
from consentgate.api.service import ConsentService
from consentgate.catalog import Catalog
from consentgate.cli.consent_cmds import describe
from consentgate.model import PLANS, ConsentState
from consentgate.streams.consent_writer import ConsentRequest

router = APIRouter(prefix="/v1")


class GrantBody(BaseModel):
    """Optional details of a grant."""

    model_config = ConfigDict(extra="forbid")
    expires_at: datetime | None = Field(None, description="ISO-8601 with offset; must be in the future")
    terms_version: int | None = Field(None, description="the terms version the person was shown; refused "
                                      "with 409 when the catalog's terms are newer")


class TierBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tier: Literal["free", "data_sharing"]
    plan: Literal["per_unit", "revenue_share", "credits", "dividend"] | None = None


def _service(request: Request) -> ConsentService:
    service: ConsentService = request.app.state.service
    return service


def _access(request: Request) -> Access:
    access: Access = request.app.state.access
    return access


def _receipt(request: Request, change: dict[str, Any]) -> dict[str, Any]:
    config = request.app.state.api_settings
    return consent_receipt(change, _service(request).catalog, config.controller, config.policy_url)


def _check_pair(catalog: Catalog, category: str, purpose: str) -> None:
    if purpose not in catalog.purposes:
        raise NotFound(f"unknown purpose {purpose[:80]!r}; the catalog has: {', '.join(sorted(catalog.purposes))}",
                       "unknown_purpose")
    if category not in catalog.categories:
        raise NotFound(f"unknown category {category[:80]!r}; the catalog has: "
                       f"{', '.join(sorted(catalog.categories))}", "unknown_category")
    if not catalog.purposes[purpose].accepts(category):
        used = ", ".join(sorted(catalog.purposes[purpose].categories))
        raise Unprocessable(f"purpose {purpose!r} does not use category {category!r} (it uses: {used})",
                            "pair_not_offered")


def _request(request: Request, caller: Caller, action: str, user: str, **fields: Any) -> ConsentRequest:
    config = request.app.state.api_settings
    return ConsentRequest(action, user, source="api", jurisdiction=config.jurisdiction,
                          issuer=caller.principal.issuer, subject=caller.principal.subject, gpc=caller.gpc,
                          collection_method=caller.collection_method(user), **fields)


@router.get("/catalog", summary="The public notice: categories, purposes, terms, rates")
def catalog_notice(request: Request) -> dict[str, Any]:
    catalog = _service(request).catalog
    return {
        "catalog_version": catalog.version, "currency": catalog.currency,
        "credits_per_currency_unit": catalog.credits_per_currency_unit,
        "categories": [{"name": c.name, "title": c.title, "fideslang": c.fideslang, "fields": list(c.fields)}
                       for c in catalog.categories.values()],
        "purposes": [{"name": p.name, "title": p.title, "description": p.description,
                      "terms_version": p.terms_version, "notice_version": notice_version(catalog, p.name),
                      "retention_days": p.retention_days,
                      "categories": [{"category": c, "keeps": list(use.keep), "rate_per_unit": use.rate}
                                     for c, use in p.categories.items()]}
                     for p in catalog.purposes.values()],
        "tiers": {"free": "the full service; nothing of yours trains any AI system unless you turn it on; "
                          "nothing is paid",
                  "data_sharing": "the same full service, and you are paid for what you choose to share"},
        "plans": list(PLANS),
    }


@router.get("/users/{user}/consent", summary="The user's consent state")
def consent_state(user: str, request: Request, response: Response) -> dict[str, Any]:
    _access(request).for_user(request, response, user)
    return describe(user, _service(request).state(user))


@router.put("/users/{user}/grants/{category}/{purpose}", summary="Grant one category for one purpose")
async def grant(user: str, category: str, purpose: str, request: Request, response: Response,
                body: GrantBody | None = None) -> dict[str, Any]:
    caller = _access(request).for_user(request, response, user)
    service = _service(request)
    _check_pair(service.catalog, category, purpose)
    body = body or GrantBody()
    current = service.catalog.purposes[purpose].terms_version
    if body.terms_version is not None and body.terms_version != current:
        raise Conflict(f"the terms of {purpose} are now version {current}; the person was shown version "
                       f"{body.terms_version}: show them the current notice first", "terms_changed")
    if body.expires_at is not None:
        if body.expires_at.tzinfo is None:
            raise BadRequest("expires_at needs a timezone offset, e.g. 2027-01-31T00:00:00Z", "invalid_expiry")
        if body.expires_at <= service.clock():
            raise Unprocessable(f"expiry {body.expires_at.isoformat()} is not in the future", "past_expiry")
    request.app.state.access.limiter.take(user, service.clock())
    change = await service.change_async(_request(
        request, caller, "grant", user, category=category, purpose=purpose, expires_at=body.expires_at,
        notice_version=notice_version(service.catalog, purpose)))
    return _receipt(request, change)


@router.delete("/users/{user}/grants/{category}/{purpose}", summary="Withdraw one grant")
async def revoke(user: str, category: str, purpose: str, request: Request, response: Response) -> dict[str, Any]:
    caller = _access(request).for_user(request, response, user)
    service = _service(request)
    _check_pair(service.catalog, category, purpose)
    return await _withdraw(request, caller, user, category, purpose)


@router.delete("/users/{user}/grants", summary="Withdraw every grant at once")
async def revoke_all(user: str, request: Request, response: Response) -> dict[str, Any]:
    caller = _access(request).for_user(request, response, user)
    return await _withdraw(request, caller, user, None, None)


async def _withdraw(request: Request, caller: Caller, user: str, category: str | None,
                    purpose: str | None) -> dict[str, Any]:
    service = _service(request)
    if not isinstance(service.state(user), ConsentState):
        raise NotFound("this user has no consent recorded: there is nothing to withdraw", "no_consent")
    service_limiter = request.app.state.access.limiter
    service_limiter.take(user, service.clock())
    version = notice_version(service.catalog, purpose) if purpose else f"catalog-{service.catalog.version}"
    change = await service.change_async(_request(request, caller, "revoke", user, category=category,
                                                 purpose=purpose, notice_version=version))
    return _receipt(request, change)


@router.put("/users/{user}/tier", summary="Choose the free or the data-sharing tier, and a plan")
async def tier(user: str, body: TierBody, request: Request, response: Response) -> dict[str, Any]:
    caller = _access(request).for_user(request, response, user)
    service = _service(request)
    if body.tier == "free" and body.plan is not None:
        raise Unprocessable("the free tier has no compensation plan", "plan_on_free_tier")
    if body.tier == "data_sharing" and body.plan is None:
        raise Unprocessable(f"the data_sharing tier needs a plan: one of {', '.join(PLANS)}", "plan_required")
    request.app.state.access.limiter.take(user, service.clock())
    change = await service.change_async(_request(request, caller, "tier", user, tier=body.tier, plan=body.plan,
                                                 notice_version=f"catalog-{service.catalog.version}"))
    return _receipt(request, change)


@router.post("/users/{user}/erase", status_code=202, summary="Erase the user and retract their training data")
async def erase(user: str, request: Request, response: Response) -> JSONResponse:
    caller = _access(request).for_user(request, response, user)
    service = _service(request)
    request.app.state.access.limiter.take(user, service.clock())
    change = await service.change_async(_request(request, caller, "erase", user,
                                                 notice_version=f"catalog-{service.catalog.version}"))
    return JSONResponse(_receipt(request, change), status_code=202, headers=dict(response.headers))


@router.get("/users/{user}/receipts", summary="The user's consent history, oldest first")
def receipts(user: str, request: Request, response: Response) -> dict[str, Any]:
    _access(request).for_user(request, response, user)
    return {"user_id": user, "receipts": [_receipt(request, c) for c in _service(request).receipts(user)]}


@router.get("/users/{user}/statement", summary="What the user's data earned, as `statement --format json`")
def statement(user: str, request: Request, response: Response, period: str | None = None) -> dict[str, Any]:
    _access(request).for_user(request, response, user)
    return _service(request).statement(user, period)


@router.get("/users/{user}/export", summary="Download the user's statement and receipts as one JSON file")
def export(user: str, request: Request, response: Response) -> JSONResponse:
    _access(request).for_user(request, response, user)
    service = _service(request)
    body = {"user_id": user, "exported_at": service.clock().isoformat(),
            "consent": describe(user, service.state(user)),
            "receipts": [_receipt(request, c) for c in service.receipts(user)],
            "statement": service.statement(user, None)}
    return JSONResponse(body, headers={"Content-Disposition": 'attachment; filename="my-consent-and-earnings.json"'})
