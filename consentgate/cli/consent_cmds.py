"""``consentgate consent grant | revoke | erase | show``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from consentgate.cli.options import add_connection, catalog_of, settings_from
from consentgate.connectors.jsonl import JsonLineError, parse_time, to_jsonable
from consentgate.errors import ConsentRequestError
from consentgate.model import PLANS, TIERS, ConsentState, Erased
from consentgate.schemas.records import consent_to_avro
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    consent = sub.add_parser("consent", help="record or inspect a user's consent").add_subparsers(required=True)
    p = consent.add_parser("grant", help="grant one category for one purpose")
    _change_args(p, pair_required=True)
    p.add_argument("--expires", help="ISO-8601 expiry with offset; must be in the future")
    p.add_argument("--tier", choices=TIERS)
    p.add_argument("--plan", choices=PLANS)
    p.add_argument("--jurisdiction")
    p.set_defaults(run=run_change, action="grant")
    p = consent.add_parser("revoke", help="revoke grants (all, or those matching category/purpose)")
    _change_args(p, pair_required=False)
    p.set_defaults(run=run_change, action="revoke")
    p = consent.add_parser("erase", help="erase the user: tombstone their consent and retract training data")
    p.add_argument("--user", required=True)
    p.add_argument("--source", default="cli")
    add_connection(p)
    p.set_defaults(run=run_change, action="erase")
    p = consent.add_parser("show", help="print the user's committed consent as JSON")
    p.add_argument("--user", required=True)
    add_connection(p)
    p.set_defaults(run=run_show)


def _change_args(p: argparse.ArgumentParser, pair_required: bool) -> None:
    p.add_argument("--user", required=True)
    p.add_argument("--category", required=pair_required)
    p.add_argument("--purpose", required=pair_required)
    p.add_argument("--source", default="cli")
    add_connection(p)


def _request(args: argparse.Namespace) -> ConsentRequest:
    expires = None
    if getattr(args, "expires", None):
        try:
            expires = parse_time(args.expires, "--expires")
        except JsonLineError as exc:
            raise ConsentRequestError(str(exc)) from exc
    return ConsentRequest(args.action, args.user, getattr(args, "category", None), getattr(args, "purpose", None),
                          expires, getattr(args, "tier", None), getattr(args, "plan", None), args.source,
                          getattr(args, "jurisdiction", None))


def run_change(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    request = _request(args)
    with ConsentWriter(settings, catalog_of(settings)) as writer:
        receipt = writer.apply([request])[0]
    print(json.dumps(to_jsonable(receipt)))
    return 0


def describe(user_id: str, lookup: ConsentState | Erased | None) -> dict[str, Any]:
    if lookup is None:
        return {"user_id": user_id, "consent": None}
    if isinstance(lookup, Erased):
        return {"user_id": user_id, "erased": True}
    out: dict[str, Any] = to_jsonable(consent_to_avro(lookup))
    return out


def run_show(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    with ConsentWriter(settings, catalog_of(settings)) as writer:
        print(json.dumps(describe(args.user, writer.show(args.user))))
    return 0
