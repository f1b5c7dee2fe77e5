"""Fixtures: a session-scoped real cluster, and fresh topics and groups per test."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from consentgate.connectors.kafka import admin
from consentgate.connectors.topics import TopicNames, create_topics

from consentgate.catalog import Catalog, load_catalog
from consentgate.cluster import embedded
from consentgate.cluster.secure import clients_dir, create_acls
from consentgate.errors import ClusterError
from consentgate.security.acls import acl_set
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
def topics(settings: Settings, catalog: Catalog) -> Iterator[TopicNames]:
    """Create every consentgate topic under this test's prefix; delete every topic under it afterwards.

    Deleting keeps one broker serving a whole session: each partition holds open files, and a
    session's worth of kept topics can exhaust the broker's file-descriptor limit."""
    client = admin(settings)
    create_topics(settings, client, catalog)
    yield TopicNames.of(settings, catalog)
    mine = [t for t in client.list_topics(timeout=30).topics if t.startswith(settings.topic_prefix)]
    for future in client.delete_topics(mine, operation_timeout=30).values() if mine else ():
        future.result(60)


LEDGER_SERVER = os.environ.get("CONSENTGATE_TEST_LEDGER_URL")


@contextlib.contextmanager
def fresh_database(tmp_path: Path, purpose: str) -> Iterator[str]:
    """A fresh, empty database for ``purpose`` (ledger, iceberg catalog): on the PostgreSQL server CI
    starts, else SQLite in the test's directory."""
    if not LEDGER_SERVER:
        if IN_CI:
            pytest.fail(f"CI must test the {purpose} on PostgreSQL: set CONSENTGATE_TEST_LEDGER_URL (.ci/run does)")
        yield f"sqlite:///{tmp_path / (purpose + '.db')}"
        return
    from sqlalchemy import create_engine, text

    name = f"{purpose}_{uuid.uuid4().hex[:12]}"
    server = create_engine(LEDGER_SERVER, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield LEDGER_SERVER.rsplit("/", 1)[0] + f"/{name}"
    with server.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    server.dispose()


@pytest.fixture
def ledger_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger database."""
    with fresh_database(tmp_path, "ledger") as url:
        yield url


@dataclass(frozen=True)
class SecureCluster:
    """The embedded cluster ``consentgate up --secure`` started: SASL_SSL only, ACLs, a user per role."""

    data_dir: Path
    bootstrap_servers: str
    schema_registry_url: str
    up_output: str

    def client_config(self, role: str) -> Path:
        return clients_dir(self.data_dir) / f"{role}.properties"


@pytest.fixture(scope="session")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    """One secure cluster for the session (about 20 s to start), started through the command line."""
    data_dir = tmp_path_factory.mktemp("secure") / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    started = subprocess.run([sys.executable, "-m", "consentgate.cli.main", "up", "--secure", "--data-dir",
                              str(data_dir)], capture_output=True, text=True, env=env, timeout=300)
    launcher = Settings(data_dir=data_dir, bootstrap_servers=None, schema_registry_url=None)
    try:
        if started.returncode != 0:
            message = f"`consentgate up --secure` failed: {started.stderr.strip()[-2000:]}"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        info = embedded.status(launcher)
        assert info is not None and info.secure
        yield SecureCluster(data_dir, info.bootstrap_servers, info.schema_registry_url, started.stdout)
    finally:
        embedded.down(launcher)


@dataclass(frozen=True)
class SecureRoles:
    """Settings per role on the secure cluster, under a topic prefix (and ACLs) of one test's own."""

    cluster: SecureCluster
    base: Settings

    def settings(self, role: str, **overrides: Any) -> Settings:
        return self.base.model_copy(update={"kafka_config": self.cluster.client_config(role), **overrides})


@pytest.fixture
def secure_roles(secure_cluster: SecureCluster, catalog: Catalog, tmp_path: Path) -> SecureRoles:
    """This test's topics on the secure cluster, created by ``admin``, with every role's ACLs for them."""
    prefix = f"s{uuid.uuid4().hex[:10]}."
    base = Settings(bootstrap_servers=secure_cluster.bootstrap_servers,
                    schema_registry_url=secure_cluster.schema_registry_url, topic_prefix=prefix,
                    data_dir=tmp_path / "data", partitions=2, pseudonym_secret=TEST_SECRET,  # type: ignore[arg-type]
                    group_id=f"{prefix}gate", transactional_id_prefix=f"{prefix}gate", batch_timeout_s=0.1,
                    metering_group_id=f"{prefix}metering")
    roles = SecureRoles(secure_cluster, base)
    admin_settings = roles.settings("admin")
    client = admin(admin_settings)
    create_acls(client, acl_set(base, catalog))
    create_topics(admin_settings, client, catalog)
    return roles
