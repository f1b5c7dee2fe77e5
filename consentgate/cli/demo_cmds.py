"""``consentgate demo [--secure]``."""

from __future__ import annotations

import argparse
import time

from consentgate.cli.options import add_connection, catalog_of, flag, settings_from
from consentgate.cluster import embedded
from consentgate.cluster.secure import clients_dir, create_acls
from consentgate.connectors.kafka import admin
from consentgate.connectors.topics import TopicNames
from consentgate.demo import AsRole, run_demo, settle, settlement_summary, summary
from consentgate.reconcile import read_back
from consentgate.security.acls import acl_set
from consentgate.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="the whole pipeline on the embedded default, with synthetic users and "
                                    "live figures")
    p.add_argument("--users", type=int, default=10_000, help="synthetic users (default 10000)")
    p.add_argument("--events", type=int, default=100_000, help="activity records to publish (default 100000)")
    flag(p, "secure", "on the secure embedded cluster (`up --secure`): each part acts as its own role with "
                      "<data dir>/clients/<role>.properties", action="store_true")
    add_connection(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args, client=not args.secure)
    if args.secure:
        info = embedded.up(settings, secure=True, catalog=catalog_of(settings))
        print(f"secure embedded cluster: Kafka {info.bootstrap_servers} (SASL_SSL), registry "
              f"{info.schema_registry_url}")
        settings = settings.model_copy(update={"bootstrap_servers": info.bootstrap_servers,
                                               "schema_registry_url": info.schema_registry_url})
    elif not settings.bootstrap_servers:
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
    if settings.metrics_port is None:  # any free port: each worker registers where `consentgate top` finds it
        settings = settings.model_copy(update={"metrics_port": 0})
    catalog = catalog_of(settings)
    print(f"watch it live in another terminal: consentgate top --data-dir {settings.data_dir}")
    as_role: AsRole | None = None
    if args.secure:
        as_role = _roles(settings)
        create_acls(admin(as_role("admin")), acl_set(settings, catalog))  # this run's topics and groups
        print(f"each part acts as its own role: {clients_dir(settings.data_dir)}/<role>.properties")
    gate, result = run_demo(settings, catalog, args.users, args.events, print, as_role=as_role)
    balance = read_back(as_role("auditor") if as_role else settings, TopicNames.of(settings, catalog))
    for line in summary(gate, result, balance):
        print(line)
    settlement = settle(settings, catalog, print, as_role=as_role)
    for line in settlement_summary(gate, settlement):
        print(line)
    shown = settings.redacted_ledger()
    print(f"ledger: {shown}  (consentgate statement --user U --ledger-url {shown} --format html)")
    from consentgate.api import demo_access  # the consent service's page, signed in as one synthetic user

    url, token = demo_access(settings)
    print(f"\nyour own page: CONSENTGATE_LEDGER_URL={shown} consentgate serve --topic-prefix {prefix}\n"
          f"  then open {url}\n  (or send 'Authorization: Bearer {token}' to the API)")
    print(f"\nlook around: consentgate tail {settings.topic('gate.decisions')} --json --from-beginning "
          f"--until-idle 2 | head")
    reconciled = (balance.balanced and sum(gate.stats.passed.values()) == settlement.credited
                  and settlement.pools_paid_cents + settlement.pools_carried_cents == settlement.declared_cents)
    return 0 if reconciled else 1


def _roles(settings: Settings) -> AsRole:
    clients = clients_dir(settings.data_dir)

    def as_role(role: str) -> Settings:
        return settings.model_copy(update={"kafka_config": clients / f"{role}.properties"})

    return as_role
