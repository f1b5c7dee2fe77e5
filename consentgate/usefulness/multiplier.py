"""From Shapley values to the multiplier a payout uses, and the band a person is shown.

Values are clipped at zero (a contribution that moves the K nearest away from what the model
needs earns no usefulness), divided by their mean over the purpose's valued contributions in
the period (so the average contribution keeps multiplier 1 and a period's payouts do not
depend on how many people contributed), and capped. Multipliers are whole thousandths, so
every weight computed from them is an exact integer.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

NEUTRAL_MILLI = 1000  # a record with no text, or a period with nothing to compare: usefulness does not apply
DEFAULT_CAP = 3.0


def multipliers_milli(values: NDArray[np.float64], cap: float = DEFAULT_CAP) -> NDArray[np.int64]:
    """Integer multipliers in thousandths: clip(values, 0) / mean, capped at ``cap``.

    With no positive value at all (no contribution is near any reference) nothing separates
    the contributions, and every multiplier is neutral.
    """
    if cap < 1:
        raise ValueError(f"cap {cap}: at least 1")
    clipped = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    mean = clipped.mean() if len(clipped) else 0.0
    if not mean > 0:
        return np.full(len(clipped), NEUTRAL_MILLI, dtype=np.int64)
    scaled = np.minimum(clipped / mean, cap)
    return np.rint(scaled * 1000).astype(np.int64)


class Band(NamedTuple):
    low_milli: int
    words: str  # completes "your posts for <purpose> ..."


BANDS = (  # highest first; a person sees only their own band, never another's value
    Band(1500, "were among the most useful this period"),
    Band(1100, "were more useful than most"),
    Band(900, "were about as useful as most"),
    Band(300, "were less useful than most"),
    Band(0, "matched little of what the model needs"),
)


def band_of(multiplier_milli: int) -> Band:
    for band in BANDS:
        if multiplier_milli >= band.low_milli:
            return band
    return BANDS[-1]


def band_range(band: Band, cap_milli: int) -> str:
    """The band's multiplier range in words, e.g. ``x1.10 to x1.50``."""
    index = BANDS.index(band)
    high = cap_milli if index == 0 else BANDS[index - 1].low_milli
    return f"x{Decimal(band.low_milli) / 1000:.2f} to x{Decimal(high) / 1000:.2f}"
