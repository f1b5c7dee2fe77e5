"""Run gate workers as real processes under load, consent churn and injected faults; then audit.

The load runs in this process: activity for a pool of users, with consent grants (some
expiring, some on older terms), revocations and erasures interleaved, and hostile records
mixed in. For every event it records the user's consent version acknowledged before the
event was produced, which the oracle holds each decision to.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from consentgate.connectors.jsonl import to_jsonable
from consentgate.connectors.kafka import admin, produce, producer
from consentgate.connectors.reader import stable_ends
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.records import activity_to_avro
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter

from consentgate.catalog import Catalog
from consentgate.model import ActivityEvent
from consentgate.settings import Settings
from tests.helpers import values, wait_for
from tests.reliability.oracle import Report, check

PAYLOADS: dict[str, dict[str, object]] = {
    "post": {"text": "a walk by the harbour"}, "search": {"query": "ferry times"},
    "click": {"item_id": "item-1", "url": "https://shop.example/1"}, "signal": {"kind": "dwell_ms", "value": 12.0},
    "conversation": {"text": "see you at six", "thread_id": "t-1"}}


class Workers:
    """Gate worker processes by id: start, kill -9, stop (SIGTERM, must exit 0)."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.kills = 0

    def start(self, worker: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
        for name in ("bootstrap_servers", "schema_registry_url", "topic_prefix", "group_id", "transactional_id_prefix",
                     "batch_size", "session_timeout_ms", "transaction_timeout_ms", "data_dir"):
            env[f"CONSENTGATE_{name.upper()}"] = str(getattr(self.settings, name))
        env["CONSENTGATE_PSEUDONYM_SECRET"] = self.settings.require_secret().decode()
        with (self.logs / f"{worker}.log").open("ab") as out:
            self.procs[worker] = subprocess.Popen(
                [sys.executable, "-m", "consentgate.cli.main", "gate", "--worker-id", worker],
                env=env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self, worker: str) -> None:
        self.procs[worker].send_signal(signal.SIGKILL)
        self.procs[worker].wait(30)
        self.kills += 1

    def stop(self, worker: str) -> None:
        proc = self.procs.pop(worker)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
        assert code == 0, f"{worker} exited {code}: {(self.logs / f'{worker}.log').read_text()[-2000:]}"

    def alive(self) -> list[str]:
        return [w for w, p in self.procs.items() if p.poll() is None]

    def stop_all(self) -> None:
        for worker in list(self.procs):
            if self.procs[worker].poll() is None:
                self.stop(worker)
            else:
                self.procs.pop(worker)


@dataclass
class Load:
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    acked: dict[str, int] = field(default_factory=dict)
    bad_inputs: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset) of each malformed input
    consent_changes: int = 0
    done: threading.Event = field(default_factory=threading.Event)


