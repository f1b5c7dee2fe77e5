"""The consent service's rules without a server: tokens, sessions and CSRF, the rate limit, ids, receipts."""

from __future__ import annotations

import base64
import json
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from consentgate.api import ApiSettings, demo_access, issue_token, with_local_secret
from consentgate.api.auth import Principal, RateLimiter, SessionStore, TokenVerifier, check_id
from consentgate.api.errors import BadRequest, Forbidden, RateLimited, Unauthenticated
from consentgate.api.receipts import consent_receipt
from consentgate.catalog import load_catalog
from consentgate.errors import ConfigurationError
from consentgate.settings import Settings

SECRET = "platform-signing-secret-0123456789abcdef"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
GEN = "train_ai_system.generative"


def hs(claims: dict[str, object], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "exp": int(NOW.timestamp()) + 600, **extra}


def verifier(**kwargs: object) -> TokenVerifier:
    return TokenVerifier(SECRET, ["HS256"], leeway_s=30, **kwargs)  # type: ignore[arg-type]


def refused(token: str, v: TokenVerifier | None = None) -> tuple[str, str]:
    with pytest.raises(Unauthenticated) as caught:
        (v or verifier()).verify(token, NOW)
    return caught.value.code, caught.value.message


def test_a_valid_user_token_names_its_subject_and_is_not_admin() -> None:
    principal = verifier().verify(hs(claims(iss="platform")), NOW)
    assert principal == Principal("alice", "platform", False, NOW + timedelta(seconds=600))
    principal.may_act_on("alice")
    with pytest.raises(Forbidden, match="only on its own user"):
        principal.may_act_on("bob")


def test_consent_admin_scope_acts_on_anyone() -> None:
    for scope in ("openid consent:admin", ["consent:admin"]):
        principal = verifier().verify(hs(claims(sub="billing-backend", scope=scope)), NOW)
        assert principal.admin
        principal.may_act_on("bob")
    assert not verifier().verify(hs(claims(scope="consent:read consent:adminx")), NOW).admin


def test_token_refusals_each_say_why() -> None:
    unsigned = (base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
                + "." + base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode() + ".")
    assert refused(unsigned) == ("invalid_token", "token algorithm 'none' is not accepted (accepted: HS256)")
    assert refused(hs(claims(), key="another-secret-of-the-same-length-0123")) == (
        "invalid_token", "the token's signature does not verify")
    assert refused(hs(claims(exp=int(NOW.timestamp()) - 31))) == (
        "token_expired", "the token expired at 2026-11-28T11:59:29+00:00")
    # within the leeway it still verifies
    assert verifier().verify(hs(claims(exp=int(NOW.timestamp()) - 29)), NOW).subject == "alice"
    assert refused(hs({"sub": "alice"})) == ("invalid_token", "the token has no 'exp' claim")
    assert refused(hs({"exp": int(NOW.timestamp()) + 60})) == ("invalid_token", "the token has no 'sub' claim")
    assert refused("not-a-token") == ("invalid_token", "the token is not a JWT")
    assert refused(hs(claims(sub="a" * 201))) == (
        "invalid_token", "the token's subject is 201 characters long; the limit is 200")
    assert refused(hs(claims(nbf=int(NOW.timestamp()) + 600))) == ("invalid_token", "the token is not valid yet")


def test_issuer_and_audience_are_checked_where_configured() -> None:
    strict = verifier(issuer="https://id.example", audience="consentgate")
    good = hs(claims(iss="https://id.example", aud="consentgate"))
    assert strict.verify(good, NOW).issuer == "https://id.example"
    assert refused(hs(claims(iss="https://evil.example", aud="consentgate")), strict) == (
        "invalid_token", "the token's issuer is not 'https://id.example'")
    assert refused(hs(claims(iss="https://id.example", aud="ads")), strict) == (
        "invalid_token", "the token's audience is not 'consentgate'")
    assert refused(hs(claims(aud="consentgate")), strict) == ("invalid_token", "the token has no 'iss' claim")


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
def test_public_key_tokens(kind: str) -> None:
    private = rsa.generate_private_key(65537, 2048) if kind == "RS256" else ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    key, algorithms = ApiSettings(jwt_public_key=pem).verification_key()
    assert algorithms == [kind]
    v = TokenVerifier(key, algorithms)
    assert v.verify(jwt.encode(claims(), private, algorithm=kind), NOW).subject == "alice"
    # An HS256 token "signed" with the public key text must not pass (algorithm confusion).
    forged = jwt.encode(claims(), "x" * 32, algorithm="HS256")
    assert refused(forged, v) == ("invalid_token", f"token algorithm 'HS256' is not accepted (accepted: {kind})")


