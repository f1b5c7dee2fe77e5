"""``consentgate metering run|pool|value|close`` and ``consentgate statement``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

from sqlalchemy import Engine

from consentgate.catalog import Catalog
from consentgate.cli.options import add_connection, catalog_of, flag, settings_from, stop_on_signals
from consentgate.connectors.ledger import connect
from consentgate.periods import close_period, declare_pool, parse_amount, period_status
from consentgate.statements import gather, render
from consentgate.streams.metering import MeteringWorker
from consentgate.valuation import POOL_PLANS, parse_period


def _period(text: str) -> str:
    try:
        return parse_period(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_ledger(parser: argparse.ArgumentParser) -> None:
    flag(parser, "ledger-url", "payout ledger (default: SQLite in the data dir)")
    flag(parser, "data-dir", "data directory (holds the default ledger)")
    flag(parser, "catalog", "purpose catalog YAML")


@contextmanager
def _ledger(args: argparse.Namespace) -> Iterator[tuple[Engine, Catalog]]:
    settings = settings_from(args)
    engine = connect(settings.ledger())
    try:
        yield engine, catalog_of(settings)
    finally:
        engine.dispose()


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
    flag(run, "metrics-port", "serve Prometheus metrics on this port (0: any free port)", type=int)
    flag(run, "metrics-host", "address the metrics endpoint binds to")
    run.add_argument("--until-idle", type=float, metavar="SECONDS",
                     help="exit after this long without input (for batch runs and tests)")
    run.set_defaults(run=run_metering, worker=True)

    pool = msub.add_parser("pool", help="declare the revenue (or dividend) pool of a purpose for a period")
    _add_ledger(pool)
    pool.add_argument("--purpose", required=True)
    pool.add_argument("--period", required=True, type=_period, help="YYYY-MM")
    pool.add_argument("--amount", required=True, help="in the catalog currency, e.g. 1250.00")
    pool.add_argument("--plan", default="revenue_share", choices=POOL_PLANS)
    pool.set_defaults(run=run_pool)

    value = msub.add_parser("value", help="value a period's contributions by usefulness (exact KNN-Shapley "
                                          "against each purpose's reference set); re-runnable until close")
    add_connection(value)
    flag(value, "ledger-url", "payout ledger (default: SQLite in the data dir)")
    value.add_argument("--period", required=True, type=_period, help="YYYY-MM")
    value.set_defaults(run=run_value)

    close = msub.add_parser("close", help="close a period: value usefulness, pay every plan and pool, issue "
                                          "statements")
    add_connection(close)
    flag(close, "ledger-url", "payout ledger (default: SQLite in the data dir)")
    close.add_argument("--period", required=True, type=_period, help="YYYY-MM")
    close.set_defaults(run=run_close)

    statement = sub.add_parser("statement", help="what of a user's data was used, for what, and what it earned")
    _add_ledger(statement)
    statement.add_argument("--user", required=True)
    statement.add_argument("--period", type=_period, help="YYYY-MM (default: every period)")
    statement.add_argument("--format", default="text", choices=["text", "json", "html"])
    statement.set_defaults(run=run_statement)


def run_metering(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    worker = MeteringWorker(settings, catalog_of(settings))
    stop_on_signals(worker.stop)
    stats = worker.run(idle_exit_s=args.until_idle)
    print(json.dumps({"records_in": stats.records_in, "credited": stats.credited, "late": stats.late,
                      "dead_letters": dict(stats.dead_letters), "batches": stats.batches,
                      "retries": stats.retries}))
    return 0


def run_pool(args: argparse.Namespace) -> int:
    cents = parse_amount(args.amount)
    with _ledger(args) as (engine, catalog):
        old = declare_pool(engine, catalog, args.purpose, args.period, cents, args.plan)
    print(json.dumps({"period": args.period, "purpose": args.purpose, "plan": args.plan, "amount_cents": cents,
                      "replaced_cents": old}))
    return 0


def _value(args: argparse.Namespace, engine: Engine, catalog: Catalog) -> dict[str, object]:
    # Imported here: numpy and scikit-learn load only for the commands that value.
    from consentgate.connectors.training_texts import TrainingTexts
    from consentgate.usefulness_ledger import value_period

    texts = TrainingTexts(settings_from(args), catalog)
    report = value_period(engine, catalog, args.period, texts)
    return {"period": report.period, "purposes": {p: asdict(r) for p, r in report.purposes.items()},
            "training_records_read": texts.read, "unreadable_training_records": texts.unreadable}


def run_value(args: argparse.Namespace) -> int:
    with _ledger(args) as (engine, catalog):
        print(json.dumps(_value(args, engine, catalog)))
    return 0


def run_close(args: argparse.Namespace) -> int:
    with _ledger(args) as (engine, catalog):
        valued = None
        if any(p.usefulness for p in catalog.purposes.values()) and period_status(engine, args.period) != "closed":
            valued = _value(args, engine, catalog)
        report = close_period(engine, catalog, args.period)
    print(json.dumps({**asdict(report), "usefulness": valued}))
    return 0



def run_statement(args: argparse.Namespace) -> int:
    with _ledger(args) as (engine, catalog):
        statement = gather(engine, catalog, args.user, args.period)
    print(render(statement, args.format), end="")
    return 0
