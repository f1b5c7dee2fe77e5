"""A real Prometheus (Debian's package) scrapes a running gate, records the funnel and fires an alert.

The rules are the shipped ``deploy/prometheus/rules.yml`` with two changes made here so the test
does not wait for minutes: every ``for:`` hold is 0s and the recording group evaluates every second.
The expressions are exactly the shipped ones.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from consentgate.connectors.topics import TopicNames

from consentgate.catalog import Catalog
from consentgate.model import ActivityEvent
from tests.conftest import IN_CI, SettingsFactory
from tests.helpers import GateThread, produce_events, produce_raw, wait_for

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
FLOOD = 1_000
GARBAGE = 200
# What the shipped catalog allows: 9 (purpose, category) pairs x 7 results + 3 (purpose, unknown) series.
EXPORTED_OUTCOMES = 9 * 7 + 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}",
                                    timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=5) as resp:
            return list(json.loads(resp.read())["data"]["alerts"])


@pytest.fixture
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if IN_CI:
            pytest.fail("prometheus missing in CI: .ci/run installs Debian's prometheus package")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    return found


def start_prometheus(binary: str, workdir: Path, target: str) -> Iterator[Prometheus]:
    fast = re.sub(r"for: \d+[smh]", "for: 0s", RULES.read_text()).replace("interval: 30s", "interval: 1s")
    (workdir / "rules.yml").write_text(fast)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [{"job_name": "consentgate-gate", "static_configs": [{"targets": [target]}]}],
    }))
    port = free_port()
    log = (workdir / "prometheus.log").open("w")
    proc = subprocess.Popen([binary, f"--config.file={workdir / 'prometheus.yml'}",
                             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:
        def ready() -> bool:
            assert proc.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_for(ready, 60, "prometheus ready")
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_prometheus_scrapes_a_gate_records_the_funnel_and_fires_the_dlq_alert(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, tmp_path: Path,
        prometheus_binary: str) -> None:
    settings = make_settings(metrics_port=0)  # a free port; the gate binds 127.0.0.1
    worker = GateThread(settings, catalog)
    # Outcome series exported at 0 from the start, as the gate does once it builds GateMetrics(catalog).
    worker.gate.metrics.use_catalog(catalog)
    with worker as running:
        server = running.gate.metrics.server
        assert server is not None and server.url.startswith("http://127.0.0.1:")
        for prom in start_prometheus(prometheus_binary, tmp_path, f"127.0.0.1:{server.port}"):
            wait_for(lambda: prom.scalar('up{job="consentgate-gate"}') == 1, 60, "the gate scraped")
            now = datetime.now(timezone.utc)
            # 1,000 records, each of its own unknown category, and some garbage for the DLQ
            produce_events(settings, [ActivityEvent(f"e{n}", f"u{n % 50}", f"made-up-{n}", now, "test",
                                                    {"text": "x"}) for n in range(FLOOD)])
            produce_raw(settings, [(b"k", b"not avro at all") for _ in range(GARBAGE)])
            wait_for(lambda: prom.scalar("sum(consentgate_records_in_total)") == FLOOD + GARBAGE, 90,
                     "every record scraped")

            # The flood added no series: each purpose's one "unknown" series counts all 1,000 records.
            assert prom.scalar("count(consentgate_outcomes_total)") == EXPORTED_OUTCOMES
            outcomes = prom.query("consentgate_outcomes_total > 0")
            assert sorted((o["metric"]["purpose"], o["metric"]["category"], o["metric"]["result"], o["value"][1])
                          for o in outcomes) == sorted((p, "unknown", "unknown_category", str(FLOOD))
                                                       for p in catalog.purposes)
            dlq = {d["metric"]["error_class"]: d["value"][1] for d in prom.query("consentgate_dlq_total > 0")}
            assert dlq == {"UndecodableRecord": str(GARBAGE)}

            # The recording rules' series exist and say what happened.
            wait_for(lambda: (prom.scalar('consentgate:dropped:rate5m{result="unknown_category"}') or 0) > 0, 60,
                     "recorded drop rate")
            assert (prom.scalar("consentgate:records_in:rate5m") or 0) > 0
            passed = {r["metric"]["purpose"]: r["value"][1] for r in prom.query("consentgate:passed:rate5m")}
            assert passed == {p: "0" for p in catalog.purposes}  # nothing passed: nobody consented
            # rules evaluate every second, after the scrape that saw the dead letters
            wait_for(lambda: (prom.scalar("consentgate:dlq:ratio5m") or 0) > 0.01, 60, "recorded DLQ ratio")
            assert (prom.scalar("consentgate:dlq:ratio5m") or 1) < 1

            # The DLQ alert fires; the consent view is fresh, so its alert does not.
            def firing() -> set[str]:
                return {a["labels"]["alertname"] for a in prom.alerts() if a["state"] == "firing"}

            wait_for(lambda: "ConsentgateDeadLetterRateHigh" in firing(), 60, "the DLQ alert firing")
            alert = next(a for a in prom.alerts() if a["labels"]["alertname"] == "ConsentgateDeadLetterRateHigh")
            assert alert["labels"] == {"alertname": "ConsentgateDeadLetterRateHigh", "severity": "warning"}
            assert "ConsentgateConsentViewStale" not in firing()
            assert "ConsentgateWorkerDown" not in firing()
