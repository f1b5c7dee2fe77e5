"""python -m bench [--quick]: every contender on the same broker, data and machine, as one run.

Writes bench/results.json (one row per contender and figure, with the run's conditions) and
bench/RESULTS.md. --quick (under 10 minutes on 2 cores): 200k events, 100k users, 1M-user view.
Full: 1M events, 1M users, 1M and 10M-user views.

Contenders: (1) raw transactional passthrough, the limit; (2) consentgate's gate; (3) the Kafka
Streams reference gate (bench/kstreams, Java, built here with Maven); (4) the faust-streaming
agent (bench/faust_gate.py). (3) and (4) run as their own processes (bench/external.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition
from consentgate.connectors.kafka import consumer
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter

from bench.common import Workbench, cores, load_activity, load_consent, timed, workbench
from bench.consent_view import _CHILD, load_states
from bench.external import revocation_latency, run_external
from bench.gate_scaling import run_workers
from bench.gate_throughput import measure
from bench.latency import Observer, header_stamp, latencies_ms, paced_copy, percentile, warm_up
from consentgate.settings import Settings
from consentgate.synthetic import user_id

HERE = Path(__file__).resolve().parent
Row = dict[str, Any]


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    for name in ("bootstrap_servers", "schema_registry_url", "topic_prefix", "batch_size", "data_dir"):
        env[f"CONSENTGATE_{name.upper()}"] = str(getattr(settings, name))
    env["CONSENTGATE_PSEUDONYM_SECRET"] = settings.require_secret().decode()
    env.update(extra)
    return env


def _settings_json(settings: Settings) -> str:
    return json.dumps({k: v for k, v in settings.model_dump(mode="json").items() if v is not None} |
                      {"pseudonym_secret": settings.require_secret().decode()})


def _commit_at_end(settings: Settings, group: str, topic: str) -> None:
    """Start ``group`` at the current end of ``topic``, so it sees only what is sent from now on."""
    c = consumer(settings, group)
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    ends = [TopicPartition(topic, p, c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1])
            for p in parts]
    c.commit(offsets=ends, asynchronous=False)
    c.close()


def _metric_quantiles(text: str, name: str) -> tuple[float, float, int]:
    buckets = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    count = int(buckets[-1][1]) if buckets else 0

    def q(p: float) -> float:
        return next((le for le, c in buckets if c >= p * count), float("nan")) if count else float("nan")

    return q(0.5), q(0.99), count


def latency_passthrough(bench: Workbench, rate: float, count: int, sink: str) -> list[float]:
    group = f"{bench.settings.topic_prefix}lat-pt-{uuid.uuid4().hex[:6]}"
    _commit_at_end(bench.settings, group, bench.topics.activity)
    proc = subprocess.Popen([sys.executable, "-m", "bench.passthrough", _settings_json(bench.settings),
                             bench.topics.activity, sink, str(count), str(bench.settings.batch_size), group],
                            env=_env(bench.settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(3)
    observer = Observer(bench.settings, sink, count, header_stamp).start()
    sent_at = paced_copy(bench.settings, bench.topics.activity, bench.topics.activity, rate, count)
    observer.join(120)
    proc.wait(120)
    return latencies_ms(observer.seen, sent_at)


def latency_gate(bench: Workbench, rate: float, count: int, probed: list[float], probes: int = 20
                 ) -> tuple[list[float], tuple[float, float, int]]:
    settings = bench.settings
    group = f"{settings.topic_prefix}lat-gate-{uuid.uuid4().hex[:6]}"
    _commit_at_end(settings, group, settings.topic("activity.events"))
    port = 9400 + random.randint(0, 500)
    proc = subprocess.Popen([sys.executable, "-m", "consentgate.cli.main", "gate", "--worker-id", "latency",
                             "--metrics-port", str(port)],
                            env=_env(settings, CONSENTGATE_GROUP_ID=group, CONSENTGATE_TRANSACTIONAL_ID_PREFIX=group),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    stop, revoker_ready = threading.Event(), threading.Event()
    churn = threading.Thread(target=_revoke_while, args=(bench, stop, revoker_ready), daemon=True)
    churn.start()  # now: taking its partitions means reading them first
    for _ in range(600):  # metrics are served once the consent view is recovered
        try:
            urllib.request.urlopen(url, timeout=1).read()
            break
        except OSError:
            time.sleep(0.5)
    time.sleep(3)  # joined the group
    registry = registry_client(settings)
    decode = Codecs(registry)["Decision"]

    def coords(msg: Any) -> tuple[int, int]:
        d = decode.decode(msg.value(), msg.topic())
        return (d["input"]["partition"], d["input"]["offset"])

    assert revoker_ready.wait(600), "the revoker could not take the consent partitions"
    # The same warm-up as the external contenders get (bench.external).
    warm_up(settings, bench.topics.activity, bench.topics.decisions, rate, max(100, int(rate * 5)), coords)
    observer = Observer(settings, bench.topics.decisions, count, coords).start()
    sent_at = paced_copy(settings, bench.topics.activity, bench.topics.activity, rate, count)
    observer.join(120)
    stop.set()
    churn.join(30)
    revocations = _metric_quantiles(urllib.request.urlopen(url, timeout=5).read().decode(),
                                    "consentgate_revocation_enforcement_seconds")
    try:
        probed[:] = revocation_latency(bench, bench.topics.decisions, probes,
                                       parse=lambda msg: decode.decode(msg.value(), msg.topic()))
    except Exception as exc:  # noqa: BLE001 - reported as a missing figure, the rest of the run stands
        print(f"  !! probed revocation latency failed: {exc}")
    proc.terminate()
    proc.wait(60)
    registry.close()
    return latencies_ms(observer.seen, sent_at), revocations


def _revoke_while(bench: Workbench, stop: threading.Event, ready: threading.Event) -> None:
    rng = random.Random(1)
    with ConsentWriter(bench.settings, bench.catalog) as writer:
        writer.warm()  # read every partition once, before the measured window
        ready.set()
        while not stop.wait(0.3):
            user = user_id(rng.randrange(1000))
            try:
                writer.apply([ConsentRequest("revoke", user, source="bench")])
            except Exception:  # noqa: BLE001 - a user without consent: pick another next time
                continue


def recovery(users: int) -> list[Row]:
    bench = workbench(partitions=6)
    load_states(bench.settings, bench.topics.consent_state, users)
    rows = []
    for store in ("compact", "memory", "rocksdb"):
        conf = json.loads(_settings_json(bench.settings)) | {"consent_store": store}
        out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(conf), user_id(users - 1)],
                             capture_output=True, text=True, timeout=3600, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows += [{"contender": "consentgate", "figure": f"view recovery {users:,} users ({store})",
                  "value": round(r["seconds"], 1), "unit": "s"},
                 {"contender": "consentgate", "figure": f"view RSS after recovery {users:,} users ({store})",
                  "value": round(r["after_mib"]), "unit": "MiB"},
                 {"contender": "consentgate", "figure": f"view peak RSS {users:,} users ({store})",
                  "value": round(r["peak_mib"]), "unit": "MiB"}]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    events, users, views = (200_000, 100_000, [1_000_000]) if args.quick else (1_000_000, 1_000_000,
                                                                               [1_000_000, 10_000_000])
    started = time.monotonic()
    bench = workbench(partitions=6, batch_size=2000)
    timed(f"consent for {users:,} users")
    load_consent(bench, users)
    timed(f"{events:,} activity events")
    size = load_activity(bench, users, events)
    rows: list[Row] = []

    sink = bench.settings.topic("passthrough.out")
    m = measure(bench, events, 2000)
    raw_rate, gate_rate = events / m.raw_seconds, events / m.gate_seconds
    rows += [{"contender": "passthrough", "figure": "throughput", "value": round(raw_rate), "unit": "msgs/s",
              "ratio_to_passthrough": 1.0},
             {"contender": "consentgate", "figure": "throughput", "value": round(gate_rate), "unit": "msgs/s",
              "ratio_to_passthrough": round(gate_rate / raw_rate, 3)}]

    # Before the latency phases, which re-publish records: the workers then read only the loaded events.
    timed("scaling: 1 and 2 gate workers")
    one = run_workers(bench.settings, 1)
    two = run_workers(bench.settings, 2)
    rows += [{"contender": "consentgate", "figure": f"throughput, {n} worker(s)", "value": round(r / s),
              "unit": "msgs/s", "ratio_to_1_worker": round((r / s) / (one[0] / one[1]), 2)}
             for n, (r, s) in ((1, one), (2, two))]

    count = 30_000 if args.quick else 100_000
    tuning: dict[str, str] = {}
    for name, label in (("ks", "kafka-streams"), ("faust", "faust-streaming")):
        timed(f"{label}: throughput, then latency at half of its maximum")
        try:
            ext = run_external(bench, name, count, limit=(10_000 if name == "faust" else None) if args.quick
                               else (100_000 if name == "faust" else None), revocations=10 if args.quick else 20)
        except Exception as exc:  # noqa: BLE001 - a contender that fails is reported, not hidden
            rows.append({"contender": label, "figure": "throughput", "value": 0, "unit": "msgs/s",
                         "error": str(exc)[:300]})
            continue
        tuning[label] = ext.settings
        rows += [{"contender": label, "figure": "throughput", "value": round(ext.rate), "unit": "msgs/s",
                  "ratio_to_passthrough": round(ext.rate / raw_rate, 3)},
                 {"contender": label, "figure": f"e2e latency p50 at {ext.rate / 2:,.0f} msgs/s",
                  "value": round(percentile(ext.latencies, 0.5), 1), "unit": "ms", "samples": len(ext.latencies)},
                 {"contender": label, "figure": f"e2e latency p99 at {ext.rate / 2:,.0f} msgs/s",
                  "value": round(percentile(ext.latencies, 0.99), 1), "unit": "ms", "samples": len(ext.latencies)},
                 {"contender": label, "figure": "revocation-to-enforcement p50 (probed)",
                  "value": round(percentile(ext.revocations, 0.5) / 1000, 3), "unit": "s",
                  "samples": len(ext.revocations)},
                 {"contender": label, "figure": "revocation-to-enforcement p99 (probed)",
                  "value": round(percentile(ext.revocations, 0.99) / 1000, 3), "unit": "s",
                  "samples": len(ext.revocations)}]

    timed("latency at half of each contender's own maximum")
    pt = latency_passthrough(bench, raw_rate / 2, min(count, int(raw_rate / 2 * 20)), sink)
    timed("consentgate: latency, then probed revocations")
    probed: list[float] = []
    gl, (rev50, rev99, revs) = latency_gate(bench, gate_rate / 2, min(count, int(gate_rate / 2 * 20)), probed,
                                            10 if args.quick else 20)
    for name, lat, rate in (("passthrough", pt, raw_rate / 2), ("consentgate", gl, gate_rate / 2)):
        rows += [{"contender": name, "figure": f"e2e latency p50 at {rate:,.0f} msgs/s", "value":
                  round(percentile(lat, 0.5), 1), "unit": "ms", "samples": len(lat)},
                 {"contender": name, "figure": f"e2e latency p99 at {rate:,.0f} msgs/s", "value":
                  round(percentile(lat, 0.99), 1), "unit": "ms", "samples": len(lat)}]
    rows += [{"contender": "consentgate", "figure": "revocation-to-enforcement p50 (bucket bound)",
              "value": rev50, "unit": "s", "samples": revs},
             {"contender": "consentgate", "figure": "revocation-to-enforcement p99 (bucket bound)",
              "value": rev99, "unit": "s", "samples": revs},
             {"contender": "consentgate", "figure": "revocation-to-enforcement p50 (probed)",
              "value": round(percentile(probed, 0.5) / 1000, 3), "unit": "s", "samples": len(probed)},
             {"contender": "consentgate", "figure": "revocation-to-enforcement p99 (probed)",
              "value": round(percentile(probed, 0.99) / 1000, 3), "unit": "s", "samples": len(probed)}]

    for view_users in views:
        timed(f"consent view recovery, {view_users:,} users")
        rows += recovery(view_users)

    timed("done")
    conditions = {"cores": cores(), "record_bytes": round(size / events), "partitions": 6, "records": events,
                  "consent_users": users, "batch": 2000, "mode": "quick" if args.quick else "full",
                  "minutes": round((time.monotonic() - started) / 60, 1), "tuning": tuning}
    (HERE / "results.json").write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2) + "\n")
    (HERE / "RESULTS.md").write_text(render(conditions, rows))
    print(render(conditions, rows))


def render(conditions: dict[str, Any], rows: list[Row]) -> str:
    lines = ["# Benchmark results", "",
             f"{conditions['mode']} run: {conditions['cores']} cores (shared with the broker and registry), "
             f"{conditions['records']:,} records of ~{conditions['record_bytes']} bytes, {conditions['partitions']} "
             f"partitions, consent for {conditions['consent_users']:,} users, batch {conditions['batch']}, "
             f"{conditions['minutes']} minutes.", "",
             "Settings: passthrough and consentgate: librdkafka `fetch.queue.backoff.ms=10`, `linger.ms=5`, "
             "idempotent transactional producers, one transaction per batch of 2000.",
             *[f"{name}: {how}." for name, how in conditions.get("tuning", {}).items()], "",
             "Kafka Streams and faust write decisions and passed records as JSON; consentgate writes Avro "
             "(registry-framed), minimises fields, pseudonymises and also writes contributions. The throughput "
             "figure counts input records decided per second; latency is produce to decision readable "
             "(read_committed).", "",
             "| contender | figure | value | unit | ratio |", "|---|---|---:|---|---:|"]
    for r in rows:
        ratio = r.get("ratio_to_passthrough", r.get("ratio_to_1_worker", ""))
        lines.append(f"| {r['contender']} | {r['figure']} | {r['value']:,} | {r['unit']} | {ratio} |")
    gate = next((r["value"] for r in rows if r["contender"] == "consentgate" and r["figure"] == "throughput"), 0)
    peers = [(r["contender"], r["value"]) for r in rows if r["figure"] == "throughput" and r["contender"]
             not in ("consentgate",) and r["value"]]
    if gate:
        lines += ["", "consentgate's throughput against each: " + ", ".join(
            f"{gate / v:.2f}x {name}" for name, v in peers) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
