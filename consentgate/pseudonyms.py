"""Keyed hashes that stand in for identifiers outside the gate. Pure: no I/O.

Training topics and retractions never carry a raw user id, event id or receipt id (each joins
back to a user in topics that hold the user id). Instead:

- ``pseudonym(secret, purpose, user_id)``: the user, distinct per purpose, so two purposes'
  training sets cannot be joined on it;
- ``record_id(secret, purpose, event_id)``: the activity, distinct per purpose; the gate puts it
  on the training record and on the contribution, so metering can find a contribution's
  minimised text, and an auditor holding the secret can tie a training record to its decision;
- ``key_id(secret)``: a fingerprint of the secret, written next to every keyed hash so that a
  rotated or mismatched secret shows instead of silently producing unjoinable values.

Each hash uses its own domain (a distinct prefix), so no value of one can equal a value of another.
"""

from __future__ import annotations

import hashlib
import hmac

MIN_SECRET_BYTES = 32
_HEX = 32  # 128 bits of HMAC-SHA256, as hex


def _keyed(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()[:_HEX]


def pseudonym(secret: bytes, purpose: str, user_id: str) -> str:
    """Keyed HMAC of the user id, distinct per purpose so training sets cannot be joined."""
    return _keyed(secret, f"{purpose}\x00{user_id}")


def record_id(secret: bytes, purpose: str, event_id: str) -> str:
    """Keyed hash of (purpose, event id): the training record's id, never the raw event id."""
    return _keyed(secret, f"record\x00{purpose}\x00{event_id}")


def key_id(secret: bytes) -> str:
    """A short public fingerprint of the secret (not reversible), recorded beside every keyed hash."""
    return "k" + _keyed(secret, "consentgate\x00key-id")[:11]
