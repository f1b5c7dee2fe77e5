"""The consent service: ``consentgate serve``, its HTTP API (SPEC §9) and the people's own page."""

from __future__ import annotations

from datetime import datetime, timezone

import jwt

from consentgate.api.config import ApiSettings
from consentgate.errors import ConfigurationError
from consentgate.synthetic import user_id as synthetic_user

__all__ = ["ApiSettings", "demo_access", "issue_token"]


def issue_token(config: ApiSettings, subject: str, ttl_s: int = 3600, admin: bool = False,
                now: datetime | None = None) -> str:
    """A token for ``subject`` signed with the HS256 secret, as the platform's issuer would sign it.

    For demos, tests and the bench: production tokens come from the platform's own issuer.
    """
    if config.jwt_secret is None or not config.jwt_secret.get_secret_value():
        raise ConfigurationError("issuing a token needs CONSENTGATE_API_JWT_SECRET (HS256)")
    issued = int((now or datetime.now(timezone.utc)).timestamp())
    claims: dict[str, object] = {"sub": subject, "iat": issued, "exp": issued + ttl_s}
    if config.jwt_issuer:
        claims["iss"] = config.jwt_issuer
    if config.jwt_audience:
        claims["aud"] = config.jwt_audience
    if admin:
        claims["scope"] = "consent:admin"
    return jwt.encode(claims, config.jwt_secret.get_secret_value(), algorithm="HS256")


def demo_access(config: ApiSettings, user_id: str = synthetic_user(1), ttl_s: int = 24 * 3600) -> tuple[str, str]:
    """The service's page URL and a sign-in token for one synthetic user (``consentgate demo`` prints both)."""
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    return f"http://{host}:{config.port}/", issue_token(config, user_id, ttl_s)
