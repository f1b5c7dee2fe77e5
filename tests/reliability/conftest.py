"""Collects one row per reliability scenario and prints them as a table at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

ROWS: list[dict[str, Any]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    terminalreporter.write_line("")
    terminalreporter.write_line("| scenario | cycles | records | leaks | losses | duplicates | wrong reasons | "
                                "stale consent | bad inputs tried |")
    terminalreporter.write_line("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in ROWS:
        terminalreporter.write_line(
            f"| {r['scenario']} | {r['cycles']} | {r['records']} | {r['leaks']} | {r['losses']} | "
            f"{r['duplicates']} | {r['wrong_reasons']} | {r['stale_consent']} | {r['bad_inputs']} |")


@pytest.fixture
def record_row() -> Any:
    def add(scenario: str, cycles: int, report: Any, bad_inputs: int) -> None:
        ROWS.append({"scenario": scenario, "cycles": cycles, "records": report.records, "leaks": len(report.leaks),
                     "losses": len(report.losses), "duplicates": len(report.duplicates),
                     "wrong_reasons": len(report.wrong_reasons), "stale_consent": len(report.stale_consent),
                     "bad_inputs": bad_inputs})

    return add
