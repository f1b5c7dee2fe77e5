"""The consent service's settings: how tokens are verified, where it listens, its limits.

Every field is set by a ``CONSENTGATE_API_<NAME>`` environment variable or by the matching
``consentgate serve`` flag. Kept beside the service (not in ``consentgate.settings``) so that
the bus's settings stay the bus's; the object is frozen and rejects unknown keys the same way.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from consentgate.errors import ConfigurationError

ADMIN_SCOPE = "consent:admin"


class ApiSettings(BaseSettings):
    """Frozen configuration of ``consentgate serve``."""

    model_config = SettingsConfigDict(env_prefix="CONSENTGATE_API_", frozen=True, extra="forbid",
                                      env_ignore_empty=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8420, ge=0, le=65535, description="port to listen on (0: any free port)")
    jwt_secret: SecretStr | None = Field(None, description="HS256 key shared with the platform's token issuer")
    jwt_public_key: str | None = Field(None, description="PEM public key (RS256 or ES256) of the token issuer")
    jwt_issuer: str | None = Field(None, description="required `iss` of every token, when set")
    jwt_audience: str | None = Field(None, description="required `aud` of every token, when set")
    jwt_leeway_s: int = Field(30, ge=0, le=300, description="clock skew allowed on `exp`/`nbf`")
    session_ttl_s: int = Field(3600, ge=60, description="lifetime of a page session cookie")
    cookie_secure: bool = Field(False, description="mark the session cookie Secure (set behind HTTPS)")
    rate_per_minute: int = Field(60, ge=1, description="consent changes one user may make per minute")
    rate_burst: int = Field(20, ge=1, description="changes one user may make at once before the rate applies")
    max_body_bytes: int = Field(4096, ge=256, description="larger request bodies get 413")
    controller: str = Field("The platform", description="data controller named on every receipt")
    policy_url: str = Field("https://example.invalid/privacy", description="privacy notice URL on receipts")
    jurisdiction: str | None = Field(None, description="jurisdiction recorded on receipts, e.g. EU")

    def verification_key(self) -> tuple[str, list[str]]:
        """The key tokens are verified with and the algorithms it allows (never ``none``)."""
        if self.jwt_public_key:
            key = self.jwt_public_key.strip()
            return key, (["ES256"] if "EC PUBLIC" in key or _is_ec(key) else ["RS256"])
        if self.jwt_secret is not None and self.jwt_secret.get_secret_value():
            if len(self.jwt_secret.get_secret_value().encode()) < 32:
                raise ConfigurationError("CONSENTGATE_API_JWT_SECRET must be at least 32 bytes for HS256")
            return self.jwt_secret.get_secret_value(), ["HS256"]
        raise ConfigurationError("the consent service verifies platform tokens: set CONSENTGATE_API_JWT_SECRET "
                                 "(HS256) or CONSENTGATE_API_JWT_PUBLIC_KEY (RS256/ES256)")


def _is_ec(pem: str) -> bool:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return isinstance(load_pem_public_key(pem.encode()), EllipticCurvePublicKey)
    except ValueError as exc:
        raise ConfigurationError(f"CONSENTGATE_API_JWT_PUBLIC_KEY is not a PEM public key: {exc}") from exc
