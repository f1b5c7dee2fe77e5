"""The consent service over HTTP against a real broker: auth matrix, bad input, receipts, concurrency."""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from consentgate.api import ApiSettings, issue_token
from consentgate.api.server import ServiceThread
from consentgate.catalog import Catalog
from consentgate.connectors.topics import TopicNames
from consentgate.settings import Settings
from tests.conftest import TEST_SECRET
from tests.helpers import values, wait_for

SECRET = "platform-signing-secret-0123456789abcdef"
GEN, REC, ADS = "train_ai_system.generative", "train_ai_system.recommendation", "train_ai_system.ads_ranking"
GRANT = f"/v1/users/alice/grants/post/{GEN}"


@pytest.fixture
def config() -> ApiSettings:
    return ApiSettings(port=0, jwt_secret=SECRET, jwt_issuer="https://id.example", controller="Example Ltd",
                       jurisdiction="EU", rate_burst=50)


@pytest.fixture
def service(settings: Settings, topics: TopicNames, catalog: Catalog, config: ApiSettings) -> Iterator[ServiceThread]:
    with ServiceThread(settings, config, catalog) as running:
        yield running


@pytest.fixture
def clients() -> Iterator[list[httpx.Client]]:
    """Clients a test opens; closed when it ends."""
    opened: list[httpx.Client] = []
    yield opened
    for client in opened:
        client.close()


def open_client(opened: list[httpx.Client], url: str, **kwargs: Any) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60, **kwargs)
    opened.append(client)
    return client


def bearer(config: ApiSettings, user: str = "alice", **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(config, user, **kwargs)}"}


def problem(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], body["message"]


def test_auth_matrix(service: ServiceThread, config: ApiSettings, settings: Settings, topics: TopicNames,
                     clients: list[httpx.Client]) -> None:
    client = open_client(clients, service.url)
    now = int(datetime.now(timezone.utc).timestamp())
    good = {"sub": "alice", "iss": "https://id.example", "exp": now + 600}
    forged = jwt.encode(good, "an-attacker-secret-of-the-right-length-0", algorithm="HS256")
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(good).encode()).rstrip(b"=").decode()
    expired = jwt.encode({**good, "exp": now - 120}, SECRET, algorithm="HS256")
    wrong_issuer = jwt.encode({**good, "iss": "https://evil.example"}, SECRET, algorithm="HS256")
    cases = [
        ({}, (401, "no_credentials", "sign in: send 'Authorization: Bearer <token>' or sign in on the page")),
        ({"Authorization": f"Bearer {forged}"}, (401, "invalid_token", "the token's signature does not verify")),
        ({"Authorization": f"Bearer {header}.{body}."},
         (401, "invalid_token", "token algorithm 'none' is not accepted (accepted: HS256)")),
        ({"Authorization": f"Bearer {expired}"}, (401, "token_expired",
                                                  f"the token expired at "
                                                  f"{datetime.fromtimestamp(now - 120, timezone.utc).isoformat()}")),
        ({"Authorization": f"Bearer {wrong_issuer}"},
         (401, "invalid_token", "the token's issuer is not 'https://id.example'")),
        ({"Authorization": f"Basic {SECRET}"},
         (401, "invalid_token", "the Authorization header must be 'Bearer <token>'")),
        (bearer(config, "bob"), (403, "other_user", "this token may act only on its own user")),
    ]
    for headers, expected in cases:
        for method, path in (("PUT", GRANT), ("GET", "/v1/users/alice/consent"), ("DELETE", GRANT),
                             ("GET", "/v1/users/alice/receipts"), ("POST", "/v1/users/alice/erase")):
            response = client.request(method, path, headers=headers)
            assert problem(response) == expected, (method, path, headers)
            if expected[0] == 401:
                assert response.headers["WWW-Authenticate"] == "Bearer"
    assert values(settings, topics.consent_changes) == []  # nothing refused was written
    # the user's own token, and a platform back-end's admin token on anyone
    assert client.put(GRANT, headers=bearer(config)).status_code == 200
    admin = bearer(config, "billing-backend", admin=True)
    receipt = client.put(f"/v1/users/carol/grants/search/{ADS}", headers=admin).json()
    assert (receipt["piiPrincipalId"], receipt["collectionMethod"], receipt["record"]["actor"]) == (
        "carol", "admin_api", {"issuer": "https://id.example", "subject": "billing-backend"})
    assert client.get("/v1/users/alice/consent", headers=admin).json()["grants"][0]["purpose"] == GEN
    assert client.get("/v1/catalog").status_code == 200  # the public notice needs no token


