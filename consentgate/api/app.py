"""The consent service's ASGI app: the ``/v1`` API, page sessions, the page, and clear errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consentgate.api.access import CSRF_HEADER, SESSION_COOKIE, Access
from consentgate.api.auth import RateLimiter, SessionStore, TokenVerifier
from consentgate.api.config import ApiSettings
from consentgate.api.errors import ApiError, RateLimited, Unprocessable
from consentgate.api.routes import router
from consentgate.api.service import ConsentService
from consentgate.errors import ConsentRequestError

STATIC = resources.files("consentgate.api").joinpath("static")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                 b"script-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
# Swagger UI and ReDoc start from an inline script; their assets are served from here.
DOCS_CSP = (b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            b"img-src 'self' data:; worker-src 'self' blob:")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


class Guard:
    """Refuses bodies over the limit with 413 before any route reads them; adds security headers."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in ("/docs", "/redoc")

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + (
                    [(b"content-security-policy", DOCS_CSP)] if docs else SECURITY_HEADERS)
            await send(message)

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _error(413, "payload_too_large", f"the request body is larger than {self.limit} bytes")(
                scope, receive, send_secured)
            return
        body = b""
        more = scope["method"] not in ("GET", "HEAD", "OPTIONS")
        while more:  # a body without a length (chunked) is read here, up to the limit
            message = await receive()
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await _error(413, "payload_too_large", f"the request body is larger than {self.limit} bytes")(
                    scope, receive, send_secured)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_secured)


class SignIn(BaseModel):
    """The platform's JWT, exchanged for a page session."""

    model_config = ConfigDict(extra="forbid")
    token: str


def create_app(service: ConsentService, config: ApiSettings,
               clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> FastAPI:
    """The service's app over a running ``ConsentService`` (which the caller owns and closes)."""
    key, algorithms = config.verification_key()
    verifier = TokenVerifier(key, algorithms, config.jwt_issuer, config.jwt_audience, config.jwt_leeway_s)
    access = Access(verifier, SessionStore(config.session_ttl_s), RateLimiter(config.rate_per_minute,
                                                                               config.rate_burst))
    # API docs from vendored, pinned Swagger UI and ReDoc assets (fastapi-offline): no CDN, like the page.
    app = FastAPIOffline(title="consentgate consent service", version="1",
                  description="People choose, per data category and AI purpose, whether their data trains "
                              "that system; every change answers once the gate enforces it, with a receipt.")
    app.state.service, app.state.access, app.state.api_settings, app.state.clock = service, access, config, clock
    app.include_router(router)
    _session_routes(app, access, config)
    _errors(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC.joinpath("index.html")), headers={"Cache-Control": "no-store"})

    app.add_middleware(Guard, limit=config.max_body_bytes)
    return app


def _session_routes(app: FastAPI, access: Access, config: ApiSettings) -> None:
    @app.post("/v1/session", summary="Sign in on the page: exchange the platform's JWT for a session cookie")
    def sign_in(body: SignIn, request: Request, response: Response) -> dict[str, Any]:
        now = request.app.state.clock()
        principal = access.verifier.verify(body.token.strip(), now)
        session_id, session = access.sessions.open(principal, now)
        response.set_cookie(SESSION_COOKIE, session_id, max_age=max(1, int((session.expires_at - now)
                                                                           .total_seconds())),
                            httponly=True, samesite="strict", secure=config.cookie_secure, path="/")
        return {"user_id": principal.subject, "admin": principal.admin, "csrf_token": session.csrf,
                "expires_at": session.expires_at.isoformat()}

    @app.get("/v1/session", summary="The signed-in page's user and current CSRF token")
    def whoami(request: Request) -> dict[str, Any]:
        session = access.sessions.get(request.cookies.get(SESSION_COOKIE) or "", request.app.state.clock())
        return {"user_id": session.principal.subject, "admin": session.principal.admin,
                "csrf_token": session.csrf, "expires_at": session.expires_at.isoformat()}

    @app.delete("/v1/session", summary="Sign out")
    def sign_out(request: Request, response: Response) -> dict[str, Any]:
        session_id = request.cookies.get(SESSION_COOKIE) or ""
        session = access.sessions.get(session_id, request.app.state.clock())
        access.sessions.spend_csrf(session, request.headers.get(CSRF_HEADER))
        access.sessions.close(session_id)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=config.cookie_secure)
        return {"signed_out": True}


def _not_json(body: Any) -> bool:
    if not isinstance(body, (bytes, str)) or not body:
        return False
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RateLimited) else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(ConsentRequestError)
    async def refused(request: Request, exc: ConsentRequestError) -> JSONResponse:
        if "no consent to revoke" in str(exc):
            return _error(404, "no_consent", "this user has no consent recorded: there is nothing to withdraw")
        error = Unprocessable(str(exc))
        return _error(error.status, error.code, error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems) or _not_json(exc.body):
            return _error(400, "malformed_json", "the request body is not valid JSON")
        described = "; ".join(f"{'.'.join(str(x) for x in p.get('loc', ()) if x != 'body') or 'body'}: "
                              f"{p.get('msg', 'invalid')}" for p in problems[:5])
        return _error(400, "invalid_body", f"the request does not fit: {described}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return _error(exc.status_code, "not_found" if exc.status_code == 404 else "http_error", message)
