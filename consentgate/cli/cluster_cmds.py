"""``consentgate up`` / ``down`` / ``topics create``."""

from __future__ import annotations

import argparse
import time

from consentgate.cli.options import add_connection, catalog_of, flag, settings_from
from consentgate.cluster import embedded
from consentgate.connectors.kafka import admin
from consentgate.connectors.topics import create_topics


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("up", help="start a local single-node Kafka + schema registry, print their addresses")
    flag(p, "data-dir", "where the cluster keeps its data, logs and address")
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


def run_up(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    started = time.monotonic()
    info = embedded.up(settings)
    print(f"bootstrap servers: {info.bootstrap_servers}")
    print(f"schema registry:   {info.schema_registry_url}")
    print(f"(recorded in {settings.data_dir}; ready in {time.monotonic() - started:.1f}s)")
    return 0


def run_down(args: argparse.Namespace) -> int:
    stopped = embedded.down(settings_from(args))
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
