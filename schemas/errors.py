"""Errors raised while encoding or decoding records; each carries what a DLQ needs."""

from __future__ import annotations

from consentgate.errors import ConsentGateError


class RecordError(ConsentGateError):
    """A record that cannot be used; carries its raw bytes and input coordinates."""

    def __init__(self, message: str, *, raw: bytes | None = None, topic: str = "", partition: int = -1,
                 offset: int = -1) -> None:
        super().__init__(message)
        self.raw = raw
        self.topic = topic
        self.partition = partition
        self.offset = offset


class UndecodableRecord(RecordError):
    """The bytes are not a valid Confluent-framed Avro record of the expected schema."""


class UnknownSchemaId(RecordError):
    """The record names a schema id the registry does not know."""


class SchemaMismatch(RecordError):
    """The writer schema cannot be read as the expected contract."""


class InvalidRecord(RecordError):
    """The record decodes but breaks the contract (missing ids, mismatched payload, bad time)."""


class MissingIdentifier(InvalidRecord):
    """The record lacks a user id or an event id."""


class InvalidIdentifier(InvalidRecord):
    """A user id, event id or category is too long or holds control characters."""


class PayloadMismatch(InvalidRecord):
    """The payload branch does not belong to the record's category."""


class ImpossibleTimestamp(InvalidRecord):
    """occurred_at lies beyond the clock-skew allowance in the future, or before 1970."""


class MissingValue(InvalidRecord):
    """The input record has no value (a tombstone or an empty record)."""


class OversizedRecord(RecordError):
    """The record is larger than the configured maximum."""


class RegistryUnavailable(ConsentGateError):
    """The schema registry could not be reached: retry, never dead-letter, the record."""


class EncodeError(ConsentGateError):
    """A value does not fit its contract and was not written."""
