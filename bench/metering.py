"""The metering worker's throughput as a ratio of the gate's, and the ledger's size per 1M contributions.

    python -m bench.metering [--events N] [--users N] [--ledger-url URL]

The gate runs over the activity first (its rate is the baseline, same process, same run);
the metering worker then credits every contribution the gate produced. With no
--ledger-url (or CONSENTGATE_LEDGER_URL) the ledger is a fresh SQLite file.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

from consentgate.connectors.ledger import connect, contributions, valuations
from consentgate.streams.metering import MeteringWorker
from sqlalchemy import Engine, func, select, text

from bench.common import Workbench, cores, load_activity, load_consent, timed, workbench
from bench.gate_throughput import measure


@dataclass
class MeteringRun:
    gate_rate: float
    metering_rate: float
    contributions: int
    ledger_bytes: int
    dialect: str

    @property
    def ratio(self) -> float:
        return self.metering_rate / self.gate_rate

    @property
    def mib_per_million(self) -> float:
        return self.ledger_bytes / self.contributions * 1_000_000 / 2**20


def ledger_bytes(engine: Engine, sqlite_file: Path | None) -> int:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return int(conn.execute(text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r' "
                "AND c.relname IN ('contributions', 'valuations')")).scalar_one())
    assert sqlite_file is not None
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return sum(f.stat().st_size for f in sqlite_file.parent.glob(sqlite_file.name + "*"))


def run(bench: Workbench, events: int, ledger_url: str | None) -> MeteringRun:
    gate = measure(bench, events, bench.settings.batch_size)
    gate_rate = events / gate.gate_seconds
    sqlite_file = None
    if ledger_url is None:
        sqlite_file = Path(tempfile.mkdtemp()) / "ledger.db"
        ledger_url = f"sqlite:///{sqlite_file}"
    settings = bench.settings.model_copy(update={"ledger_url": ledger_url,
                                                 "metering_group_id": bench.settings.topic_prefix + "metering"})
    engine = connect(ledger_url)
    timed("metering worker")
    worker = MeteringWorker(settings, bench.catalog, engine)
    worker.run(idle_exit_s=3.0)
    expected = sum(gate.stats.passed.values())
    assert worker.stats.credited == expected, (worker.stats, expected)
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(contributions)).scalar_one()
        assert stored == expected == conn.execute(select(func.count()).select_from(valuations)).scalar_one()
    first, last = worker.stats.first_batch_at, worker.stats.last_batch_at
    assert first is not None and last is not None, "the metering worker stored nothing"
    seconds = max(last - first, 1e-3)
    size = ledger_bytes(engine, sqlite_file)
    engine.dispose()
    return MeteringRun(gate_rate, expected / seconds, expected, size, engine.dialect.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--ledger-url", default=None)
    args = parser.parse_args()
    bench = workbench()
    load_consent(bench, args.users)
    load_activity(bench, args.users, args.events)
    r = run(bench, args.events, args.ledger_url or bench.settings.ledger_url)
    print(f"\nconditions: {cores()} cores, {args.events} activity records, {r.contributions} contributions, "
          f"ledger on {r.dialect}")
    print("| stage | records/s | ratio to the gate |")
    print("|---|---:|---:|")
    print(f"| gate (activity records in) | {r.gate_rate:,.0f} | 1.00 |")
    print(f"| metering worker (contributions credited) | {r.metering_rate:,.0f} | {r.ratio:.2f} |")
    per_activity = r.metering_rate * args.events / r.contributions
    print(f"| metering worker, in activity records covered | {per_activity:,.0f} | "
          f"{per_activity / r.gate_rate:.2f} |")
    print(f"\nledger size: {r.ledger_bytes / 2**20:.1f} MiB for {r.contributions:,} contributions = "
          f"{r.mib_per_million:.0f} MiB per million (contributions + valuations, with indexes)")


if __name__ == "__main__":
    main()
