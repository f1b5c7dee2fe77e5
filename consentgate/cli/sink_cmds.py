"""``consentgate sink iceberg|expire|erasures`` and ``consentgate regate``."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime

from consentgate.cli.options import add_connection, catalog_of, flag, settings_from, stop_on_signals


def _add_table(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--purpose", required=True, help="the purpose whose training topic the table mirrors")
    parser.add_argument("--generation", metavar="NAME",
                        help="a regated generation (topic training.<purpose>.NAME) instead of the live topic")
    flag(parser, "iceberg-catalog-url", "SQLAlchemy URL of the Iceberg SQL catalog (default: SQLite in the data dir)")
    flag(parser, "iceberg-warehouse", "where table files go: a path or a URI such as s3://bucket/prefix "
                                      "(default: the data dir)")
    flag(parser, "iceberg-namespace", "catalog namespace of the tables")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sink = sub.add_parser("sink", help="write training topics to Apache Iceberg tables, honouring erasure")
    ssub = sink.add_subparsers(required=True, metavar="ACTION")

    run = ssub.add_parser("iceberg", help="write training.<purpose> to its Iceberg table, exactly once; "
                                          "apply training.retractions as deletes")
    add_connection(run)
    _add_table(run)
    flag(run, "sink-max-records", "records per Iceberg commit at most", type=int)
    flag(run, "sink-commit-interval-s", "commit at least this often (seconds) while input flows", type=float)
    run.add_argument("--until-idle", type=float, metavar="SECONDS",
                     help="exit after this long without input (for batch runs and tests)")
    run.set_defaults(run=run_sink, worker=True)

    expire = ssub.add_parser("expire", help="expire old snapshots and delete the files only they held, so "
                                            "deleted rows are physically gone; records when")
    flag(expire, "data-dir", "data directory (holds the default catalog and warehouse)")
    flag(expire, "catalog", "purpose catalog YAML")
    flag(expire, "topic-prefix", "prefix for every topic name")
    _add_table(expire)
    flag(expire, "snapshot-max-age-s", "keep snapshots younger than this many seconds (0: only the current)",
         type=float)
    flag(expire, "orphan-min-age-s", "delete unreferenced files older than this many seconds", type=float)
    expire.set_defaults(run=run_expire)

    erasures = ssub.add_parser("erasures", help="each erasure applied to a table: requested, deleted, purged")
    flag(erasures, "data-dir", "data directory (holds the default catalog)")
    flag(erasures, "catalog", "purpose catalog YAML")
    flag(erasures, "topic-prefix", "prefix for every topic name")
    _add_table(erasures)
    erasures.set_defaults(run=run_erasures)

    regate = sub.add_parser("regate", help="re-decide the activity log under today's consent into a new "
                                           "training generation (training.<purpose>.NAME), with a diff")
    add_connection(regate)
    regate.add_argument("--purpose", required=True, help="the purpose whose training set to rebuild")
    regate.add_argument("--from", dest="start", type=_time, metavar="T",
                        help="first activity appended at or after T (ISO-8601 with offset or epoch ms; "
                             "default: the oldest kept)")
    regate.add_argument("--to", dest="end", type=_time, metavar="T",
                        help="last activity appended before T (default: the end as of the start)")
    regate.add_argument("--into", required=True, metavar="NAME", help="name of the new generation")
    flag(regate, "regate-batch-size", "input records per transaction", type=int)
    regate.set_defaults(run=run_regate)


def _time(text: str) -> datetime:
    from consentgate.connectors.jsonl import JsonLineError, parse_time

    try:
        return parse_time(int(text) if text.isdigit() else text, "time")
    except JsonLineError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_regate(args: argparse.Namespace) -> int:
    from consentgate.regate import Regate

    settings = settings_from(args)
    report = Regate(settings, catalog_of(settings), args.purpose, args.into, args.start, args.end).run()
    print(json.dumps(report.as_json()))
    return 0


def run_sink(args: argparse.Namespace) -> int:
    from consentgate.connectors.iceberg_sink import IcebergSink

    settings = settings_from(args)
    sink = IcebergSink(settings, catalog_of(settings), args.purpose, args.generation)
    stop_on_signals(sink.stop)
    stats = sink.run(until_idle=args.until_idle)
    print(json.dumps({"table": sink.table_name, **asdict(stats)}))
    return 0


def run_expire(args: argparse.Namespace) -> int:
    from consentgate.connectors.iceberg_expire import expire
    from consentgate.connectors.iceberg_sink import training_topic

    settings = settings_from(args)
    report = expire(settings, training_topic(settings, catalog_of(settings), args.purpose, args.generation))
    print(json.dumps({**asdict(report), "at": report.at.isoformat()}))
    return 0


def run_erasures(args: argparse.Namespace) -> int:
    from consentgate.connectors import iceberg_state as state
    from consentgate.connectors.iceberg_sink import training_topic
    from consentgate.connectors.iceberg_table import open_catalog, table_name

    settings = settings_from(args)
    topic = training_topic(settings, catalog_of(settings), args.purpose, args.generation)
    engine = open_catalog(settings).engine  # type: ignore[attr-defined]
    try:
        state.ensure(engine)
        for record in state.erasure_records(engine, table_name(topic)):
            print(json.dumps({"pseudonym": record.pseudonym, "key_id": record.key_id,
                              "requested_at": record.requested_at.isoformat(),
                              "deleted_at": record.deleted_at and record.deleted_at.isoformat(),
                              "purged_at": record.purged_at and record.purged_at.isoformat()}))
    finally:
        engine.dispose()
    return 0