def test_page_and_docs_load_nothing_from_elsewhere(service: ServiceThread, clients: list[httpx.Client]) -> None:
    client = open_client(clients, service.url)
    page = client.get("/")
    assert page.headers["content-security-policy"].startswith("default-src 'self';")
    assert page.headers["x-frame-options"] == "DENY"
    assert re.findall(r'(?:src|href)="([^"#]+)"', page.text) == ["/static/app.css", "/static/app.js", "/docs"]
    for asset in ("/static/app.css", "/static/app.js"):
        assert client.get(asset).status_code == 200
        assert "http://" not in client.get(asset).text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in client.get(asset).text
    docs = client.get("/docs").text
    assert re.findall(r"(?:url|href|src)[:=] ?['\"]([^'\"]+)['\"]", docs) == [
        "/static-offline-docs/swagger-ui.css", "/static-offline-docs/favicon.png",
        "/static-offline-docs/swagger-ui-bundle.js", "/openapi.json"]
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200


def test_bad_input_gets_a_clear_4xx_and_writes_nothing(service: ServiceThread, config: ApiSettings,
                                                       settings: Settings, topics: TopicNames,
                                                       clients: list[httpx.Client]) -> None:
    client = open_client(clients, service.url, headers=bearer(config, "alice", admin=True))
    past = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat()
    json_headers = {"Content-Type": "application/json"}
    cases: list[tuple[str, str, dict[str, Any], tuple[int, str, str]]] = [
        ("PUT", GRANT, {"content": b'{"expires_at": ', "headers": json_headers},
         (400, "malformed_json", "the request body is not valid JSON")),
        ("PUT", GRANT, {"content": b"not json at all"}, (400, "malformed_json", "the request body is not valid JSON")),
        ("PUT", "/v1/users/alice/grants/voice/" + GEN, {},
         (404, "unknown_category", "unknown category 'voice'; the catalog has: click, conversation, post, search, "
                                   "signal")),
        ("PUT", "/v1/users/alice/grants/post/train_ai_system.everything", {},
         (404, "unknown_purpose", "unknown purpose 'train_ai_system.everything'; the catalog has: "
                                  f"{ADS}, {GEN}, {REC}")),
        ("PUT", f"/v1/users/alice/grants/search/{GEN}", {},
         (422, "pair_not_offered", f"purpose '{GEN}' does not use category 'search' (it uses: conversation, post)")),
        ("PUT", GRANT, {"json": {"expires_at": past}},
         (422, "past_expiry", f"expiry {datetime.fromisoformat(past).isoformat()} is not in the future")),
        ("PUT", GRANT, {"json": {"expires_at": "2099-01-01T00:00:00"}},
         (400, "invalid_expiry", "expires_at needs a timezone offset, e.g. 2027-01-31T00:00:00Z")),
        ("PUT", GRANT, {"json": {"expires_at": "next tuesday"}},
         (400, "invalid_body", "the request does not fit: expires_at: Input should be a valid datetime or date, "
                               "invalid character in year")),
        ("PUT", GRANT, {"json": {"note": "free text must not reach a receipt"}},
         (400, "invalid_body", "the request does not fit: note: Extra inputs are not permitted")),
        ("PUT", GRANT, {"json": {"terms_version": 1}},
         (409, "terms_changed", f"the terms of {GEN} are now version 2; the person was shown version 1: show them "
                                "the current notice first")),
        ("PUT", f"/v1/users/{'u' * 201}/grants/post/{GEN}", {},
         (400, "invalid_id", "the user id is 201 characters long; the limit is 200")),
        ("PUT", f"/v1/users/a%0Ab/grants/post/{GEN}", {}, (400, "invalid_id", "the user id contains control characters")),
        ("PUT", GRANT, {"content": b"{" + b" " * 5000 + b"}", "headers": json_headers},
         (413, "payload_too_large", "the request body is larger than 4096 bytes")),
        ("PUT", GRANT, {"content": iter([b"{", b" " * 5000, b"}"]), "headers": json_headers},  # chunked, no length
         (413, "payload_too_large", "the request body is larger than 4096 bytes")),
        ("PUT", "/v1/users/alice/tier", {"json": {"tier": "gold"}},
         (400, "invalid_body", "the request does not fit: tier: Input should be 'free' or 'data_sharing'")),
        ("PUT", "/v1/users/alice/tier", {"json": {"tier": "free", "plan": "credits"}},
         (422, "plan_on_free_tier", "the free tier has no compensation plan")),
        ("PUT", "/v1/users/alice/tier", {"json": {"tier": "data_sharing"}},
         (422, "plan_required", "the data_sharing tier needs a plan: one of per_unit, revenue_share, credits, "
                                "dividend")),
        ("DELETE", GRANT, {}, (404, "no_consent", "this user has no consent recorded: there is nothing to withdraw")),
        ("GET", "/v1/users/alice/statement?period=2026-13", {}, (400, "invalid_period", "period '2026-13' is not YYYY-MM")),
        ("GET", "/v1/nothing-here", {}, (404, "not_found", "Not Found")),
    ]
    for method, path, kwargs, expected in cases:
        assert problem(client.request(method, path, **kwargs)) == expected, (method, path)
    assert values(settings, topics.consent_changes) == []


