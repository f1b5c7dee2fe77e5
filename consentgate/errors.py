"""The root of every error consentgate raises on purpose.

Each package adds small typed subclasses; boundaries chain the cause
(``raise X(...) from exc``) so an operator sees both what failed and why.
"""

from __future__ import annotations


class ConsentGateError(Exception):
    """Base class for all consentgate errors."""


class ConfigurationError(ConsentGateError):
    """Settings or the environment cannot support the requested operation."""


class CatalogError(ConsentGateError):
    """The purpose catalog is malformed; the message names the offending field."""


class ConsentRequestError(ConsentGateError):
    """A consent command was refused (unknown purpose, past expiry, ...)."""


class ClusterError(ConsentGateError):
    """The embedded Kafka or schema registry could not be started or reached."""


class LedgerError(ConsentGateError):
    """A payout-ledger operation was refused (closed period, bad pool, broken invariant)."""


class SinkError(ConsentGateError):
    """The training-set sink cannot write or maintain its table (catalog, warehouse, offsets)."""


class RegateError(ConsentGateError):
    """A regate cannot run as asked (unknown purpose, existing generation, bad range)."""
