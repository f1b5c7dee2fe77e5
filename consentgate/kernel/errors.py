"""The error classes the kernel reports: those of ``consentgate.schemas.errors``, by name.

The compiled kernel returns an error class name and a message for each record it cannot use;
``ERROR_CLASSES`` turns the name back into the exception the Python side raises for the same input,
so the DLQ records the same ``error_class`` whichever implementation decided.
"""

from __future__ import annotations

from consentgate.schemas.errors import (
    ImpossibleTimestamp,
    InvalidIdentifier,
    MissingIdentifier,
    MissingValue,
    OversizedRecord,
    PayloadMismatch,
    RecordError,
    UndecodableRecord,
)

ERROR_CLASSES: dict[str, type[RecordError]] = {cls.__name__: cls for cls in (
    UndecodableRecord, MissingIdentifier, InvalidIdentifier, PayloadMismatch, ImpossibleTimestamp, MissingValue,
    OversizedRecord)}

__all__ = ["ERROR_CLASSES", "ImpossibleTimestamp", "InvalidIdentifier", "MissingIdentifier", "MissingValue",
           "OversizedRecord", "PayloadMismatch", "RecordError", "UndecodableRecord"]