def test_page_session_csrf_gpc_and_receipts(service: ServiceThread, config: ApiSettings, settings: Settings,
                                            topics: TopicNames, clients: list[httpx.Client]) -> None:
    client = open_client(clients, service.url)
    # A GPC signal on sign-in and on a tier change is recorded and never grants anything.
    signed = client.post("/v1/session", json={"token": issue_token(config, "alice")}, headers={"Sec-GPC": "1"})
    assert signed.status_code == 200
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    csrf = signed.json()["csrf_token"]
    no_csrf = client.put("/v1/users/alice/tier", json={"tier": "data_sharing", "plan": "credits"})
    assert problem(no_csrf) == (403, "csrf_missing", "this change needs the page's CSRF token (X-CSRF-Token header)")
    tier = client.put("/v1/users/alice/tier", json={"tier": "data_sharing", "plan": "credits"},
                      headers={"X-CSRF-Token": csrf, "Sec-GPC": "1"})
    assert tier.status_code == 200
    replayed = client.put(GRANT, headers={"X-CSRF-Token": csrf})
    assert problem(replayed) == (403, "csrf_replayed", "this CSRF token was already used: reload the page")
    assert client.get("/v1/users/alice/consent").json()["grants"] == []
    next_csrf = tier.headers["X-CSRF-Token"]
    granted = client.put(GRANT, json={"terms_version": 2}, headers={"X-CSRF-Token": next_csrf})
    assert granted.status_code == 200
    assert granted.json()["collectionMethod"] == "web_page"
    assert problem(client.get("/v1/users/bob/consent")) == (403, "other_user", "this token may act only on its own user")

    history = client.get("/v1/users/alice/receipts").json()["receipts"]
    assert [(r["record"]["event"], r["record"]["consent_version"], r["record"]["gpc"], r["record"]["tier"],
             r["record"]["notice_version"], r["record"]["source"]) for r in history] == [
        ("tier_changed", 1, True, "data_sharing", "catalog-1", "api"),
        ("given", 2, False, "data_sharing", f"catalog-1/{GEN}/terms-2", "api")]
    changes = values(settings, topics.consent_changes)
    assert [(c["action"], c["source"], c["issuer"], c["subject"], c["gpc"], c["collection_method"],
             c["jurisdiction"]) for c in changes] == [
        ("tier", "api", "https://id.example", "alice", True, "web_page", "EU"),
        ("grant", "api", "https://id.example", "alice", False, "web_page", "EU")]
    export = client.get("/v1/users/alice/export")
    assert export.headers["content-disposition"] == 'attachment; filename="my-consent-and-earnings.json"'
    assert [r["consentReceiptID"] for r in export.json()["receipts"]] == [c["receipt_id"] for c in changes]
    assert export.json()["statement"] == {"user_id": "alice", "currency": "USD", "periods": []}

    old_session = client.cookies["cg_session"]
    out = client.delete("/v1/session", headers={"X-CSRF-Token": granted.headers["X-CSRF-Token"]})
    assert out.status_code == 200
    assert problem(client.get("/v1/users/alice/consent"))[:2] == (401, "no_credentials")
    stolen = open_client(clients, service.url, cookies={"cg_session": old_session})
    assert problem(stolen.get("/v1/users/alice/consent")) == (
        401, "no_session", "not signed in (or the session ended): sign in again")


def test_erase_and_rate_limit(settings: Settings, topics: TopicNames, catalog: Catalog,
                              clients: list[httpx.Client]) -> None:
    config = ApiSettings(port=0, jwt_secret=SECRET, rate_burst=2, rate_per_minute=1)
    with ServiceThread(settings, config, catalog) as service:
        client = open_client(clients, service.url, headers=bearer(config))
        assert client.put(GRANT).status_code == 200
        erased = client.post("/v1/users/alice/erase")
        assert erased.status_code == 202 and erased.json()["record"]["event"] == "erased"
        limited = client.put(GRANT)
        wait = limited.headers["Retry-After"]  # the rule's arithmetic is unit-tested on an injected clock
        assert problem(limited) == (429, "rate_limited", f"too many consent changes for this user: try again in {wait} s")
        assert 1 <= int(wait) <= 61
        assert client.get("/v1/users/alice/consent").json() == {"user_id": "alice", "erased": True}
    assert sorted(r["purpose"] for r in values(settings, topics.retractions)) == sorted(catalog.purposes)


