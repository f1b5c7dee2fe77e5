"""The consent service: ``consentgate serve``, its HTTP API (SPEC §9) and the people's own page."""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timezone

import jwt
from pydantic import SecretStr

from consentgate.api.config import ApiSettings
from consentgate.errors import ConfigurationError
from consentgate.settings import Settings
from consentgate.synthetic import user_id as synthetic_user

__all__ = ["ApiSettings", "demo_access", "issue_token", "with_local_secret"]
LOCAL_SECRET_FILE = "api-jwt.secret"  # the local signing secret of demos, beside `up`'s pseudonym.secret


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


def demo_access(settings: Settings, config: ApiSettings | None = None, user_id: str = synthetic_user(1),
                ttl_s: int = 24 * 3600) -> tuple[str, str]:
    """The page's sign-in URL and a token for one synthetic user (``consentgate demo`` prints both).

    Without a configured key the token is signed with the data directory's local secret
    (created 0600 on first use), which ``consentgate serve`` then verifies with.
    """
    config = with_local_secret(settings, config or ApiSettings(), create=True)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    token = issue_token(config, user_id, ttl_s)
    return f"http://{host}:{config.port}/#token={token}", token


def with_local_secret(settings: Settings, config: ApiSettings, create: bool = False) -> ApiSettings:
    """``config``, falling back to the data directory's local HS256 secret when it names no key."""
    if config.jwt_public_key or (config.jwt_secret is not None and config.jwt_secret.get_secret_value()):
        return config
    path = settings.data_dir / LOCAL_SECRET_FILE
    if not path.exists():
        if not create:
            return config
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return config.model_copy(update={"jwt_secret": SecretStr(path.read_text().strip())})
