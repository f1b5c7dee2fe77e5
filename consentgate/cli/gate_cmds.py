"""``consentgate gate``: run one gate worker."""

from __future__ import annotations

import argparse
import json

from consentgate.cli.options import add_connection, catalog_of, flag, settings_from, stop_on_signals
from consentgate.streams.gate import Gate


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("gate", help="run one gate worker (SIGTERM finishes the open batch and exits 0)")
    add_connection(p)
    flag(p, "worker-id", "stable id of this worker (its transactional id derives from it)")
    flag(p, "group-id", "consumer group of the gate workers")
    flag(p, "batch-size", "records per transaction", type=int)
    flag(p, "metrics-port", "serve Prometheus metrics on this port (0: any free port)", type=int)
    flag(p, "metrics-host", "address the metrics endpoint binds to")
    flag(p, "consent-store", "where the consent view lives: packed in memory (compact, the default), raw bytes "
                             "in memory, or on disk (rocksdb)", choices=["compact", "memory", "rocksdb"])
    flag(p, "gate-kernel", "the batch kernel: compiled (Rust), reference (Python) or auto (compiled when built)",
         choices=["auto", "compiled", "reference"])
    p.add_argument("--until-idle", type=float, metavar="SECONDS",
                   help="exit after this long without input (for batch runs and tests)")
    p.set_defaults(run=run_gate, worker=True)


def run_gate(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    gate = Gate(settings, catalog_of(settings))
    stop_on_signals(gate.stop)
    stats = gate.run(until_idle=args.until_idle)
    print(json.dumps({"records_in": stats.records_in, "decisions": stats.decisions,
                      "dead_letters": stats.dead_letters, "passed": dict(stats.passed),
                      "dropped": dict(stats.dropped), "first_fetch_epoch": stats.first_fetch_epoch,
                      "last_commit_epoch": stats.last_commit_epoch}))
    return 0
