"""Consent view recovery time and memory at 1M and 10M people: the compact store against the
raw-bytes memory store and rocksdb, measured in the same run on the same topic.

    python -m bench.consent_view [--users 1000000 10000000] [--stores compact memory rocksdb]

The population is realistic: five grants a person over the catalog's (category, purpose) pairs, each
given at its own time, some expiring, some on older terms, a UUID receipt each; 70% on the paid tier.
Each recovery runs in a fresh subprocess, so its peak RSS is its own; the baseline is the
same subprocess's RSS just before recovery (interpreter, clients, imports). The issue's targets
(10M people: at most 2 GB peak RSS, recovery within 60 s) are checked for the compact store.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from consentgate.connectors.kafka import admin, produce, producer
from consentgate.schemas.codec import Codecs, registry_client

from bench.common import cores, timed, workbench
from consentgate.catalog import load_catalog
from consentgate.synthetic import user_id

GRANTS = 5
TARGET_MIB, TARGET_S = 2e9 / 2**20, 60.0  # the 2 GB peak RSS (1907 MiB) and 60 s at 10M people

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
store = getattr(view, "_store")
print(json.dumps({"records": n, "users": len(view), "seconds": elapsed, "baseline_mib": before,
                  "after_mib": after, "peak_mib": peak, "probe_ok": probe is not None, "corrupt": view.corrupt,
                  "store_bytes": store.memory() if hasattr(store, "memory") else None}))
"""


def _uuids(rng: random.Random, n: int) -> list[str]:
    """``n`` random version-4 UUID strings."""
    h = rng.randbytes(16 * n).hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{'89ab'[int(h[i + 16], 16) & 3]}{h[i + 17:i + 20]}-"
            f"{h[i + 20:i + 32]}" for i in range(0, 32 * n, 32)]


def load_states(bench_settings: object, topic: str, users: int, seed: int = 5) -> int:
    """Write ``users`` realistic ConsentStates (see the module doc); returns the bytes written."""
    settings = bench_settings
    rng = random.Random(seed)
    catalog = load_catalog(settings.catalog)  # type: ignore[attr-defined]
    pairs = [(c, p.name, p.terms_version) for p in catalog.purposes.values() for c in p.categories]
    now_ms = int(time.time() * 1000)
    year_ms = 365 * 86_400_000
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)

    def at(ms: int) -> datetime:
        return epoch + timedelta(milliseconds=ms)

    with registry_client(settings) as registry:  # type: ignore[attr-defined]
        encode = Codecs(registry)["ConsentState"].writer_for(topic)
        out = producer(settings, **{"linger.ms": 50, "batch.size": 1_000_000,  # type: ignore[arg-type]
                                    "queue.buffering.max.messages": 2_000_000, "compression.type": "lz4"})
        size = 0
        for i in range(users):
            uid = user_id(i)
            receipts = _uuids(rng, GRANTS)
            grants: list[dict[str, Any]] = []
            for n, (category, purpose, terms) in enumerate(rng.sample(pairs, GRANTS)):
                granted = now_ms - rng.randrange(2 * year_ms)
                roll = rng.random()
                grants.append({"category": category, "purpose": purpose, "granted_at": at(granted),
                               "expires_at": at(granted + year_ms) if roll < 0.1 else None,
                               "terms_version": terms - 1 if terms > 1 and roll > 0.9 else terms,
                               "receipt_id": receipts[n]})
            paid = rng.random() < 0.7
            value = encode({"user_id": uid, "version": GRANTS + rng.randrange(4),
                            "updated_at": max(g["granted_at"] for g in grants), "tier": "data_sharing" if paid else
                            "free", "plan": rng.choice(("per_unit", "revenue_share", "credits", "dividend"))
                            if paid else None, "grants": grants})
            size += len(value)
            produce(out, topic, value, uid.encode())
        assert out.flush(300) == 0
    return size


