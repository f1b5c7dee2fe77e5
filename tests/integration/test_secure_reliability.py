"""The small reliability scenario (kill -9, join, leave) on the secure cluster, audited exactly.

Gate workers run as the ``gate`` role. The load generator both publishes activity and changes consent,
so it runs as one principal holding exactly the ``platform`` and ``consent`` grants; the oracle reads as
a principal holding the ``auditor`` grants plus the test reader's group.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from pathlib import Path

from consentgate.cluster.secure import client_conf, create_acls, upsert_users
from consentgate.connectors.kafka import admin
from consentgate.connectors.topics import TopicNames

from consentgate.catalog import Catalog
from consentgate.security import properties
from consentgate.security.acls import Acl, role_grants
from consentgate.settings import Settings
from tests.conftest import SecureRoles
from tests.helpers import wait_for
from tests.reliability.scenario import Load, Workers, _decided, audit, run_load

FAST = {"batch_size": 50, "session_timeout_ms": 3000, "transaction_timeout_ms": 5000}


def _principal(roles: SecureRoles, catalog: Catalog, tmp_path: Path, name: str,
               grants: list[tuple[str, str, str, str]]) -> Settings:
    """A SCRAM user holding exactly ``grants``, with a client file of its own."""
    client = admin(roles.settings("admin"))
    password = secrets.token_hex(24)
    upsert_users(client, {name: password})
    create_acls(client, [Acl(f"User:{name}", *g) for g in grants])  # type: ignore[arg-type]
    path = tmp_path / f"{name}.properties"
    path.write_text(properties.render(client_conf(roles.cluster.data_dir, name, password)))
    path.chmod(0o600)
    return roles.base.model_copy(update={"kafka_config": path, **FAST})


def test_small_kill_and_rebalance_on_the_secure_cluster(secure_roles: SecureRoles, catalog: Catalog,
                                                        tmp_path: Path) -> None:
    base = secure_roles.base
    tag = uuid.uuid4().hex[:6]
    loader = _principal(secure_roles, catalog, tmp_path, f"load-{tag}",
                        role_grants("platform", base, catalog) + role_grants("consent", base, catalog))  # type: ignore[arg-type]
    oracle = _principal(secure_roles, catalog, tmp_path, f"oracle-{tag}",
                        [*role_grants("auditor", base, catalog), ("group", "test-reader-", "prefixed", "read")])  # type: ignore[list-item]
    topics = TopicNames.of(base, catalog)
    workers = Workers(secure_roles.settings("gate", **FAST), tmp_path)
    workers.start("w1")
    load = Load()
    feeder = threading.Thread(target=run_load, args=(loader, catalog, topics, 3000, 150, load, 1), daemon=True)
    feeder.start()
    try:
        for pause in (1.2, 0.7, 2.1):  # three kill -9 cycles, then a join and a leave: two rebalances
            time.sleep(pause)
            workers.kill("w1")
            workers.start("w1")
        workers.start("w2")
        time.sleep(3)
        workers.stop("w1")
        feeder.join(600)
        assert not feeder.is_alive(), "load did not finish"
        total = 3000 + len(load.bad_inputs)
        wait_for(lambda: _decided(oracle, topics) >= total, timeout=300, what=f"{total} inputs decided")
    finally:
        workers.stop_all()
    report = audit(oracle, catalog, topics, load)
    assert report.problems() == {}
    assert report.records == 3000 + len(load.bad_inputs) and load.bad_inputs
    assert workers.kills == 3 and load.consent_changes > 50
