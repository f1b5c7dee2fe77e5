"""What a new training generation drops from the old one, by reason. Pure: no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# The old generation held a record that today's decision passes, but the new generation lacks it:
# consent changed between two runs of one resumed regate (the part written first used the older consent).
CHANGED_BETWEEN_RUNS = "changed_between_runs"


@dataclass(frozen=True)
class GenerationDiff:
    """Old vs new generation over the regated range, compared by record id."""

    old_in_range: int  # records of the old generation whose inputs lie in the range
    new: int  # records of the new generation
    kept: int  # in both
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> old records the new one drops
    added: int = 0  # in the new generation only (e.g. a record the old gate dead-lettered)
    dropped_ids: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)  # reason -> record ids


def compare(reasons: Mapping[str, str | None], old_ids: Iterable[str], new_ids: Iterable[str]) -> GenerationDiff:
    """``reasons``: every record id decided in the range, None when it passed, else its drop reason.

    Old records outside the range (not in ``reasons``) are not compared.
    """
    new = set(new_ids)
    old_in_range = {rid for rid in old_ids if rid in reasons}
    dropped: dict[str, list[str]] = {}
    for rid in sorted(old_in_range - new):
        reason = reasons[rid] or CHANGED_BETWEEN_RUNS
        dropped.setdefault(reason, []).append(rid)
    counts = Counter({reason: len(ids) for reason, ids in dropped.items()})
    return GenerationDiff(len(old_in_range), len(new), len(old_in_range & new), dict(sorted(counts.items())),
                          len(new - old_in_range), {r: tuple(ids) for r, ids in sorted(dropped.items())})