def test_settings_refuse_to_verify_without_a_key_or_with_a_short_secret() -> None:
    with pytest.raises(ConfigurationError, match="set CONSENTGATE_API_JWT_SECRET"):
        ApiSettings().verification_key()
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        ApiSettings(jwt_secret="short").verification_key()
    with pytest.raises(ConfigurationError, match="not a PEM public key"):
        ApiSettings(jwt_public_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----").verification_key()


def test_issued_demo_tokens_verify() -> None:
    config = ApiSettings(jwt_secret=SECRET, jwt_issuer="demo", jwt_audience="consentgate")
    key, algorithms = config.verification_key()
    principal = TokenVerifier(key, algorithms, "demo", "consentgate").verify(
        issue_token(config, "user-0000001", ttl_s=60, admin=True, now=NOW), NOW)
    assert (principal.subject, principal.issuer, principal.admin) == ("user-0000001", "demo", True)


def test_csrf_tokens_are_spent_once_and_bound_to_their_session() -> None:
    store = SessionStore(ttl_s=3600)
    principal = Principal("alice", None, False, NOW + timedelta(hours=2))
    sid, session = store.open(principal, NOW)
    other_sid, other = store.open(principal, NOW)
    first = session.csrf
    second = store.spend_csrf(session, first)
    assert second != first and session.csrf == second
    with pytest.raises(Forbidden) as replay:
        store.spend_csrf(session, first)
    assert (replay.value.code, replay.value.message) == ("csrf_replayed",
                                                         "this CSRF token was already used: reload the page")
    with pytest.raises(Forbidden) as foreign:
        store.spend_csrf(session, other.csrf)
    assert foreign.value.code == "csrf_invalid"
    with pytest.raises(Forbidden) as missing:
        store.spend_csrf(session, None)
    assert missing.value.code == "csrf_missing"
    assert store.get(sid, NOW) is session
    # a session never outlives the token it came from, nor its TTL
    assert session.expires_at == NOW + timedelta(hours=1)
    short = Principal("alice", None, False, NOW + timedelta(minutes=5))
    assert store.open(short, NOW)[1].expires_at == NOW + timedelta(minutes=5)
    with pytest.raises(Unauthenticated, match="expired"):
        store.get(sid, NOW + timedelta(hours=1))
    store.close(other_sid)
    with pytest.raises(Unauthenticated, match="not signed in"):
        store.get(other_sid, NOW)


def test_rate_limit_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)
    for _ in range(3):
        limiter.take("alice", NOW)
    with pytest.raises(RateLimited) as caught:
        limiter.take("alice", NOW)
    assert caught.value.retry_after_s == 2 and caught.value.status == 429
    limiter.take("bob", NOW)  # per user
    limiter.take("alice", NOW + timedelta(seconds=1))
    with pytest.raises(RateLimited):
        limiter.take("alice", NOW + timedelta(seconds=1))


def test_ids_over_the_limits_are_refused() -> None:
    assert check_id("u" * 200, "user") == "u" * 200
    for bad, why in [("", "user is empty"), ("u" * 201, "user is 201 characters long; the limit is 200"),
                     ("a\nb", "user contains control characters"), ("a\x85b", "user contains control characters")]:
        with pytest.raises(BadRequest) as caught:
            check_id(bad, "user")
        assert caught.value.message == why


def test_receipt_has_the_kantara_shape_and_only_values_from_the_catalog_and_token() -> None:
    change = {"receipt_id": "r-1", "user_id": "alice", "action": "grant", "category": "post", "purpose": GEN,
              "at": NOW, "source": "api", "terms_version": 2, "notice_version": "catalog-1/x/terms-2",
              "jurisdiction": "EU", "expires_at": NOW + timedelta(days=30), "tier": "free", "plan": None,
              "consent_version": 4, "issuer": "https://id.example", "subject": "alice", "gpc": True,
              "collection_method": "web_page"}
    receipt = consent_receipt(change, load_catalog(), "Example Ltd", "https://example.com/privacy")
    assert receipt == {
        "version": "KI-CR-v1.1.0", "jurisdiction": "EU", "consentTimestamp": int(NOW.timestamp()),
        "collectionMethod": "web_page", "consentReceiptID": "r-1", "language": "en", "piiPrincipalId": "alice",
        "piiControllers": [{"piiController": "Example Ltd", "onBehalf": False, "url": "https://example.com/privacy"}],
        "policyUrl": "https://example.com/privacy",
        "services": [{"service": "AI training", "purposes": [{
            "purpose": "Train the generative assistant", "purposeCategory": [GEN], "consentType": "EXPLICIT",
            "piiCategory": ["user.content.public"], "primaryPurpose": False,
            "termination": "at 2026-12-28T12:00:00.000Z or on withdrawal", "thirdPartyDisclosure": False}]}],
        "sensitive": False, "spiCat": [],
        "record": {"event": "given", "action": "grant", "at": "2026-11-28T12:00:00.000Z", "category": "post",
                   "purpose": GEN, "terms_version": 2, "notice_version": "catalog-1/x/terms-2",
                   "expires_at": "2026-12-28T12:00:00.000Z", "tier": "free", "plan": None, "consent_version": 4,
                   "source": "api", "actor": {"issuer": "https://id.example", "subject": "alice"}, "gpc": True}}
    erase = consent_receipt({**change, "action": "erase", "category": None, "purpose": None, "expires_at": None},
                            load_catalog(), "Example Ltd", "https://example.com/privacy")
    assert [p["purposeCategory"] for p in erase["services"][0]["purposes"]] == [
        ["train_ai_system.ads_ranking"], [GEN], ["train_ai_system.recommendation"]]
    assert erase["record"]["event"] == "erased"


def test_demo_access_signs_with_the_data_dirs_local_secret_that_serve_then_uses(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert with_local_secret(settings, ApiSettings()).jwt_secret is None  # serve alone never creates one
    url, token = demo_access(settings)
    secret_file = tmp_path / "data" / "api-jwt.secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert url == f"http://127.0.0.1:8420/#token={token}"
    key, algorithms = with_local_secret(settings, ApiSettings()).verification_key()
    assert TokenVerifier(key, algorithms).verify(token, datetime.now(timezone.utc)).subject == "user-0000001"
    demo_access(settings)  # a second call reuses the secret file
    assert secret_file.read_text().strip() == key
    # a configured key always wins over the local file
    configured = ApiSettings(jwt_secret=SECRET)
    assert with_local_secret(settings, configured) is configured
