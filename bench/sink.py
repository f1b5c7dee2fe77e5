"""The Iceberg sink and regate, each as a ratio of a baseline measured in the same run.

    python -m bench.sink [--events N] [--users N] [--erase N]

- sink: training.<recommendation> into its Iceberg table, against reading and decoding the same
  committed records without writing them anywhere;
- regate: re-deciding the whole activity log into a new generation, against the gate deciding it;
- erasure: the deletes for N erased users, then `sink expire`, as seconds (and per erased user).
"""

from __future__ import annotations

import argparse
import time
import uuid

from consentgate.connectors.iceberg_expire import expire
from consentgate.connectors.iceberg_sink import IcebergSink
from consentgate.connectors.kafka import consumer
from consentgate.connectors.reader import read_committed
from consentgate.regate import Regate
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from consentgate.streams.gate import Gate
from consentgate.synthetic import user_id

from bench.common import Workbench, cores, load_activity, load_consent, timed, workbench

REC = "train_ai_system.recommendation"


def read_and_decode(bench: Workbench, topic: str) -> tuple[int, float]:
    """Read every committed record of ``topic`` and decode it: the sink's work minus the table."""
    started = time.monotonic()
    reader = consumer(bench.settings, f"bench-read-{uuid.uuid4()}")
    n = 0
    with registry_client(bench.settings) as registry:
        codec = Codecs(registry)["TrainingRecord"]
        for msg in read_committed(reader, [topic]):
            codec.decode(msg.value(), topic)  # type: ignore[arg-type]
            n += 1
    reader.close()
    return n, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--erase", type=int, default=50)
    args = parser.parse_args()

    bench = workbench(snapshot_max_age_s=0.0, orphan_min_age_s=0.0)
    bench = Workbench(bench.settings.model_copy(update={"data_dir": bench.settings.data_dir / "bench-sink" /
                                                        bench.settings.topic_prefix.strip(".")}),
                      bench.catalog, bench.topics)
    timed(f"consent for {args.users} users, {args.events} activity events")
    load_consent(bench, args.users)
    load_activity(bench, args.users, args.events)

    timed("gate (baseline of regate)")
    gate = Gate(bench.settings, bench.catalog)
    stats = gate.run(until_idle=3.0)
    assert stats.first_fetch is not None and stats.last_commit is not None
    gate_s = stats.last_commit - stats.first_fetch

    topic = bench.topics.training[REC]
    timed("read + decode the training topic (baseline of the sink)")
    records, read_s = read_and_decode(bench, topic)
    timed("sink iceberg")
    started = time.monotonic()
    sink = IcebergSink(bench.settings, bench.catalog, REC)
    sink_stats = sink.run(until_idle=0.01)
    sink_s = time.monotonic() - started
    assert sink_stats.rows_written == records, (sink_stats, records)

    timed(f"erase {args.erase} users, apply the retractions, expire")
    with ConsentWriter(bench.settings, bench.catalog) as writer:
        writer.apply([ConsentRequest("erase", user_id(i)) for i in range(args.erase)])
    started = time.monotonic()
    deleted = IcebergSink(bench.settings, bench.catalog, REC).run(until_idle=0.01)
    delete_s = time.monotonic() - started
    started = time.monotonic()
    expired = expire(bench.settings, topic)
    expire_s = time.monotonic() - started

    timed("regate after the erasures (includes reading both generations for the diff)")
    started = time.monotonic()
    report = Regate(bench.settings, bench.catalog, REC, "bench").run()
    regate_s = time.monotonic() - started

    print(f"\nconditions: {cores()} cores (shared), {args.events} activity events, {args.users} users, "
          f"{bench.settings.partitions} partitions, SQLite catalog, local warehouse, one process\n")
    print("| step | records | seconds | records/s | ratio to baseline |")
    print("|---|---:|---:|---:|---:|")
    print(f"| read + decode {REC} (baseline) | {records:,} | {read_s:.2f} | {records / read_s:,.0f} | 1.00 |")
    print(f"| sink iceberg ({sink_stats.commits} commits) | {records:,} | {sink_s:.2f} | {records / sink_s:,.0f} "
          f"| {read_s / sink_s:.2f} |")
    print(f"| gate, all purposes (baseline) | {stats.records_in:,} | {gate_s:.2f} | {stats.records_in / gate_s:,.0f} "
          f"| 1.00 |")
    print(f"| regate {REC} + diff | {report.decided:,} decided | {regate_s:.2f} | "
          f"{stats.records_in / regate_s:,.0f} | {gate_s / regate_s:.2f} |")
    print(f"\nerasure: {deleted.retractions_applied} retractions applied in {delete_s:.2f}s (one commit); "
          f"sink expire {expire_s:.2f}s: {expired.snapshots_expired} snapshots expired, {expired.files_deleted} "
          f"files deleted, {expired.erasures_purged} erasures purged")
    if report.diff is not None:
        print(f"regate diff: {report.diff.old_in_range} old in range, {report.diff.kept} kept, "
              f"dropped {report.diff.dropped}")


if __name__ == "__main__":
    main()
