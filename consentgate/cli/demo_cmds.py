"""``consentgate demo``."""

from __future__ import annotations

import argparse
import time

from consentgate.cli.options import add_connection, catalog_of, settings_from
from consentgate.cluster import embedded
from consentgate.demo import run_demo, settle, settlement_summary, summary


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
    prefix = settings.topic_prefix
    ledger = settings.ledger_url
    if ledger is None:  # a ledger of the demo's own, so each demo closes its own period
        (settings.data_dir / "demo").mkdir(parents=True, exist_ok=True)
        ledger = f"sqlite:///{settings.data_dir / 'demo' / (prefix + 'ledger.db')}"
    settings = settings.model_copy(update={"group_id": f"{prefix}gate", "transactional_id_prefix": f"{prefix}gate",
                                           "metering_group_id": f"{prefix}metering", "ledger_url": ledger})
    catalog = catalog_of(settings)
    gate, result = run_demo(settings, catalog, args.users, args.events, print)
    for line in summary(gate, result):
        print(line)
    settlement = settle(settings, catalog, print)
    for line in settlement_summary(gate, settlement):
        print(line)
    print(f"ledger: {ledger}  (consentgate statement --user U --ledger-url {ledger} --format html)")
    from consentgate.api import demo_access  # the consent service's page, signed in as one synthetic user

    url, token = demo_access(settings)
    print(f"\nyour own page: CONSENTGATE_LEDGER_URL={ledger} consentgate serve --topic-prefix {prefix}\n"
          f"  then open {url}\n  (or send 'Authorization: Bearer {token}' to the API)")
    print(f"\nlook around: consentgate tail {settings.topic('gate.decisions')} --json --from-beginning "
          f"--until-idle 2 | head")
    stats = gate.stats
    reconciled = (stats.records_in == stats.decisions + stats.dead_letters
                  and sum(stats.passed.values()) == settlement.credited
                  and settlement.pools_paid_cents + settlement.pools_carried_cents == settlement.declared_cents)
    return 0 if reconciled else 1
