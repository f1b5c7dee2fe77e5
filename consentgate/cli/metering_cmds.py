"""``consentgate metering run|pool|close`` and ``consentgate statement``."""

from __future__ import annotations

import argparse
import json
import signal
from dataclasses import asdict
from types import FrameType

from consentgate.cli.options import add_connection, catalog_of, flag, settings_from
from consentgate.connectors.ledger import connect
from consentgate.periods import close_period, declare_pool, parse_amount
from consentgate.statements import gather, render
from consentgate.streams.metering import MeteringWorker
from consentgate.valuation import POOL_PLANS, parse_period


def _period(text: str) -> str:
    try:
        return parse_period(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    metering = sub.add_parser("metering", help="value contributions, declare pools, close periods")
    msub = metering.add_subparsers(required=True, metavar="ACTION")

    run = msub.add_parser("run", help="credit metering.contributions to the ledger, exactly once")
    add_connection(run)
    flag(run, "ledger-url", "payout ledger (default: SQLite in the data dir)")
    flag(run, "metering-group-id", "consumer group of the metering workers")
    flag(run, "worker-id", "stable id of this worker (named in its dead letters)")
    flag(run, "batch-size", "records per ledger transaction", type=int)
    flag(run, "max-units", "a contribution claiming more units goes to the metering DLQ", type=int)
    run.add_argument("--until-idle", type=float, metavar="SECONDS",
                     help="exit after this long without input (for batch runs and tests)")
    run.set_defaults(run=run_metering)

    pool = msub.add_parser("pool", help="declare the revenue (or dividend) pool of a purpose for a period")
    flag(pool, "ledger-url", "payout ledger (default: SQLite in the data dir)")
    flag(pool, "data-dir", "data directory (holds the default ledger)")
    flag(pool, "catalog", "purpose catalog YAML")
    pool.add_argument("--purpose", required=True)
    pool.add_argument("--period", required=True, type=_period, help="YYYY-MM")
    pool.add_argument("--amount", required=True, help="in the catalog currency, e.g. 1250.00")
    pool.add_argument("--plan", default="revenue_share", choices=POOL_PLANS)
    pool.set_defaults(run=run_pool)

    close = msub.add_parser("close", help="close a period: pay every plan and pool, issue statements")
    flag(close, "ledger-url", "payout ledger (default: SQLite in the data dir)")
    flag(close, "data-dir", "data directory (holds the default ledger)")
    flag(close, "catalog", "purpose catalog YAML")
    close.add_argument("--period", required=True, type=_period, help="YYYY-MM")
    close.set_defaults(run=run_close)

    statement = sub.add_parser("statement", help="what of a user's data was used, for what, and what it earned")
    flag(statement, "ledger-url", "payout ledger (default: SQLite in the data dir)")
    flag(statement, "data-dir", "data directory (holds the default ledger)")
    flag(statement, "catalog", "purpose catalog YAML")
    statement.add_argument("--user", required=True)
    statement.add_argument("--period", type=_period, help="YYYY-MM (default: every period)")
    statement.add_argument("--format", default="text", choices=["text", "json", "html"])
    statement.set_defaults(run=run_statement)


def run_metering(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    worker = MeteringWorker(settings, catalog_of(settings))

    def stop(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stats = worker.run(idle_exit_s=args.until_idle)
    print(json.dumps({"records_in": stats.records_in, "credited": stats.credited, "late": stats.late,
                      "dead_letters": dict(stats.dead_letters), "batches": stats.batches,
                      "retries": stats.retries}))
    return 0


def run_pool(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    cents = parse_amount(args.amount)
    engine = connect(settings.ledger())
    try:
        old = declare_pool(engine, catalog_of(settings), args.purpose, args.period, cents, args.plan)
    finally:
        engine.dispose()
    print(json.dumps({"period": args.period, "purpose": args.purpose, "plan": args.plan, "amount_cents": cents,
                      "replaced_cents": old}))
    return 0


def run_close(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    engine = connect(settings.ledger())
    try:
        report = close_period(engine, catalog_of(settings), args.period)
    finally:
        engine.dispose()
    print(json.dumps(asdict(report)))
    return 0


def run_statement(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    engine = connect(settings.ledger())
    try:
        statement = gather(engine, catalog_of(settings), args.user, args.period)
    finally:
        engine.dispose()
    print(render(statement, args.format), end="")
    return 0
