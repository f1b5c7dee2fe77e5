from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from consentgate.streams.consent_rules import check_grant, with_grant, without_grants

from consentgate.catalog import load_catalog
from consentgate.errors import ConsentRequestError
from consentgate.model import ConsentState, Erased, Grant

CATALOG = load_catalog()
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
GEN, REC = "train_ai_system.generative", "train_ai_system.recommendation"


@pytest.mark.parametrize(("category", "purpose", "expires", "tier", "plan", "message"), [
    ("post", "train_ai_system.everything", None, None, None,
     "unknown purpose 'train_ai_system.everything'; the catalog has: train_ai_system.ads_ranking, "
     "train_ai_system.generative, train_ai_system.recommendation"),
    ("voice", GEN, None, None, None,
     "unknown category 'voice'; the catalog has: click, conversation, post, search, signal"),
    ("click", GEN, None, None, None,
     "purpose 'train_ai_system.generative' does not use category 'click' (it uses: conversation, post)"),
    ("post", GEN, NOW, None, None, "expiry 2026-06-01T00:00:00+00:00 is not in the future"),
    ("post", GEN, None, "free", "per_unit", "the free tier has no compensation plan"),
    ("post", GEN, None, "gold", None, "unknown tier 'gold'; choose from free, data_sharing"),
])
def test_refused_grants(category: str, purpose: str, expires: datetime | None, tier: str | None, plan: str | None,
                        message: str) -> None:
    with pytest.raises(ConsentRequestError) as info:
        check_grant(CATALOG, category, purpose, expires, NOW, tier, plan)
    assert str(info.value) == message


def test_grant_replaces_same_pair_and_keeps_others() -> None:
    g1 = Grant("post", GEN, NOW, None, 2, "r1")
    g2 = Grant("post", REC, NOW, None, 3, "r2")
    g3 = Grant("post", GEN, NOW + timedelta(1), None, 2, "r3")
    s1 = with_grant(None, "u", g1, 1, NOW, "data_sharing", "per_unit")
    assert s1 == ConsentState("u", 1, NOW, "data_sharing", "per_unit", (g1,))
    s3 = with_grant(with_grant(s1, "u", g2, 2, NOW, None, None), "u", g3, 3, NOW, None, None)
    assert s3.grants == (g2, g3) and s3.version == 3 and s3.plan == "per_unit"
    assert with_grant(Erased("u"), "u", g1, 9, NOW, None, None) == ConsentState("u", 9, NOW, "free", None, (g1,))
    assert without_grants(s3, 4, NOW, None, GEN).grants == (g2,)
    assert without_grants(s3, 4, NOW, "post", None).grants == ()
