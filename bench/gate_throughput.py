"""The gate's sustained throughput as a ratio of a raw transactional passthrough on the same run.

    python -m bench.gate_throughput [--events N] [--users N] [--batch N]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from consentgate.streams.gate import Gate, GateStats

from bench.common import Workbench, cores, load_activity, load_consent, timed, workbench
from bench.passthrough import passthrough


@dataclass
class Throughput:
    raw_seconds: float
    gate_seconds: float
    stats: GateStats
    view_users: float
    recovery: float


def measure(bench: Workbench, events: int, batch: int) -> Throughput:
    """The passthrough, then the gate, over the same ``events`` records of the bench's activity topic."""
    timed("raw transactional passthrough")
    raw_s = passthrough(bench.settings, bench.topics.activity, bench.settings.topic("passthrough.out"), events,
                        batch)
    timed("consentgate gate")
    gate = Gate(bench.settings, bench.catalog)
    started = time.monotonic()
    stats = gate.run(until_idle=3.0)
    assert stats.records_in == events, stats
    assert stats.first_fetch is not None and stats.last_commit is not None
    return Throughput(raw_s, stats.last_commit - stats.first_fetch, stats,
                      gate.metrics.value("consentgate_consent_view_users"), stats.first_fetch - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()

    bench = workbench(batch_size=args.batch)
    t = timed(f"granting consent to a population of {args.users} users")
    grants = load_consent(bench, args.users)
    print(f"     {grants} grants in {time.monotonic() - t:.1f}s")
    t = timed(f"publishing {args.events} activity events")
    size = load_activity(bench, args.users, args.events)
    print(f"     {size / args.events:.0f} bytes/record avg, {time.monotonic() - t:.1f}s")

    m = measure(bench, args.events, args.batch)
    raw_s, gate_s, stats = m.raw_seconds, m.gate_seconds, m.stats
    raw_rate, gate_rate = args.events / raw_s, args.events / gate_s
    print(f"\nconditions: {cores()} cores, {args.events} records of ~{size / args.events:.0f} bytes, "
          f"{bench.settings.partitions} partitions, batch {args.batch}, one process each, same broker\n")
    print("| contender | seconds | msgs/s | ratio to passthrough |")
    print("|---|---:|---:|---:|")
    print(f"| raw transactional passthrough (no decode, no policy) | {raw_s:.2f} | {raw_rate:,.0f} | 1.00 |")
    print(f"| consentgate gate | {gate_s:.2f} | {gate_rate:,.0f} | {gate_rate / raw_rate:.2f} |")
    passed = sum(stats.passed.values())
    print(f"\ngate: {stats.records_passed} records passed for >=1 purpose, {passed} training records, "
          f"{stats.dead_letters} DLQ; consent view of {m.view_users:.0f} users recovered in {m.recovery:.1f}s")


if __name__ == "__main__":
    main()
