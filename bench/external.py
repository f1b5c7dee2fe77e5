"""Contenders that run as their own process: the Kafka Streams reference gate and the faust agent.

Each reads the bench's activity topic and consent.state, writes JSON decisions (naming the
input's partition and offset) to its own decisions topic and passed records to its own sinks.
Throughput: its decisions counted as they become readable (read_committed), from the first to
the last. Latency: the same process, caught up, fed at half that rate by the paced producer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import random
from collections.abc import Callable
from datetime import datetime, timezone

from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic
from consentgate.connectors.kafka import admin, consumer, produce, producer
from consentgate.model import ActivityEvent
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.records import activity_to_avro
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from consentgate.synthetic import user_id

from bench.common import Workbench, timed
from bench.latency import Observer, arrived, latencies_ms, paced_copy, warm_up

HERE = Path(__file__).resolve().parent
KSTREAMS = HERE / "kstreams"


@dataclass
class ExternalRun:
    rate: float
    latencies: list[float]
    settings: str  # how the contender was tuned, for RESULTS.md
    revocations: list[float]  # ms from a revocation's acknowledgement to the first decision that applies it


def _catalog_json(bench: Workbench, name: str) -> str:
    return json.dumps({"purposes": {
        p.name: {"terms_version": p.terms_version, "categories": list(p.categories),
                 "sink": bench.settings.topic(f"{name}.{p.sink_topic}")}
        for p in bench.catalog.purposes.values()}})


def _create(bench: Workbench, names: list[str]) -> None:
    client = admin(bench.settings)
    futures = client.create_topics([NewTopic(n, bench.settings.partitions, 1) for n in names])
    for f in futures.values():
        f.result()
    time.sleep(1.0)


def build_kstreams() -> str:
    """Compile the reference gate with Maven (once) and return its classpath."""
    cp = KSTREAMS / "cp.txt"
    classes = KSTREAMS / "target" / "classes" / "io" / "consentgate" / "bench" / "ReferenceGate.class"
    source = KSTREAMS / "src" / "main" / "java" / "io" / "consentgate" / "bench" / "ReferenceGate.java"
    if not (cp.exists() and classes.exists() and classes.stat().st_mtime >= source.stat().st_mtime):
        subprocess.run(["mvn", "-q", "-B", "compile", "dependency:build-classpath", f"-Dmdep.outputFile={cp}"],
                       cwd=KSTREAMS, check=True, timeout=1800)
    return f"{KSTREAMS / 'target' / 'classes'}:{cp.read_text().strip()}"


def kstreams_command(bench: Workbench, app: str, decisions: str, commit_ms: int = 100) -> list[str]:
    s = bench.settings
    return ["java", "-Xmx2g", "-cp", build_kstreams(), "io.consentgate.bench.ReferenceGate", s.require_bootstrap(),
            s.require_registry(), app, bench.topics.activity, bench.topics.consent_state, decisions,
            _catalog_json(bench, "ks"), str(commit_ms)]


def faust_command(bench: Workbench, app: str, decisions: str) -> list[str]:
    s = bench.settings
    return [sys.executable, "-m", "bench.faust_gate", json.dumps({
        "bootstrap": s.require_bootstrap(), "registry": s.require_registry(), "app": app,
        "activity": bench.topics.activity, "consent": bench.topics.consent_state, "decisions": decisions,
        "partitions": s.partitions, "catalog": s.catalog and str(s.catalog),
        "guarantee": os.environ.get("BENCH_FAUST_GUARANTEE", "exactly_once"),
        "sinks": json.loads(_catalog_json(bench, "faust"))})]


def _count(bench: Workbench, topic: str, expected: int, timeout: float) -> tuple[float, float, int]:
    """Read ``topic`` (read_committed) until ``expected`` records; (first seen, last seen, count)."""
    reader = consumer(bench.settings, f"count-{uuid.uuid4()}", **{"fetch.wait.max.ms": 5})
    parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
    reader.assign([TopicPartition(topic, p, -2) for p in parts])
    first = last = 0.0
    seen = 0
    deadline = time.monotonic() + timeout
    while seen < expected and time.monotonic() < deadline:
        batch = [m for m in reader.consume(2000, 0.5) if m.error() is None]
        if batch:
            now = time.monotonic()
            first = first or now
            last = now
            seen += len(batch)
    reader.close()
    return first, last, seen


def _records_in(bench: Workbench, topic: str) -> int:
    """Records in a topic written without transactions: the sum of its high watermarks."""
    reader = consumer(bench.settings, f"size-{uuid.uuid4()}")
    parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
    total = sum(reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    reader.close()
    return total


def _start(command: list[str], log_path: Path) -> tuple[subprocess.Popen[bytes], Any]:
    log = open(log_path, "w")  # noqa: SIM115 - closed by _stop
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)), log


def _stop(proc: subprocess.Popen[bytes], log: Any) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
    log.close()


def _command(bench: Workbench, name: str, app: str, decisions: str) -> tuple[list[str], str]:
    if name == "ks":
        return kstreams_command(bench, app, decisions), (
            "Kafka Streams 4.1.1, exactly_once_v2, commit.interval.ms=100, 1 stream thread, max.poll.records=2000, "
            "linger.ms=5, batch.size=256 KiB, KTable on consent.state (source topic reused as its changelog)")
    return faust_command(bench, app, decisions), (
        "faust-streaming 0.15, processing_guarantee=exactly_once, consent table loaded from consent.state and "
        "kept current by an agent, send_soon, producer buffer 10000, stream_buffer_maxsize=4096, broker_commit_every=2000, "
        "producer_linger=5 ms")


def run_external(bench: Workbench, name: str, latency_count: int, limit: int | None = None,
                 revocations: int = 20) -> ExternalRun:
    """Throughput over the activity topic (its first ``limit`` records), then latency in a fresh
    instance whose group starts at the end of the activity topic (its table still recovers in full)."""
    events = _records_in(bench, bench.topics.activity)
    if limit is not None:
        events = min(events, limit)
    decisions = bench.settings.topic(f"{name}.decisions")
    sinks = [json.loads(_catalog_json(bench, name))["purposes"][p]["sink"] for p in bench.catalog.purposes]
    _create(bench, [decisions, *sinks])
    app = f"{bench.settings.topic_prefix}{name}-{uuid.uuid4().hex[:6]}"
    command, tuned = _command(bench, name, app, decisions)
    proc, log = _start(command, HERE / f".{name}.log")
    try:
        first, last, seen = _count(bench, decisions, events, timeout=1800)
    finally:
        _stop(proc, log)
    if seen < events:
        raise RuntimeError(f"{name}: only {seen} of {events} decisions; see bench/.{name}.log")
    rate = events / max(last - first, 1e-3)

    timed(f"{name}: {rate:,.0f} msgs/s; latency instance")
    count = min(latency_count, int(rate / 2 * 20))
    app = f"{bench.settings.topic_prefix}{name}-lat-{uuid.uuid4().hex[:6]}"
    _commit_at_end(bench, app, bench.topics.activity)
    command, _ = _command(bench, name, app, decisions)
    log_path = HERE / f".{name}-latency.log"
    proc, log = _start(command, log_path)
    try:
        deadline = time.monotonic() + 120
        while name == "ks" and "RUNNING" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)  # Kafka Streams says RUNNING once its table is restored

        def coords(msg: Any) -> tuple[int, int] | None:
            d = json.loads(msg.value())
            return (d["input"]["partition"], d["input"]["offset"])

        # faust logs no readiness line at warn level: deciding the whole warm-up is the readiness signal.
        warm_up(bench.settings, bench.topics.activity, decisions, rate / 2, max(100, int(rate / 2 * 5)), coords)
        observer = Observer(bench.settings, decisions, count, coords).start()
        sent_at = paced_copy(bench.settings, bench.topics.activity, bench.topics.activity, rate / 2, count)
        observer.join(120)
        timed(f"{name}: {len(observer.seen):,} of {count:,} latency samples; probed revocations")
        return ExternalRun(rate, latencies_ms(observer.seen, sent_at), tuned,
                           revocation_latency(bench, decisions, revocations))
    finally:
        _stop(proc, log)


def _decided_ms(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp() * 1000
    return datetime.fromisoformat(value).timestamp() * 1000


def revocation_latency(bench: Workbench, decisions: str, revocations: int = 20,
                       parse: Callable[[Any], dict[str, Any]] = lambda msg: json.loads(msg.value()),
                       spacing_s: float = 0.25, probe_s: float = 3.0, timeout_s: float = 120.0) -> list[float]:
    """Revoke ``revocations`` users, one every ``spacing_s``; after each acknowledgement, send that user a
    probe activity every 50 ms (for ``probe_s``) until a decision at the new consent version appears. Latency: that
    decision's decided_at minus the acknowledgement (the moment the contender applied the revocation,
    as consentgate's histogram measures).

    The users are probed side by side, so a contender whose decisions become readable only at its next
    commit (faust: seconds) costs that wait once, not once per revocation; what is measured, decided_at,
    does not depend on when the decision becomes readable.
    """
    settings = bench.settings
    reader = consumer(settings, f"revocations-{uuid.uuid4()}", **{"fetch.wait.max.ms": 5})
    parts = reader.list_topics(decisions, timeout=10).topics[decisions].partitions
    reader.assign([TopicPartition(decisions, p, -1) for p in parts])
    reader.consume(1, 1.0)
    out = producer(settings)
    rng = random.Random(7)
    results: list[float] = []
    pending: dict[str, tuple[float, int]] = {}  # user -> (acknowledged at, ms since the epoch; new version)
    with registry_client(settings.require_registry()) as registry, ConsentWriter(settings, bench.catalog) as writer:
        encode = Codecs(registry)["ActivityEvent"].writer_for(bench.topics.activity)
        writer.warm()  # read every consent partition once, before the clock starts
        revoked = tried = 0
        used: set[str] = set()
        next_revocation = time.monotonic()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            revoking = revoked < revocations and tried < revocations * 20  # else: too few users left with consent
            if not (revoking or pending):
                break
            if revoking and time.monotonic() >= next_revocation:
                tried += 1
                user = user_id(rng.randrange(1000))
                if user in used:
                    continue
                used.add(user)
                try:
                    [receipt] = writer.apply([ConsentRequest("revoke", user, source="bench")])
                except Exception:  # noqa: BLE001 - a user with nothing left to revoke: pick another
                    continue
                pending[user] = (time.time() * 1000, receipt["consent_version"])
                revoked += 1
                next_revocation = time.monotonic() + spacing_s
            now = time.time() * 1000
            for user, (acked_ms, _) in pending.items():
                if now - acked_ms > probe_s * 1000:
                    continue  # probed long enough: its decisions may still be on their way
                probe = ActivityEvent(f"probe-{uuid.uuid4()}", user, "search", datetime.now(timezone.utc), "bench",
                                      {"query": "probe"})
                produce(out, bench.topics.activity, encode(activity_to_avro(probe)), user.encode())
            out.flush(5)
            until = time.monotonic() + 0.05
            while time.monotonic() < until:
                for msg in arrived(reader, 500, 0.01):
                    if msg.error() is None:
                        d = parse(msg)
                        waiting = pending.get(d["user_id"])
                        if waiting is not None and (d["consent_version"] or 0) >= waiting[1]:
                            results.append(_decided_ms(d["decided_at"]) - waiting[0])
                            del pending[d["user_id"]]
    reader.close()
    return results


def _commit_at_end(bench: Workbench, group: str, topic: str) -> None:
    c = consumer(bench.settings, group)
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.commit(offsets=[TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
                      for p in parts], asynchronous=False)
    c.close()


def main() -> None:
    import argparse

    from bench.common import load_activity, load_consent, workbench
    from bench.latency import percentile

    parser = argparse.ArgumentParser(description="one external contender on its own: python -m bench.external ks")
    parser.add_argument("contender", choices=["ks", "faust"])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=20_000)
    args = parser.parse_args()
    bench = workbench(partitions=6, batch_size=2000)
    load_consent(bench, args.users)
    load_activity(bench, args.users, args.events)
    run = run_external(bench, args.contender, 5_000)
    print(f"{args.contender}: {run.rate:,.0f} msgs/s; latency at half: p50 {percentile(run.latencies, 0.5):.1f} ms, "
          f"p99 {percentile(run.latencies, 0.99):.1f} ms over {len(run.latencies)}; revocation p50 "
          f"{percentile(run.revocations, 0.5):.0f} ms, p99 {percentile(run.revocations, 0.99):.0f} ms over "
          f"{len(run.revocations)}")


if __name__ == "__main__":
    main()