def run_load(settings: Settings, catalog: Catalog, topics: TopicNames, n_events: int, users: int, load: Load,
             seed: int, pace_s: float = 0.05, chunk: int = 100) -> None:
    rng = random.Random(seed)
    pairs = [(c, p.name) for p in catalog.purposes.values() for c in p.categories]
    versions: dict[str, int] = {}
    out = producer(settings)
    with registry_client(settings.require_registry()) as registry, ConsentWriter(settings, catalog) as writer:
        encode = Codecs(registry)["ActivityEvent"].writer_for(topics.activity)
        produced = 0
        while produced < n_events:
            requests = []
            for _ in range(3):
                user = f"u{rng.randrange(users)}"
                roll = rng.random()
                if roll < 0.55:
                    category, purpose = rng.choice(pairs)
                    terms = catalog.purposes[purpose].terms_version
                    requests.append(ConsentRequest(
                        "grant", user, category, purpose,
                        expires_at=datetime.now(timezone.utc) + timedelta(seconds=rng.uniform(0.5, 3))
                        if rng.random() < 0.15 else None,
                        terms_version=terms - 1 if terms > 1 and rng.random() < 0.1 else None))
                elif roll < 0.85 and versions.get(user):
                    requests.append(ConsentRequest("revoke", user, *rng.choice([(None, None), pairs[0], pairs[3]])))
                elif roll >= 0.85:
                    requests.append(ConsentRequest("erase", user))
            for receipt in _apply_each(writer, requests):
                versions[receipt["user_id"]] = receipt["consent_version"]
                load.consent_changes += 1
            for _ in range(chunk):
                user = f"u{rng.randrange(users)}"
                category = rng.choice(list(PAYLOADS) + ["voice"])
                payload = PAYLOADS.get(category, {"transcript": "hum"})
                event = ActivityEvent(f"e{produced}", user, category, datetime.now(timezone.utc), "load", payload)
                load.events[event.event_id] = to_jsonable(activity_to_avro(event)) | {"payload": payload}
                load.acked[event.event_id] = versions.get(user, 0)
                _produce(out, topics.activity, user.encode() if rng.random() > 0.05 else None,
                         encode(activity_to_avro(event)))
                produced += 1
                if rng.random() < 0.01:
                    produce(out, topics.activity, rng.randbytes(rng.randint(0, 40)), None, on_delivery=lambda err, msg:
                            load.bad_inputs.add((msg.partition(), msg.offset())) if err is None else None)
            out.poll(0)
            time.sleep(pace_s)
    assert out.flush(60) == 0
    load.done.set()


def _apply_each(writer: ConsentWriter, requests: list[ConsentRequest]) -> list[dict[str, Any]]:
    receipts = []
    for request in requests:
        try:
            receipts += writer.apply([request])
        except Exception as exc:  # a revoke for a user erased meanwhile is refused: fine
            if "no consent to revoke" not in str(exc):
                raise
    return receipts


def _produce(out: Any, topic: str, key: bytes | None, value: bytes) -> None:
    produce(out, topic, value, key)


def no_open_transactions(settings: Settings, topics: list[str]) -> bool:
    client = admin(settings)
    parts = [TopicPartition(t, p) for t in topics for p in client.list_topics(t, timeout=10).topics[t].partitions]
    return stable_ends(client, parts) == stable_ends(client, parts, committed=False)


def audit(settings: Settings, catalog: Catalog, topics: TopicNames, load: Load) -> Report:
    outputs = [topics.decisions, topics.contributions, topics.dlq, *topics.training.values()]
    wait_for(lambda: no_open_transactions(settings, outputs), timeout=120, what="abandoned transactions to end")
    training = [r for t in topics.training.values() for r in values(settings, t)]
    return check(catalog, settings.require_secret(), load.events, load.acked, values(settings, topics.consent_changes),
                 values(settings, topics.decisions), training, values(settings, topics.contributions),
                 [(d["partition"], d["offset"]) for d in values(settings, topics.dlq)], load.bad_inputs)


Faults = Callable[[Workers, Load], None]


def scenario(settings: Settings, catalog: Catalog, topics: TopicNames, logs: Path, n_events: int, faults: Faults,
             first_workers: list[str], users: int = 150, seed: int = 1) -> tuple[Report, Workers, Load]:
    workers = Workers(settings, logs)
    for w in first_workers:
        workers.start(w)
    load = Load()
    feeder = threading.Thread(target=run_load, args=(settings, catalog, topics, n_events, users, load, seed),
                              daemon=True)
    feeder.start()
    try:
        faults(workers, load)
        feeder.join(600)
        assert not feeder.is_alive(), "load did not finish"
        if not workers.alive():
            workers.start("drain")
        total = n_events + len(load.bad_inputs)
        wait_for(lambda: _decided(settings, topics) >= total, timeout=300, what=f"{total} inputs decided")
    finally:
        workers.stop_all()
    return audit(settings, catalog, topics, load), workers, load


def _decided(settings: Settings, topics: TopicNames) -> int:
    """Committed decisions + dead letters (counted, so exact even with transaction markers)."""
    return len(values(settings, topics.decisions)) + len(values(settings, topics.dlq))
