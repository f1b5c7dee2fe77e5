"""The demo's reconciliation counts each side on its own, so a lost or doubled output shows by offset."""

from __future__ import annotations

from consentgate.demo import DemoResult, summary
from consentgate.reconcile import Balance, balance
from consentgate.streams.gate import GateStats

RANGES = {("act", 0): (0, 4), ("act", 1): (10, 12)}
DECISIONS = [(("act", 0, 0), True), (("act", 0, 1), False), (("act", 0, 3), False), (("act", 1, 10), True)]
DEAD = [("act", 0, 2), ("act", 1, 11)]


def test_every_input_offset_with_exactly_one_output_balances() -> None:
    assert balance(RANGES, DECISIONS, DEAD) == Balance(records_in=6, passed=2, dropped=2, dead_letters=2,
                                                       missing=(), duplicated=(), strays=())
    assert balance(RANGES, DECISIONS, DEAD).balanced


def test_a_lost_decision_shows_by_offset() -> None:
    lost = balance(RANGES, DECISIONS[:-1], DEAD)
    assert (lost.records_in, lost.passed + lost.dropped + lost.dead_letters) == (6, 5)
    assert lost.missing == (("act", 1, 10),) and not lost.balanced


def test_a_duplicate_that_hides_a_loss_in_the_totals_still_shows() -> None:
    # One output twice and another missing: the totals agree (6 = 6) but the offsets do not.
    swapped = balance(RANGES, [*DECISIONS[:-1], (("act", 0, 0), True)], DEAD)
    assert swapped.records_in == swapped.passed + swapped.dropped + swapped.dead_letters == 6
    assert (swapped.missing, swapped.duplicated, swapped.balanced) == ((("act", 1, 10),), (("act", 0, 0),), False)


def test_an_output_naming_an_offset_outside_the_input_is_a_stray() -> None:
    stray = balance(RANGES, [*DECISIONS, (("act", 1, 12), False)], DEAD)
    assert (stray.strays, stray.balanced) == ((("act", 1, 12),), False)
    assert balance(RANGES, [*DECISIONS, (("other", 0, 0), False)], DEAD).strays == (("other", 0, 0),)


def test_the_summary_says_no_and_names_offsets() -> None:
    class FakeGate:  # only the counters the summary reads
        stats = GateStats(records_in=6, decisions=4, dead_letters=2, records_passed=2)
        metrics = type("M", (), {"value": staticmethod(lambda name: 0.0)})()

    lost = balance(RANGES, DECISIONS[:-1], DEAD)
    lines = summary(FakeGate(), DemoResult(produced=6), lost)  # type: ignore[arg-type]
    assert "  in = passed + dropped + DLQ      NO" in lines
    assert "    input offsets without an output: act[1]@10" in lines
    assert "  the gate's own counters agree    NO" in lines  # the gate counted 4 decisions, 3 were read back