def recover(bench: Any, store: str, users: int) -> dict[str, Any]:
    """Recover the view with ``store`` in a fresh subprocess; its figures."""
    conf = {k: str(v) if k in ("data_dir", "cache_dir") else v
            for k, v in bench.settings.model_dump(mode="json").items() if v is not None}
    conf["consent_store"] = store
    conf["pseudonym_secret"] = bench.settings.require_secret().decode()
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(conf), user_id(users - 1)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    r: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["users"] == users and r["probe_ok"] and r["corrupt"] == 0, r
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--stores", nargs="*", default=["compact", "memory", "rocksdb"],
                        choices=["compact", "memory", "rocksdb"])
    parser.add_argument("--prefixes", nargs="+", help="reuse topics a previous run filled (one per --users)")
    parser.add_argument("--keep", action="store_true", help="keep the topics (default: deleted when done)")
    args = parser.parse_args()
    rows: list[tuple[int, str, dict[str, Any]]] = []
    per_state = 0.0
    for index, users in enumerate(args.users):
        if args.prefixes:
            bench = workbench(partitions=6, topic_prefix=args.prefixes[index])
        else:
            bench = workbench(partitions=6)
            t = timed(f"writing {users:,} consent states")
            per_state = load_states(bench.settings, bench.topics.consent_state, users) / users
            print(f"     {per_state:.0f} bytes/state, {time.monotonic() - t:.0f}s")
        try:
            for store in args.stores:
                timed(f"recovering the view ({store})")
                rows.append((users, store, recover(bench, store, users)))
        finally:
            if args.keep:
                print(f"     kept: --prefixes {bench.settings.topic_prefix}")
            elif not args.prefixes:
                client = admin(bench.settings)
                mine = [t for t in client.list_topics(timeout=30).topics if t.startswith(bench.settings.topic_prefix)]
                for future in client.delete_topics(mine, operation_timeout=60).values():
                    future.result()
    print(f"\nconditions: {cores()} cores ({os.getloadavg()[0]:.1f} load), 6 partitions, states of {GRANTS} grants "
          f"with UUID receipts ({f'~{per_state:.0f} bytes framed' if per_state else 'written by an earlier run'}), "
          "one recovering process\n")
    print("| people | store | recovery s | people/s | RSS before MiB | RSS after MiB | peak RSS MiB | "
          "view RSS per person (bytes) | table bytes per person | recovery vs memory | peak RSS vs memory | recovery vs rocksdb | "
          "peak RSS vs rocksdb |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for users, store, r in rows:
        grown = (r["after_mib"] - r["baseline_mib"]) * 1024 * 1024 / users
        table = "-" if r.get("store_bytes") is None else f"{r['store_bytes'] / users:.0f}"
        base = {s: x for u, s, x in rows if u == users}

        def ratio(other: str, field: str, r: dict[str, Any] = r, base: dict[str, Any] = base) -> str:
            return f"{r[field] / base[other][field]:.2f}x" if other in base else "-"

        print(f"| {users:,} | {store} | {r['seconds']:.1f} | {users / r['seconds']:,.0f} | {r['baseline_mib']:.0f} | "
              f"{r['after_mib']:.0f} | {r['peak_mib']:.0f} | {grown:.0f} | {table} | {ratio('memory', 'seconds')} | "
              f"{ratio('memory', 'peak_mib')} | {ratio('rocksdb', 'seconds')} | {ratio('rocksdb', 'peak_mib')} |")
    for users, store, r in rows:
        if store == "compact" and users >= 10_000_000:
            scaled = users / 10_000_000
            print(f"\ncompact at {users:,} people: peak RSS {r['peak_mib']:.0f} MiB (target {TARGET_MIB * scaled:.0f}: "
                  f"{'met' if r['peak_mib'] <= TARGET_MIB * scaled else 'MISSED'}), recovery {r['seconds']:.1f}s "
                  f"(target {TARGET_S * scaled:.0f}: {'met' if r['seconds'] <= TARGET_S * scaled else 'MISSED'})")


if __name__ == "__main__":
    main()
