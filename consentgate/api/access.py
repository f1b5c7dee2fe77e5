"""Who is calling, per request: a bearer token, or a page session whose changes carry a CSRF token."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request, Response

from consentgate.api.auth import Principal, RateLimiter, SessionStore, TokenVerifier, check_id
from consentgate.api.errors import Unauthenticated

SESSION_COOKIE = "cg_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    """The verified caller of one request and how it reached the service."""

    principal: Principal
    via: str  # "bearer" or "session"
    gpc: bool  # the request carried Sec-GPC: 1

    def collection_method(self, user_id: str) -> str:
        if self.via == "session":
            return "web_page"
        return "admin_api" if user_id != self.principal.subject else "api"


class Access:
    """Authenticates requests; held by the app, shared by its routes."""

    def __init__(self, verifier: TokenVerifier, sessions: SessionStore, limiter: RateLimiter) -> None:
        self.verifier = verifier
        self.sessions = sessions
        self.limiter = limiter

    def caller(self, request: Request, response: Response) -> Caller:
        now = request.app.state.clock()
        gpc = request.headers.get("sec-gpc", "").strip() == "1"
        authorization = request.headers.get("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the Authorization header must be 'Bearer <token>'", "invalid_token")
            return Caller(self.verifier.verify(token.strip(), now), "bearer", gpc)
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            raise Unauthenticated("sign in: send 'Authorization: Bearer <token>' or sign in on the page",
                                  "no_credentials")
        session = self.sessions.get(session_id, now)
        if request.method not in SAFE_METHODS:
            # A cookie rides along on cross-site requests; the CSRF token cannot.
            response.headers[CSRF_HEADER] = self.sessions.spend_csrf(session, request.headers.get(CSRF_HEADER))
        return Caller(session.principal, "session", gpc)

    def for_user(self, request: Request, response: Response, user: str) -> Caller:
        """The caller, allowed to act on ``user``."""
        caller = self.caller(request, response)
        check_id(user, "the user id")
        caller.principal.may_act_on(user)
        return caller
