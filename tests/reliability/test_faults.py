"""kill -9 cycles, rebalances and a broker restart under load and consent churn, audited exactly.

The small scenario runs in the normal suite; ``pytest -m reliability`` runs the long ones.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from consentgate.connectors.topics import TopicNames

from consentgate.catalog import Catalog
from consentgate.cluster import embedded
from consentgate.settings import Settings
from tests.cluster import RunningCluster
from tests.conftest import SettingsFactory
from tests.reliability.scenario import Load, Workers, scenario

FAST = {"batch_size": 50, "session_timeout_ms": 3000, "transaction_timeout_ms": 5000}


def _kill_cycles(cycles: int, worker: str, seed: int) -> Any:
    rng = random.Random(seed)

    def faults(workers: Workers, load: Load) -> None:
        for _ in range(cycles):
            time.sleep(rng.uniform(0.5, 2.5))
            workers.kill(worker)
            workers.start(worker)

    return faults


def _assert_clean(report: Any) -> None:
    assert report.problems() == {}


def test_small_kill_and_rebalance(make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog,
                                  tmp_path: Path, record_row: Any) -> None:
    settings = make_settings(**FAST)

    def faults(workers: Workers, load: Load) -> None:
        _kill_cycles(3, "w1", 7)(workers, load)
        workers.start("w2")  # join: rebalance
        time.sleep(3)
        workers.stop("w1")  # leave: rebalance

    report, workers, load = scenario(settings, catalog, topics, tmp_path, 3000, faults, ["w1"])
    record_row("small: 3 kill -9, join + leave", workers.kills, report, len(load.bad_inputs))
    _assert_clean(report)
    assert workers.kills == 3 and load.consent_changes > 50


@pytest.mark.reliability
def test_twenty_kill_9_cycles(make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog,
                              tmp_path: Path, record_row: Any) -> None:
    settings = make_settings(**FAST)
    faults = _kill_cycles(20, "w1", 11)
    report, workers, load = scenario(settings, catalog, topics, tmp_path, 12_000, faults, ["w1"], seed=2)
    record_row("20 kill -9 of a worker at random instants", workers.kills, report, len(load.bad_inputs))
    _assert_clean(report)
    assert workers.kills == 20


@pytest.mark.reliability
def test_three_workers_joining_and_leaving(make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog,
                                           tmp_path: Path, record_row: Any) -> None:
    settings = make_settings(**FAST)
    steps = 0

    def faults(workers: Workers, load: Load) -> None:
        nonlocal steps
        for action, worker in [("start", "b"), ("start", "c"), ("kill", "a"), ("stop", "b"), ("start", "a"),
                               ("start", "b"), ("kill", "c"), ("stop", "a"), ("start", "c"), ("kill", "b")]:
            time.sleep(2.0)
            getattr(workers, action)(worker)
            steps += 1
            if action == "kill":
                workers.procs.pop(worker)

    report, workers, load = scenario(settings, catalog, topics, tmp_path, 10_000, faults, ["a"], seed=3)
    record_row("3 workers joining, leaving, killed (10 rebalances)", steps, report, len(load.bad_inputs))
    _assert_clean(report)


@pytest.mark.reliability
def test_broker_restart_mid_stream(make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog,
                                   cluster: RunningCluster, tmp_path: Path, record_row: Any) -> None:
    if cluster.kind != "embedded":
        pytest.skip("restarting the broker needs the embedded launcher")
    settings = make_settings(**FAST)
    launcher = Settings(data_dir=cluster.data_dir, bootstrap_servers=None, schema_registry_url=None)

    def faults(workers: Workers, load: Load) -> None:
        time.sleep(4)
        info = embedded.status(launcher)
        assert info is not None
        kafka = next(p for p in info.processes if p.name == "kafka")
        import os
        import signal

        os.kill(kafka.pid, signal.SIGKILL)
        time.sleep(3)
        again = embedded.up(launcher)  # same ports, same data
        assert again.bootstrap_servers == cluster.bootstrap_servers

    report, workers, load = scenario(settings, catalog, topics, tmp_path, 8_000, faults, ["w1", "w2"], seed=4)
    record_row("broker kill -9 and restart mid-stream, 2 workers", 1, report, len(load.bad_inputs))
    _assert_clean(report)
