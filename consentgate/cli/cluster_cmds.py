"""``consentgate up`` / ``down`` / ``topics create`` / ``acls --print``."""

from __future__ import annotations

import argparse
import time

from consentgate.cli.options import add_connection, catalog_of, flag, settings_from
from consentgate.cluster import embedded
from consentgate.cluster.secure import clients_dir
from consentgate.connectors.kafka import admin
from consentgate.connectors.topics import create_topics
from consentgate.security.acls import acl_set, parse_principals, roles


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("up", help="start a local single-node Kafka + schema registry, print their addresses")
    flag(p, "data-dir", "where the cluster keeps its data, logs and address")
    flag(p, "secure", "SASL_SSL only (SCRAM-SHA-512, a local CA), ACLs, one user and "
                      "<data dir>/clients/<role>.properties per role", action="store_true")
    flag(p, "topic-prefix", "prefix of the topics the roles' ACLs name (with --secure)")
    flag(p, "catalog", "purpose catalog: one trainer role per purpose (with --secure)")
    p.set_defaults(run=run_up)
    p = sub.add_parser("down", help="stop the cluster `up` started")
    flag(p, "data-dir", "the data dir given to `up`")
    p.set_defaults(run=run_down)
    topics = sub.add_parser("topics", help="manage consentgate's topics").add_subparsers(required=True)
    p = topics.add_parser("create", help="create every topic with its settings and register its schema")
    add_connection(p)
    flag(p, "partitions", "partitions per topic", type=int)
    flag(p, "replication-factor", "replicas per partition", type=int)
    p.set_defaults(run=run_topics_create)
    p = sub.add_parser("acls", help="the ACLs each role needs (SPEC §7), for a cluster you run")
    p.add_argument("--print", action="store_true", required=True, dest="print_acls",
                   help="print the ACL set, one binding a line")
    p.add_argument("--principal", action="append", default=[], metavar="ROLE=User:NAME",
                   help="the principal a role runs as (repeatable; default User:<role>)")
    for name, text in (("topic-prefix", "prefix of the topics the ACLs name"),
                       ("catalog", "purpose catalog: one trainer role per purpose"),
                       ("group-id", "consumer group of the gate workers"),
                       ("transactional-id-prefix", "prefix of the gate workers' transactional ids"),
                       ("metering-group-id", "consumer group of the metering workers")):
        flag(p, name, text)
    p.set_defaults(run=run_acls)


def run_up(args: argparse.Namespace) -> int:
    settings = settings_from(args, client=False)
    started = time.monotonic()
    info = embedded.up(settings, secure=settings.secure, catalog=catalog_of(settings))
    print(f"bootstrap servers: {info.bootstrap_servers}")
    print(f"schema registry:   {info.schema_registry_url}")
    if info.secure:
        clients = clients_dir(settings.data_dir)
        print(f"security:          SASL_SSL (SCRAM-SHA-512), ACLs; CA {settings.data_dir / 'tls' / 'ca.pem'}")
        print(f"client configs:    {clients}/<role>.properties, pass one with --kafka-config:")
        for role in roles(catalog_of(settings)):
            print(f"  {role:<40} {clients / (role + '.properties')}")
    print(f"(recorded in {settings.data_dir}; ready in {time.monotonic() - started:.1f}s)")
    return 0


def run_down(args: argparse.Namespace) -> int:
    stopped = embedded.down(settings_from(args, client=False))
    print("stopped " + (", ".join(f"{p.name} (pid {p.pid})" for p in stopped) if stopped else "nothing"))
    return 0


def run_topics_create(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    created, existing = create_topics(settings, admin(settings), catalog_of(settings))
    for name in created:
        print(f"created {name}")
    for name in existing:
        print(f"exists  {name}")
    return 0


def run_acls(args: argparse.Namespace) -> int:
    settings = settings_from(args, client=False)
    catalog = catalog_of(settings)
    acls = acl_set(settings, catalog, parse_principals(args.principal, catalog))
    width = max(len(a.principal) for a in acls)
    print(f"{'PRINCIPAL':<{width}}  {'OPERATION':<9}  {'RESOURCE':<16}  {'PATTERN':<8}  NAME")
    for a in acls:
        print(f"{a.principal:<{width}}  {a.operation.upper():<9}  {a.resource:<16}  {a.pattern.upper():<8}  "
              f"{a.name}")
    print(f"# {len(acls)} ALLOW bindings, host *; everything else is denied "
          "(StandardAuthorizer, allow.everyone.if.no.acl.found=false)")
    return 0