def test_twenty_clients_flipping_one_users_switches_lose_nothing(
        settings: Settings, topics: TopicNames, catalog: Catalog) -> None:
    config = ApiSettings(port=0, jwt_secret=SECRET, rate_burst=1000, rate_per_minute=100_000)
    pairs = [("post", GEN), ("conversation", GEN), ("post", REC), ("search", ADS), ("click", REC)]
    acked: list[dict[str, Any]] = []
    lock = threading.Lock()
    failures: list[str] = []
    with ServiceThread(settings, config, catalog) as service:
        def flip(client_no: int) -> None:
            with httpx.Client(base_url=service.url, headers=bearer(config), timeout=60) as client:
                for step in range(6):
                    category, purpose = pairs[(client_no + step) % len(pairs)]
                    path = f"/v1/users/alice/grants/{category}/{purpose}"
                    # the first change of all must be a grant: a withdrawal needs a consent record
                    method = "PUT" if step % 2 == 0 else "DELETE"
                    response = client.request(method, path)
                    if response.status_code != 200:
                        failures.append(f"{method} {path}: {response.status_code} {response.text}")
                        continue
                    with lock:
                        acked.append(response.json()["record"])

        clients = [threading.Thread(target=flip, args=(n,)) for n in range(20)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(120)
        final = httpx.get(f"{service.url}/v1/users/alice/consent", headers=bearer(config)).json()
    # Only a DELETE that raced ahead of every grant may be refused, and only as "nothing to withdraw".
    assert all("no_consent" in f and f.startswith("DELETE") for f in failures), failures
    assert len(acked) + len(failures) == 120
    versions = sorted(r["consent_version"] for r in acked)
    assert versions == list(range(1, len(acked) + 1))  # no gaps, no duplicates
    changes = [c for c in values(settings, topics.consent_changes) if c["user_id"] == "alice"]
    assert sorted(c["consent_version"] for c in changes) == versions  # every acknowledged change, nothing else
    # The final state is what replaying the acknowledged changes in version order gives.
    held: dict[tuple[str, str], str] = {}
    for record in sorted(acked, key=lambda r: r["consent_version"]):
        if record["action"] == "grant":
            held[(record["category"], record["purpose"])] = record["at"]
        else:
            held.pop((record["category"], record["purpose"]), None)
    assert final["version"] == len(acked)
    assert {(g["category"], g["purpose"]): g["granted_at"] for g in final["grants"]} == held
    state = [v for k, v in values_with_keys(settings, topics.consent_state) if k == "alice"]
    assert state[-1]["version"] == len(acked) and state[-1]["grants"] == final["grants"]


def values_with_keys(settings: Settings, topic: str) -> list[tuple[str | None, Any]]:
    from tests.helpers import committed

    return committed(settings, topic)


def test_serve_command(settings: Settings, topics: TopicNames, tmp_path: Path) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "consentgate.cli.main", "serve", "--port", str(port),
               "--bootstrap-servers", str(settings.bootstrap_servers),
               "--schema-registry-url", str(settings.schema_registry_url),
               "--topic-prefix", settings.topic_prefix, "--data-dir", str(tmp_path / "serve")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_API_")}
    env["CONSENTGATE_PSEUDONYM_SECRET"] = TEST_SECRET
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert (refused.returncode, refused.stderr.strip().splitlines()[-1]) == (
        2, "consentgate: the consent service verifies platform tokens: set CONSENTGATE_API_JWT_SECRET (HS256) or "
           "CONSENTGATE_API_JWT_PUBLIC_KEY (RS256/ES256)")
    env["CONSENTGATE_API_JWT_SECRET"] = SECRET
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert server.poll() is None, server.communicate()
        try:
            return httpx.get(f"{url}/v1/catalog").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answering, what="consentgate serve to answer")
        assert httpx.get(f"{url}/v1/users/alice/consent").status_code == 401
        config = ApiSettings(jwt_secret=SECRET)
        assert httpx.put(f"{url}{GRANT}", headers=bearer(config)).json()["record"]["consent_version"] == 1
        assert httpx.get(f"{url}/openapi.json").json()["paths"].keys() >= {
            "/v1/catalog", "/v1/users/{user}/consent", "/v1/users/{user}/grants/{category}/{purpose}",
            "/v1/users/{user}/tier", "/v1/users/{user}/erase", "/v1/users/{user}/receipts",
            "/v1/users/{user}/statement"}
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert server.returncode == 0
