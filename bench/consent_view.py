"""Consent view recovery time and memory at 1M and 10M users, memory store vs rocksdb.

    python -m bench.consent_view [--users 1000000 10000000]

Each recovery runs in a fresh subprocess, so its peak RSS is its own; the baseline is the
same subprocess's RSS just before recovery (interpreter, clients, imports).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone

from consentgate.connectors.kafka import produce, producer
from consentgate.schemas.codec import Codecs, registry_client

from bench.common import cores, timed, workbench
from consentgate.synthetic import user_id

_CHILD = """
import json, resource, sys, time
from consentgate.settings import Settings
from consentgate.catalog import load_catalog
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.streams.consent_view import ConsentView
from consentgate.streams.metrics import GateMetrics
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # MiB
settings = Settings(**json.loads(sys.argv[1]))
topics = TopicNames.of(settings, load_catalog())
codec = Codecs(registry_client(settings))["ConsentState"]
before = status("VmRSS")  # before the view's consumer exists (it prefetches as soon as it is assigned)
t = time.monotonic()
view = ConsentView(settings, topics.consent_state, codec, GateMetrics(), "bench-view")
n = view.recover(timeout=120)
elapsed = time.monotonic() - t
after, peak = status("VmRSS"), status("VmHWM")
probe = view.get(sys.argv[2])
print(json.dumps({"records": n, "users": len(view), "seconds": elapsed, "baseline_mib": before,
                  "after_mib": after, "peak_mib": peak, "probe_ok": probe is not None}))
"""


def load_states(bench_settings: object, topic: str, users: int) -> int:
    settings = bench_settings
    now = datetime.now(timezone.utc)
    with registry_client(settings) as registry:  # type: ignore[attr-defined]
        encode = Codecs(registry)["ConsentState"].writer_for(topic)
        out = producer(settings, **{"linger.ms": 50, "batch.size": 1_000_000,  # type: ignore[arg-type]
                                    "queue.buffering.max.messages": 2_000_000, "compression.type": "lz4"})
        size = 0
        for i in range(users):
            uid = user_id(i)
            value = encode({"user_id": uid, "version": 1, "updated_at": now, "tier": "data_sharing",
                            "plan": "per_unit", "grants": [
                                {"category": "post", "purpose": "train_ai_system.recommendation", "granted_at": now,
                                 "expires_at": None, "terms_version": 3, "receipt_id": f"r-{i:012d}"},
                                {"category": "search", "purpose": "train_ai_system.ads_ranking", "granted_at": now,
                                 "expires_at": None, "terms_version": 1, "receipt_id": f"s-{i:012d}"}]})
            size += len(value)
            produce(out, topic, value, uid.encode())
        assert out.flush(300) == 0
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--prefixes", nargs="+", help="reuse topics a previous run filled (one per --users)")
    args = parser.parse_args()
    rows = []
    per_state = 147.0  # bytes per state as written by load_states (measured when topics are filled)
    for index, users in enumerate(args.users):
        if args.prefixes:
            bench = workbench(partitions=6, topic_prefix=args.prefixes[index])
        else:
            bench = workbench(partitions=6)
            t = timed(f"writing {users:,} consent states")
            per_state = load_states(bench.settings, bench.topics.consent_state, users) / users
            print(f"     {per_state:.0f} bytes/state, {time.monotonic() - t:.0f}s")
        for store in ("memory", "rocksdb"):
            timed(f"recovering the view ({store})")
            conf = {k: str(v) if k in ("data_dir", "cache_dir") else v
                    for k, v in bench.settings.model_dump(mode="json").items() if v is not None}
            conf["consent_store"] = store
            conf["pseudonym_secret"] = bench.settings.require_secret().decode()
            proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(conf), user_id(users - 1)],
                                  capture_output=True, text=True, timeout=3600)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            assert r["users"] == users and r["probe_ok"], r
            rows.append((users, store, r))
    print(f"\nconditions: {cores()} cores, 6 partitions, states of 2 grants (~{per_state:.0f} bytes), "
          "one recovering process\n")
    print("| users | store | recovery s | users/s | RSS before MiB | RSS after MiB | peak RSS MiB | "
          "view RSS per user (bytes) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for users, store, r in rows:
        grown = (r["after_mib"] - r["baseline_mib"]) * 1024 * 1024 / users
        print(f"| {users:,} | {store} | {r['seconds']:.1f} | {users / r['seconds']:,.0f} | {r['baseline_mib']:.0f} | "
              f"{r['after_mib']:.0f} | {r['peak_mib']:.0f} | {grown:.0f} |")


if __name__ == "__main__":
    main()
