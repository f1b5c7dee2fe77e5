"""Errors of the consent service; each carries the HTTP status and a stable code a client can act on."""

from __future__ import annotations

from consentgate.errors import ConsentGateError


class ApiError(ConsentGateError):
    """A request the service refuses; ``status`` is the HTTP status, ``code`` a stable machine word."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(ApiError):
    """The request is malformed: not JSON, wrong fields, ids over the limits."""


class Unauthenticated(ApiError):
    """No token or session, or one that does not verify (bad signature, expired, ``alg: none``)."""

    status, code = 401, "unauthenticated"


class Forbidden(ApiError):
    """Authenticated, but not allowed: another user's record, or a missing/replayed CSRF token."""

    status, code = 403, "forbidden"


class NotFound(ApiError):
    """Unknown category, purpose or route, or nothing to act on."""

    status, code = 404, "not_found"


class Conflict(ApiError):
    """The request rests on something that changed, e.g. terms newer than the ones shown."""

    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    """The body is larger than the service accepts."""

    status, code = 413, "payload_too_large"


class Unprocessable(ApiError):
    """Well-formed, but the catalog cannot honour it (a pair the purpose does not use, a past expiry)."""

    status, code = 422, "unprocessable"


class RateLimited(ApiError):
    """This user made too many changes too quickly."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(ApiError):
    """The bus could not take the change in time; nothing was acknowledged."""

    status, code = 503, "unavailable"
