"""The consent service's additions to the consent core: receipt fields that old readers and data survive,
and the tier change, which never grants."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import fastavro
import pytest

from consentgate.errors import ConsentRequestError
from consentgate.model import ConsentState, Erased, Grant
from consentgate.schemas.contracts import schema_text
from consentgate.streams.consent_rules import check_tier, with_tier

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
ADDED = ("issuer", "subject", "gpc", "collection_method")


def test_receipt_fields_are_backward_compatible() -> None:
    new = json.loads(schema_text("ConsentChange"))
    old = {**new, "fields": [f for f in new["fields"] if f["name"] not in ADDED]}
    assert [f["name"] for f in new["fields"] if f["name"] in ADDED] == list(ADDED)
    assert all("default" in f for f in new["fields"] if f["name"] in ADDED)
    written_before = {"receipt_id": "r", "user_id": "u", "action": "grant", "category": "post",
                      "purpose": "p", "at": NOW, "source": "cli", "consent_version": 1}
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(old), written_before)
    read = fastavro.schemaless_reader(io.BytesIO(out.getvalue()), fastavro.parse_schema(old),
                                      fastavro.parse_schema(new))
    assert {k: read[k] for k in ADDED} == {"issuer": None, "subject": None, "gpc": False, "collection_method": None}
    # and a reader still on the old schema reads what the service writes now
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(new), {**written_before, "source": "api", "issuer": "i",
                                                                  "subject": "u", "gpc": True,
                                                                  "collection_method": "web_page"})
    back = fastavro.schemaless_reader(io.BytesIO(out.getvalue()), fastavro.parse_schema(new),
                                      fastavro.parse_schema(old))
    assert back["source"] == "api" and "gpc" not in back


def test_a_tier_change_keeps_grants_and_never_adds_one() -> None:
    grant = Grant("post", "train_ai_system.generative", NOW, None, 2, "r-1")
    state = ConsentState("alice", 3, NOW, "free", None, (grant,))
    assert with_tier(state, "alice", 4, NOW, "data_sharing", "credits") == ConsentState(
        "alice", 4, NOW, "data_sharing", "credits", (grant,))
    assert with_tier(None, "bob", 1, NOW, "data_sharing", "per_unit") == ConsentState(
        "bob", 1, NOW, "data_sharing", "per_unit", ())
    assert with_tier(Erased("eve"), "eve", 7, NOW, "free", None) == ConsentState("eve", 7, NOW, "free", None, ())


@pytest.mark.parametrize("tier, plan, message", [
    ("gold", None, "unknown tier 'gold'; choose from free, data_sharing"),
    (None, None, "unknown tier None; choose from free, data_sharing"),
    ("free", "credits", "the free tier has no compensation plan"),
    ("data_sharing", None, "the data_sharing tier needs a plan; choose from per_unit, revenue_share, credits, dividend"),
    ("data_sharing", "barter", "unknown plan 'barter'; choose from per_unit, revenue_share, credits, dividend"),
])
def test_tier_refusals(tier: str | None, plan: str | None, message: str) -> None:
    with pytest.raises(ConsentRequestError) as caught:
        check_tier(tier, plan)
    assert str(caught.value) == message
