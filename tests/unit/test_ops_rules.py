"""The Prometheus rules in deploy/prometheus/ pass ``promtool check`` and their own ``promtool test rules``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if IN_CI:
            pytest.fail("promtool missing in CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def test_rules_are_valid() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(RULES / "rules.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 22 rules found" in out.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    out = subprocess.run([promtool(), "test", "rules", "rules_test.yml"], cwd=RULES, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_test_fails_when_an_alert_is_wrong(tmp_path: Path) -> None:
    """The rule tests can fail: raise the DLQ threshold and the firing case must break."""
    (tmp_path / "rules.yml").write_text((RULES / "rules.yml").read_text().replace(
        "expr: consentgate:dlq:ratio5m > 0.01", "expr: consentgate:dlq:ratio5m > 0.5"))
    shutil.copy(RULES / "rules_test.yml", tmp_path)
    out = subprocess.run([promtool(), "test", "rules", "rules_test.yml"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 1
    assert "alertname: ConsentgateDeadLetterRateHigh, time: 10m" in out.stdout + out.stderr
