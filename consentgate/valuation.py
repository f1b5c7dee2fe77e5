"""What a contribution is worth, how pools split, which period it belongs to (pure, no I/O).

value = units x rate(category, purpose) x quality x usefulness, in micro-units of the
catalog's currency; a duplicate, or anything from a ``free``-tier user, is worth nothing.
Usefulness (SPEC §11) is a multiplier in thousandths set per period by ``metering value``;
until then, and for records without text, it is 1.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple

from consentgate.catalog import Catalog
from consentgate.identifiers import identifier_problem
from consentgate.quality import NEAR_DUPLICATE_BITS, distance

PLANS = ("per_unit", "revenue_share", "credits", "dividend")
POOL_PLANS = ("revenue_share", "dividend")
USEFULNESS_PLANS = ("per_unit", "revenue_share", "credits")  # dividend stays an equal split
RECENT_TEXTS = 64
NEUTRAL_MILLI = 1000
# The ledger's column widths for identifiers from input (connectors.ledger builds its columns from
# these), so a contribution that passes ``identifier_rejection`` always fits.
ID_LENGTHS = {"event_id": 200, "user_id": 200, "receipt_id": 80, "record_id": 64, "key_id": 32}
# Pool amounts in cents: 10**15 cents is ten trillion currency units; payouts, sums and the split's
# products stay far inside a signed 64-bit integer.
MAX_POOL_CENTS = 10**15


class Valuation(NamedTuple):
    quality: float
    duplicate: bool
    rate_micros: int
    weight_milli: int  # units x quality x 1000; what revenue_share pools split by
    value_micros: int


def rate_micros(catalog: Catalog, purpose: str, category: str) -> int:
    rate = Decimal(repr(catalog.purposes[purpose].categories[category].rate))
    return int((rate * 1_000_000).to_integral_value(ROUND_HALF_EVEN))


def weigh(units: int, quality: float, paid: bool, rate: int, usefulness_milli: int = NEUTRAL_MILLI
          ) -> tuple[int, int]:
    """(weight_milli, value_micros): units x quality x usefulness x 1000, and that x rate; 0 if unpaid."""
    quality_milli = round(quality * 1000) if paid else 0
    weight = int((Decimal(units * quality_milli * usefulness_milli) / 1000).to_integral_value(ROUND_HALF_EVEN))
    micros = (Decimal(weight) * rate / 1000).to_integral_value(ROUND_HALF_EVEN)
    return weight, int(micros)


def value(catalog: Catalog, record: Mapping[str, Any], duplicate: bool,
          usefulness_milli: int = NEUTRAL_MILLI) -> Valuation:
    quality = 1.0 if record["quality"] is None else float(record["quality"])
    rate = rate_micros(catalog, record["purpose"], record["category"])
    paid = record["tier"] == "data_sharing" and not duplicate
    weight, micros = weigh(record["units"], quality, paid, rate, usefulness_milli)
    return Valuation(quality, duplicate, rate, weight, micros)


def _shown(text: str) -> str:
    """Input echoed in an error message, bounded so a dead letter's message stays small."""
    return repr(text) if len(text) <= 60 else f"{text[:60]!r}... ({len(text)} characters)"


def identifier_rejection(record: Mapping[str, Any]) -> str | None:
    """Why a contribution's identifiers cannot go into the ledger (too long, control characters), or None."""
    for name in ("event_id", "user_id", "receipt_id"):
        problem = identifier_problem(record[name])
        if problem is not None:
            return f"{name} {problem}"
        if len(record[name]) > ID_LENGTHS[name]:
            return f"{name} has {len(record[name])} characters (at most {ID_LENGTHS[name]})"
    for name in ("record_id", "key_id"):  # keyed hashes from the gate: hex and a short prefix, or empty
        text = record.get(name) or ""
        if len(text) > ID_LENGTHS[name] or not (text.isascii() and text.isalnum() or not text):
            return f"{name} is not a keyed hash of at most {ID_LENGTHS[name]} letters and digits"
    return None


def rejection(catalog: Catalog, record: Mapping[str, Any], max_units: int) -> str | None:
    """Why a decoded contribution cannot be credited, or None if it can."""
    purpose = catalog.purposes.get(record["purpose"])
    if purpose is None:
        return f"unknown purpose {_shown(record['purpose'])}"
    if record["category"] not in purpose.categories:
        return f"purpose {purpose.name!r} does not use category {_shown(record['category'])}"
    units = record["units"]
    if not 1 <= units <= max_units:
        return f"units {units} outside 1..{max_units}"
    quality = record["quality"]
    if quality is not None and not 0.0 <= quality <= 1.0:
        return f"quality {quality} outside 0..1"
    if record["tier"] == "data_sharing" and record["plan"] not in PLANS:
        return "a data_sharing contribution without a plan"
    if not record["event_id"] or not record["user_id"]:
        return "empty event_id or user_id"
    return None


def period_of(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m")


def next_period(period: str) -> str:
    year, month = int(period[:4]), int(period[5:7])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}"


def parse_period(text: str) -> str:
    """``YYYY-MM`` or ValueError."""
    if len(text) != 7 or text[4] != "-" or not (text[:4].isdigit() and text[5:].isdigit()) \
            or not 1 <= int(text[5:]) <= 12:
        raise ValueError(f"period {text!r} is not YYYY-MM")
    return text


def split(amount: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``amount`` whole cents in proportion to ``weights`` (largest remainder).

    Every share is the floor of its exact share, and the cents left over go one each to
    the largest remainders (ties: the smaller key), so the shares sum to ``amount`` exactly.
    """
    total = sum(weights.values())
    if amount < 0 or total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError("split needs a non-negative amount and positive total weight")
    shares = {k: amount * w // total for k, w in weights.items()}
    left = amount - sum(shares.values())
    by_remainder = sorted(weights, key=lambda k: (-(amount * weights[k] % total), k))
    for key in by_remainder[:left]:
        shares[key] += 1
    return shares


@dataclass
class DuplicateIndex:
    """Texts each user already contributed to each purpose, by SimHash fingerprint.

    A fingerprint is a duplicate if the same user contributed the same fingerprint to the
    same purpose (in the open periods), or one within NEAR_DUPLICATE_BITS of their last
    RECENT_TEXTS texts.
    """

    def __post_init__(self) -> None:
        self._seen: dict[tuple[str, str], set[int]] = {}
        self._recent: dict[tuple[str, str], deque[int]] = {}

    def check_and_add(self, user_id: str, purpose: str, fingerprint: int | None) -> bool:
        if fingerprint is None:
            return False
        key = (user_id, purpose)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = set()
            self._recent[key] = deque(maxlen=RECENT_TEXTS)
        recent = self._recent[key]
        duplicate = fingerprint in seen or any(distance(fingerprint, fp) <= NEAR_DUPLICATE_BITS for fp in recent)
        seen.add(fingerprint)
        recent.append(fingerprint)
        return duplicate

    def load(self, rows: Iterable[tuple[str, str, int]]) -> None:
        for user_id, purpose, fingerprint in rows:
            self.check_and_add(user_id, purpose, fingerprint)

    def __len__(self) -> int:
        return sum(len(s) for s in self._seen.values())
