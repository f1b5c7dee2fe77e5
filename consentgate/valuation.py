"""What a contribution is worth, how pools split, which period it belongs to (pure, no I/O).

value = units x rate(category, purpose) x quality, in micro-units of the catalog's
currency; a duplicate, or anything from a ``free``-tier user, is worth nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, NamedTuple

from consentgate.catalog import Catalog
from consentgate.quality import NEAR_DUPLICATE_BITS, distance

PLANS = ("per_unit", "revenue_share", "credits", "dividend")
POOL_PLANS = ("revenue_share", "dividend")
RECENT_TEXTS = 64


class Valuation(NamedTuple):
    quality: float
    duplicate: bool
    rate_micros: int
    weight_milli: int  # units x quality x 1000; what revenue_share pools split by
    value_micros: int


def rate_micros(catalog: Catalog, purpose: str, category: str) -> int:
    rate = Decimal(repr(catalog.purposes[purpose].categories[category].rate))
    return int((rate * 1_000_000).to_integral_value(ROUND_HALF_EVEN))


def value(catalog: Catalog, record: Mapping[str, Any], duplicate: bool) -> Valuation:
    quality = 1.0 if record["quality"] is None else float(record["quality"])
    rate = rate_micros(catalog, record["purpose"], record["category"])
    paid = record["tier"] == "data_sharing" and not duplicate
    quality_milli = round(quality * 1000) if paid else 0
    weight = record["units"] * quality_milli
    micros = (Decimal(weight) * rate / 1000).to_integral_value(ROUND_HALF_EVEN)
    return Valuation(quality, duplicate, rate, weight, int(micros))


def rejection(catalog: Catalog, record: Mapping[str, Any], max_units: int) -> str | None:
    """Why a decoded contribution cannot be credited, or None if it can."""
    purpose = catalog.purposes.get(record["purpose"])
    if purpose is None:
        return f"unknown purpose {record['purpose']!r}"
    if record["category"] not in purpose.categories:
        return f"purpose {purpose.name!r} does not use category {record['category']!r}"
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
