"""``up``'s start-up loop with stand-in processes: a registry that dies once at start is started again."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from consentgate.cluster import embedded
from consentgate.errors import ClusterError
from consentgate.settings import Settings

SLEEP = "import sys, time; time.sleep(60)"


def _fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry_exits: int) -> list[embedded.ManagedProcess]:
    spawned: list[embedded.ManagedProcess] = []
    exits = [registry_exits]
    exiting: set[int] = set()  # pids of the stand-in registries that exit at start

    def start(name: str, code: str) -> Any:
        popen, managed = embedded._spawn(name, [sys.executable, "-c", code, str(tmp_path)], tmp_path / f"{name}.log")
        spawned.append(managed)
        return popen, managed

    def start_registry(settings: Settings, port: int) -> Any:
        if exits[0] > 0:
            exits[0] -= 1
            popen, managed = start("registry", "import sys; print('H2 acquisition timeout'); sys.exit(3)")
            exiting.add(managed.pid)
            return popen, managed
        return start("registry", SLEEP)

    monkeypatch.setattr(embedded, "require_tools", lambda: None)
    monkeypatch.setattr(embedded, "_start_kafka", lambda settings, ports, secure: start("kafka", SLEEP))
    monkeypatch.setattr(embedded, "_start_registry", start_registry)
    monkeypatch.setattr(embedded, "_kafka_ready", lambda conf: True)
    # ready only when the newest process is a registry that stays up (one that exits never answers: up must
    # see it exit, however long the interpreter takes to start)
    monkeypatch.setattr(embedded, "_registry_ready",
                        lambda url: spawned[-1].name == "registry" and spawned[-1].pid not in exiting
                        and embedded._CHILDREN[spawned[-1].pid].poll() is None)
    return spawned


def test_a_registry_that_dies_at_start_is_started_once_more(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spawned = _fake(monkeypatch, tmp_path, registry_exits=1)
    settings = Settings(data_dir=tmp_path / "data", bootstrap_servers=None, schema_registry_url=None)
    try:
        info = embedded.up(settings)
        assert [m.name for m in spawned] == ["kafka", "registry", "registry"]
        assert [p.pid for p in info.processes] == [spawned[0].pid, spawned[2].pid]
    finally:
        for managed in spawned:
            proc = embedded._CHILDREN.pop(managed.pid, None)
            if proc is not None:
                proc.kill()
                proc.wait()


def test_a_registry_that_dies_twice_is_an_error_with_its_log(monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    spawned = _fake(monkeypatch, tmp_path, registry_exits=2)
    settings = Settings(data_dir=tmp_path / "data", bootstrap_servers=None, schema_registry_url=None)
    with pytest.raises(ClusterError, match=r"registry exited with 3; last lines of .*registry.log:\n"
                                           r"H2 acquisition timeout\nH2 acquisition timeout"):
        embedded.up(settings)
    assert [m.name for m in spawned] == ["kafka", "registry", "registry"]
    assert all(embedded._CHILDREN.get(m.pid) is None for m in spawned)  # up killed and reaped what it started
