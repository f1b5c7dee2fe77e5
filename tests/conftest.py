"""Fixtures: a session-scoped real cluster, and fresh topics and groups per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from consentgate.connectors.kafka import admin
from consentgate.connectors.topics import TopicNames, create_topics

from consentgate.catalog import Catalog, load_catalog
from consentgate.errors import ClusterError
from consentgate.settings import Settings
from tests.cluster import RunningCluster, running_cluster

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TEST_SECRET = "test-pseudonym-secret-0123456789"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath) or "tests/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    try:
        with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
            yield running
    except ClusterError as exc:
        if IN_CI:
            pytest.fail(f"no Kafka cluster could be had in CI: {exc}")
        pytest.skip(f"no Kafka cluster: {exc}")


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(cluster: RunningCluster, tmp_path: Path) -> SettingsFactory:
    """Settings on the test cluster with a topic prefix of this test's own."""
    prefix = f"t{uuid.uuid4().hex[:10]}."

    def build(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "bootstrap_servers": cluster.bootstrap_servers,
            "schema_registry_url": cluster.schema_registry_url,
            "topic_prefix": prefix,
            "data_dir": tmp_path / "data",
            "partitions": 3,
            "pseudonym_secret": TEST_SECRET,
            "group_id": f"{prefix}gate",
            "transactional_id_prefix": f"{prefix}gate",
            "batch_timeout_s": 0.1,
            "metering_group_id": f"{prefix}metering",
        }
        base.update(overrides)
        return Settings(**base)

    return build


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
def topics(settings: Settings, catalog: Catalog) -> TopicNames:
    """Create every consentgate topic under this test's prefix."""
    create_topics(settings, admin(settings), catalog)
    return TopicNames.of(settings, catalog)


LEDGER_SERVER = os.environ.get("CONSENTGATE_TEST_LEDGER_URL")


@pytest.fixture
def ledger_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger database: on the PostgreSQL server CI starts, else SQLite."""
    if not LEDGER_SERVER:
        if IN_CI:
            pytest.fail("CI must test the ledger on PostgreSQL: set CONSENTGATE_TEST_LEDGER_URL (.ci/run does)")
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    from sqlalchemy import create_engine, text

    name = f"ledger_{uuid.uuid4().hex[:12]}"
    server = create_engine(LEDGER_SERVER, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield LEDGER_SERVER.rsplit("/", 1)[0] + f"/{name}"
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    server.dispose()
