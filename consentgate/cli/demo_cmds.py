"""``consentgate demo``."""

from __future__ import annotations

import argparse
import time

from consentgate.cli.options import add_connection, catalog_of, settings_from
from consentgate.cluster import embedded
from consentgate.demo import run_demo, summary


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="the whole pipeline on the embedded default, with synthetic users and "
                                    "live figures")
    p.add_argument("--users", type=int, default=10_000, help="synthetic users (default 10000)")
    p.add_argument("--events", type=int, default=100_000, help="activity records to publish (default 100000)")
    add_connection(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if not settings.bootstrap_servers:
        info = embedded.up(settings)
        print(f"embedded cluster: Kafka {info.bootstrap_servers}, registry {info.schema_registry_url}")
        settings = settings_from(args)
    if not args.topic_prefix:
        settings = settings.model_copy(update={"topic_prefix": f"demo{int(time.time())}."})
    settings = settings.model_copy(update={"group_id": f"{settings.topic_prefix}gate",
                                           "transactional_id_prefix": f"{settings.topic_prefix}gate"})
    gate, result = run_demo(settings, catalog_of(settings), args.users, args.events, print)
    for line in summary(gate, result):
        print(line)
    print(f"\nlook around: consentgate tail {settings.topic('gate.decisions')} --json --from-beginning "
          f"--until-idle 2 | head")
    stats = gate.stats
    return 0 if stats.records_in == stats.decisions + stats.dead_letters else 1
