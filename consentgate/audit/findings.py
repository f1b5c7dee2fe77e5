"""What the audit reports: one finding per violation, naming the event, the purpose and the kind."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class Kind(str, Enum):
    WRONG_OUTCOME = "wrong_outcome"  # a decision's pass or drop reason is not what SPEC §3 gives
    MISSING_OUTCOME = "missing_outcome"  # a purpose that uses the category has no outcome
    UNJUSTIFIED_OUTPUT = "unjustified_output"  # a training record or contribution without a passing decision
    MISSING_OUTPUT = "missing_output"  # a passing outcome without its training record or contribution
    OFFSET_GAP = "offset_gap"  # an input offset with neither a decision nor a dead letter
    DUPLICATE = "duplicate"  # an input decided twice, or an output written twice
    UNKEPT_FIELD = "unkept_field"  # a training record holds a field its purpose does not keep
    MISSING_RETRACTION = "missing_retraction"  # an erasure without its retraction for a purpose
    STALE_CONSENT = "stale_consent"  # decided with a consent version older than one committed before the input
    RAW_ID = "raw_id"  # a raw event, user or receipt id on a training topic
    KEY_MISMATCH = "key_mismatch"  # a keyed hash or key id that the pseudonym secret does not give
    OUTPUT_MISMATCH = "output_mismatch"  # an output disagrees with its decision (user, category, version)
    LEDGER_MISMATCH = "ledger_mismatch"  # a contribution and the ledger's credit disagree
    CONSENT_HISTORY = "consent_history"  # consent.changes versions of a user that are not 1..n
    UNREADABLE = "unreadable"  # a record on an audited topic that cannot be decoded


@dataclass(frozen=True, order=True)
class Finding:
    """One violation. ``event_id``/``purpose`` are None where the record cannot name them."""

    kind: str
    event_id: str | None
    purpose: str | None
    detail: str
    where: str | None = None  # topic[partition]@offset of the record at fault, when there is one

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
