"""Bounded label values: no input can grow the number of exported series.

A Prometheus series exists for every distinct label combination, for as long as the
process lives. A label whose values come from input (a record's category, an error
message) is therefore a memory leak an attacker controls. Every label consentgate
exports takes its values from a set fixed by code or configuration; anything else is
counted under one fallback value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

UNKNOWN = "unknown"
OTHER = "other"
DEFAULT_CAP = 100


class LabelValues:
    """The values one label may take; every other value is reported as ``fallback``.

    ``allowed`` is either a fixed collection or a predicate. Even a predicate cannot
    admit more than ``cap`` distinct values, so a wrong predicate still cannot leak.
    """

    def __init__(self, allowed: Iterable[str] | Callable[[str], bool], fallback: str = OTHER,
                 cap: int = DEFAULT_CAP) -> None:
        if callable(allowed):
            self._accepts: Callable[[str], bool] = allowed
            self._seen: set[str] = set()
        else:
            fixed = frozenset(allowed)
            self._accepts = fixed.__contains__
            self._seen = set(fixed)
            cap = max(cap, len(fixed))
        self.fallback = fallback
        self.cap = cap

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self.cap and self._accepts(value):
            self._seen.add(value)
            return value
        return self.fallback

    @property
    def known(self) -> frozenset[str]:
        """The values admitted so far (all of them, for a fixed set)."""
        return frozenset(self._seen)


class BoundedMetric:
    """A labelled prometheus_client metric whose ``labels(...)`` maps each value through its LabelValues.

    Call sites keep the prometheus_client shape: ``metric.labels("x").inc()``.
    """

    def __init__(self, metric: Any, *values: LabelValues) -> None:
        self._metric = metric
        self._values = values

    def labels(self, *values: str) -> Any:
        if len(values) != len(self._values):
            raise ValueError(f"expected {len(self._values)} label values, got {len(values)}")
        return self._metric.labels(*(bound(str(v)) for bound, v in zip(self._values, values)))

    def remove(self, *values: str) -> None:
        """Drop one series (e.g. a partition no longer assigned); absent ones are ignored."""
        try:
            self._metric.remove(*(bound(str(v)) for bound, v in zip(self._values, values)))
        except KeyError:
            pass

    def zero(self, *values: str) -> None:
        """Create a series at 0, so rate() and increase() see its first increment."""
        self.labels(*values)

    def clear(self) -> None:
        self._metric.clear()
