"""The error classes the kernel reports, shared with the Python reference.

``InvalidIdentifier`` is being added to ``consentgate.schemas.errors`` (issue 9); until it lands
there the kernel defines the same class here, so the DLQ records the same ``error_class`` name.
"""

from __future__ import annotations

from consentgate.schemas.errors import (
    ImpossibleTimestamp,
    InvalidRecord,
    MissingIdentifier,
    MissingValue,
    OversizedRecord,
    PayloadMismatch,
    RecordError,
    UndecodableRecord,
)

try:
    from consentgate.schemas.errors import InvalidIdentifier  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on whether issue 9's class has landed
    class InvalidIdentifier(InvalidRecord):  # type: ignore[no-redef]
        """An id is longer than 200 characters or holds control characters."""

# error_class name -> class, for turning the kernel's (name, message) back into an exception
ERROR_CLASSES: dict[str, type[RecordError]] = {cls.__name__: cls for cls in (
    UndecodableRecord, MissingIdentifier, InvalidIdentifier, PayloadMismatch, ImpossibleTimestamp, MissingValue,
    OversizedRecord)}

__all__ = ["ERROR_CLASSES", "ImpossibleTimestamp", "InvalidIdentifier", "MissingIdentifier", "MissingValue",
           "OversizedRecord", "PayloadMismatch", "RecordError", "UndecodableRecord"]
