"""The regate's diff: what the new generation drops from the old, by reason, by record id."""

from __future__ import annotations

from consentgate.regate.diff import CHANGED_BETWEEN_RUNS, GenerationDiff, compare


def test_diff_counts_drops_by_reason_and_ignores_old_records_outside_the_range() -> None:
    reasons = {"a": None, "b": "no_grant", "c": "erased", "d": "no_grant", "e": None, "f": "expired"}
    old = ["a", "b", "c", "d", "outside-1", "outside-2"]  # "f" was dropped by the old gate too
    new = ["a", "e"]  # "e": the old gate dead-lettered or dropped it, today it passes
    assert compare(reasons, old, new) == GenerationDiff(
        old_in_range=4, new=2, kept=1, dropped={"erased": 1, "no_grant": 2}, added=1,
        dropped_ids={"erased": ("c",), "no_grant": ("b", "d")})


def test_a_record_passing_today_but_missing_from_the_new_generation_is_named() -> None:
    diff = compare({"a": None}, ["a"], [])
    assert diff.dropped == {CHANGED_BETWEEN_RUNS: 1} and diff.kept == 0


def test_nothing_to_compare() -> None:
    assert compare({}, ["x"], []) == GenerationDiff(0, 0, 0, {}, 0, {})
