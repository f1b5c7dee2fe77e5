"""Who is asking: platform JWTs, page sessions with CSRF tokens, and a per-user rate limit.

No I/O and no clock reads: every check takes ``now`` from the caller, so the rules are tested
without a server and without waiting.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

import jwt

from consentgate.api.config import ADMIN_SCOPE
from consentgate.api.errors import BadRequest, Forbidden, RateLimited, Unauthenticated

MAX_ID_CHARS = 200  # the gate's limit on ids (InvalidIdentifier): a longer user id could never be enforced


def check_id(value: str, what: str) -> str:
    """Refuse an id the gate would refuse: empty, longer than 200 characters, or with control characters."""
    if not value:
        raise BadRequest(f"{what} is empty", "invalid_id")
    if len(value) > MAX_ID_CHARS:
        raise BadRequest(f"{what} is {len(value)} characters long; the limit is {MAX_ID_CHARS}", "invalid_id")
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in value):
        raise BadRequest(f"{what} contains control characters", "invalid_id")
    return value


@dataclass(frozen=True)
class Principal:
    """A verified caller: the token's subject and issuer, and whether it may act on anyone."""

    subject: str
    issuer: str | None
    admin: bool
    expires_at: datetime

    def may_act_on(self, user_id: str) -> None:
        """A user token acts on its own ``sub`` only; ``consent:admin`` acts on anyone."""
        if not self.admin and user_id != self.subject:
            raise Forbidden("this token may act only on its own user", "other_user")


class TokenVerifier:
    """Verifies bearer JWTs with exactly the configured algorithms; ``exp`` is always required."""

    def __init__(self, key: str, algorithms: list[str], issuer: str | None = None, audience: str | None = None,
                 leeway_s: int = 30) -> None:
        self._key = key
        self._algorithms = algorithms
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s

    def verify(self, token: str, now: datetime) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise Unauthenticated("the token is not a JWT", "invalid_token") from exc
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise Unauthenticated(f"token algorithm {alg!r} is not accepted (accepted: "
                                  f"{', '.join(self._algorithms)})", "invalid_token")
        required = ["exp", "sub"] + (["iss"] if self._issuer else []) + (["aud"] if self._audience else [])
        try:
            claims = jwt.decode(token, self._key, algorithms=self._algorithms, issuer=self._issuer,
                                audience=self._audience,
                                # expiry is checked below against the injected clock
                                options={"require": required, "verify_exp": False, "verify_nbf": False,
                                         "verify_iat": False, "verify_aud": self._audience is not None})
        except jwt.InvalidSignatureError as exc:
            raise Unauthenticated("the token's signature does not verify", "invalid_token") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"the token has no {exc.claim!r} claim", "invalid_token") from exc
        except jwt.InvalidIssuerError as exc:
            raise Unauthenticated(f"the token's issuer is not {self._issuer!r}", "invalid_token") from exc
        except jwt.InvalidAudienceError as exc:
            raise Unauthenticated(f"the token's audience is not {self._audience!r}", "invalid_token") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token does not verify: {exc}", "invalid_token") from exc
        exp = claims["exp"]
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise Unauthenticated("the token's 'exp' is not a number", "invalid_token")
        expires_at = datetime.fromtimestamp(exp, timezone.utc)
        if now.timestamp() > exp + self._leeway:
            raise Unauthenticated(f"the token expired at {expires_at.isoformat()}", "token_expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and now.timestamp() + self._leeway < nbf:
            raise Unauthenticated("the token is not valid yet", "invalid_token")
        subject = claims["sub"]
        if not isinstance(subject, str):
            raise Unauthenticated("the token's 'sub' is not a string", "invalid_token")
        try:
            check_id(subject, "the token's subject")
        except BadRequest as exc:
            raise Unauthenticated(exc.message, "invalid_token") from exc
        scopes = claims.get("scope", "")
        granted = set(scopes.split()) if isinstance(scopes, str) else set(scopes) if isinstance(scopes, list) else set()
        issuer = claims.get("iss")
        return Principal(subject, issuer if isinstance(issuer, str) else None, ADMIN_SCOPE in granted, expires_at)


@dataclass
class Session:
    """A signed-in page: the principal it was made from, and its current CSRF token."""

    principal: Principal
    expires_at: datetime
    csrf: str
    used: deque[str] = field(default_factory=lambda: deque(maxlen=32))


class SessionStore:
    """Page sessions held in the service's memory (one process; a restart signs people out).

    Each state-changing request spends the session's CSRF token and gets a new one, so a
    token that was seen once (in a log, a proxy, a replayed request) is worth nothing.
    """

    def __init__(self, ttl_s: int, capacity: int = 100_000) -> None:
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._sessions: dict[str, Session] = {}

    def open(self, principal: Principal, now: datetime) -> tuple[str, Session]:
        if len(self._sessions) >= self._capacity:
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at > now}
            if len(self._sessions) >= self._capacity:
                self._sessions.pop(next(iter(self._sessions)))  # the oldest
        ends = min(principal.expires_at, datetime.fromtimestamp(now.timestamp() + self._ttl_s, timezone.utc))
        session_id = secrets.token_urlsafe(32)
        session = self._sessions[session_id] = Session(principal, ends, secrets.token_urlsafe(24))
        return session_id, session

    def get(self, session_id: str, now: datetime) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise Unauthenticated("not signed in (or the session ended): sign in again", "no_session")
        if session.expires_at <= now:
            del self._sessions[session_id]
            raise Unauthenticated("the session expired: sign in again", "session_expired")
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    @staticmethod
    def spend_csrf(session: Session, token: str | None) -> str:
        """Accept ``token`` once and return the next one; a reused or wrong token is refused."""
        if not token:
            raise Forbidden("this change needs the page's CSRF token (X-CSRF-Token header)", "csrf_missing")
        if hmac.compare_digest(token.encode(), session.csrf.encode()):
            session.used.append(session.csrf)
            session.csrf = secrets.token_urlsafe(24)
            return session.csrf
        if any(hmac.compare_digest(token.encode(), old.encode()) for old in session.used):
            raise Forbidden("this CSRF token was already used: reload the page", "csrf_replayed")
        raise Forbidden("the CSRF token does not match this session", "csrf_invalid")


class RateLimiter:
    """A token bucket per user: ``burst`` changes at once, then ``per_minute``."""

    def __init__(self, per_minute: int, burst: int, capacity: int = 200_000) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._capacity = capacity
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, at)

    def take(self, user_id: str, now: datetime) -> None:
        t = now.timestamp()
        tokens, at = self._buckets.get(user_id, (self._burst, t))
        tokens = min(self._burst, tokens + (t - at) * self._rate)
        if tokens < 1.0:
            wait = int((1.0 - tokens) / self._rate) + 1
            raise RateLimited(f"too many consent changes for this user: try again in {wait} s", wait)
        if len(self._buckets) >= self._capacity:  # forget full buckets first: they carry no state
            self._buckets = {u: b for u, b in self._buckets.items()
                             if b[0] + (t - b[1]) * self._rate < self._burst}
        self._buckets[user_id] = (tokens - 1.0, t)
