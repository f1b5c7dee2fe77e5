"""Gate throughput with 1 and 2 worker processes in one consumer group, same input, same run.

    python -m bench.gate_scaling [--events N] [--users N]

Each run is a fresh consumer group over the same input topic; throughput is records over the
span from the first fetch of any worker to the last commit of any worker.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid

from bench.common import cores, load_activity, load_consent, timed, workbench
from consentgate.settings import Settings


def run_workers(settings: Settings, count: int) -> tuple[int, float]:
    tag = uuid.uuid4().hex[:6]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    for name in ("bootstrap_servers", "schema_registry_url", "topic_prefix", "batch_size", "data_dir"):
        env[f"CONSENTGATE_{name.upper()}"] = str(getattr(settings, name))
    env.update({"CONSENTGATE_PSEUDONYM_SECRET": settings.require_secret().decode(), "CONSENTGATE_GROUP_ID": f"scale-{tag}",
                "CONSENTGATE_TRANSACTIONAL_ID_PREFIX": f"scale-{tag}"})
    procs = [subprocess.Popen([sys.executable, "-m", "consentgate.cli.main", "gate", "--worker-id", f"w{i}",
                               "--until-idle", "5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True) for i in range(count)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        assert proc.returncode == 0, out
        results.append(json.loads(out.strip().splitlines()[-1]))
    records = sum(r["records_in"] for r in results)
    span = max(r["last_commit_epoch"] for r in results if r["last_commit_epoch"]) - min(
        r["first_fetch_epoch"] for r in results if r["first_fetch_epoch"])
    return records, span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    args = parser.parse_args()
    bench = workbench(partitions=6)
    timed(f"granting consent to {args.users} users")
    load_consent(bench, args.users)
    timed(f"publishing {args.events} events")
    load_activity(bench, args.users, args.events)
    rows = []
    for count in (1, 2):
        timed(f"{count} worker(s)")
        records, span = run_workers(bench.settings, count)
        assert records == args.events, records
        rows.append((count, span, records / span))
    print(f"\nconditions: {cores()} cores shared with the broker and registry, {args.events} records, 6 partitions,"
          f" batch {bench.settings.batch_size}\n")
    print("| workers | seconds | msgs/s | ratio to 1 worker |")
    print("|---:|---:|---:|---:|")
    for count, span, rate in rows:
        print(f"| {count} | {span:.1f} | {rate:,.0f} | {rate / rows[0][2]:.2f} |")


if __name__ == "__main__":
    main()
