"""``consentgate serve``: the consent service and the people's own page."""

from __future__ import annotations

import argparse

from consentgate.api.config import ApiSettings
from consentgate.cli.options import add_connection, catalog_of, flag, settings_from

API_FLAGS = {
    "host": "address to listen on (default 127.0.0.1)",
    "port": "port to listen on (default 8420)",
    "jwt-issuer": "required `iss` claim of platform tokens",
    "jwt-audience": "required `aud` claim of platform tokens",
    "rate-per-minute": "consent changes one user may make per minute (default 60)",
}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve the consent API (SPEC §9) and the self-service page; tokens are "
                                     "verified with CONSENTGATE_API_JWT_SECRET (HS256) or "
                                     "CONSENTGATE_API_JWT_PUBLIC_KEY (RS256/ES256)")
    for name, text in API_FLAGS.items():
        field = name.replace("-", "_")
        assert field in ApiSettings.model_fields, field
        p.add_argument(f"--{name}", dest=f"api_{field}", default=None,
                       help=f"{text} [env: CONSENTGATE_API_{field.upper()}]")
    add_connection(p)
    flag(p, "metrics-port", "serve the consent writer's Prometheus metrics on this port (0: any free port)",
         type=int)
    flag(p, "metrics-host", "address the metrics endpoint binds to")
    p.set_defaults(run=run_serve)


def api_settings_from(args: argparse.Namespace) -> ApiSettings:
    given = {k.removeprefix("api_"): v for k, v in vars(args).items()
             if k.startswith("api_") and v is not None}
    return ApiSettings(**given)


def run_serve(args: argparse.Namespace) -> int:
    from consentgate.api import with_local_secret
    from consentgate.api.server import serve

    settings = settings_from(args)
    return serve(settings, with_local_secret(settings, api_settings_from(args)), catalog_of(settings))
