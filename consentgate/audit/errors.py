"""Errors of the audit."""

from __future__ import annotations

from consentgate.errors import ConsentGateError


class AuditError(ConsentGateError):
    """The audit could not run (unreachable topics, an unusable range, a missing secret)."""
