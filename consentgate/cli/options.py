"""Flags shared by commands; each maps to one Settings field and names its env var."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from consentgate.catalog import Catalog, load_catalog
from consentgate.cli import early
from consentgate.settings import Settings


def flag(parser: argparse.ArgumentParser, name: str, help: str, **kwargs: Any) -> None:
    """Add ``--name`` bound to the Settings field of the same name, with its env var in the help."""
    field = name.replace("-", "_")
    assert field in Settings.model_fields, field
    parser.add_argument(f"--{name}", dest=field, default=None,
                        help=f"{help} [env: CONSENTGATE_{field.upper()}]", **kwargs)


def add_connection(parser: argparse.ArgumentParser) -> None:
    flag(parser, "bootstrap-servers", "Kafka bootstrap servers (default: the cluster `up` started)")
    flag(parser, "schema-registry-url", "schema registry URL (default: the registry `up` started)")
    flag(parser, "kafka-config", "properties file of Kafka client settings: security.protocol, sasl.*, ssl.* "
                                 "(e.g. <data dir>/clients/<role>.properties of `up --secure`)")
    flag(parser, "schema-registry-config", "properties file of schema registry client settings "
                                           "(basic.auth.user.info, ssl.ca.location, ...)")
    flag(parser, "data-dir", "where `up` keeps the embedded cluster and its address")
    flag(parser, "catalog", "purpose catalog YAML (default: the shipped catalog.yaml)")
    flag(parser, "topic-prefix", "prefix for every topic name")


def settings_from(args: argparse.Namespace, client: bool = True) -> Settings:
    """Settings from the flags given (then env vars, then what ``up`` recorded); ``client=False`` for
    commands that manage the cluster rather than connect to it as a client."""
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**given).resolved(client)


def catalog_of(settings: Settings) -> Catalog:
    return load_catalog(settings.catalog)


def stop_on_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT ask a worker to finish its open batch and return."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if early.RECEIVED:  # asked to stop while still starting
        stop()
