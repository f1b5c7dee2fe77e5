"""The whole pipeline on the secure cluster, each role acting with its own credentials only."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import pytest
from confluent_kafka import KafkaException
from consentgate.connectors.ledger import connect, contributions
from consentgate.connectors.reader import ReadTimeout
from consentgate.connectors.topics import TopicNames
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from consentgate.streams.metering import MeteringWorker
from sqlalchemy import select

from consentgate.catalog import Catalog
from consentgate.model import ActivityEvent
from consentgate.pseudonyms import key_id, pseudonym, record_id
from tests.conftest import TEST_SECRET, SecureCluster, SecureRoles
from tests.helpers import committed, produce_events, run_gate

GEN, REC, ADS = "train_ai_system.generative", "train_ai_system.recommendation", "train_ai_system.ads_ranking"
POST = {"text": "a long walk by the sea"}


def test_consent_gate_trainer_auditor_and_metering_each_with_their_own_credentials(
        secure_roles: SecureRoles, catalog: Catalog, ledger_url: str) -> None:
    topics = TopicNames.of(secure_roles.base, catalog)
    with ConsentWriter(secure_roles.settings("consent"), catalog) as writer:
        writer.apply([ConsentRequest("grant", "u1", "post", GEN, tier="data_sharing", plan="per_unit"),
                      ConsentRequest("grant", "u2", "search", ADS, tier="data_sharing", plan="per_unit"),
                      ConsentRequest("grant", "u3", "post", GEN)])
        writer.apply([ConsentRequest("erase", "u3")])
    t = datetime.now(timezone.utc)
    produce_events(secure_roles.settings("platform"), [
        ActivityEvent("e1", "u1", "post", t, "web", POST),
        ActivityEvent("e2", "u2", "search", t, "web", {"query": "tide tables"}),
        ActivityEvent("e3", "u3", "post", t, "web", POST),
        ActivityEvent("e4", "u-nobody", "post", t, "web", POST)])

    stats = run_gate(secure_roles.settings("gate"), catalog)
    assert (stats.records_in, stats.decisions, stats.dead_letters) == (4, 4, 0)
    assert stats.passed == {GEN: 1, ADS: 1}

    secret = TEST_SECRET.encode()
    trainer = secure_roles.settings(f"trainer.{GEN}")
    gen = committed(trainer, topics.training[GEN], group="consentgate-sink-")
    nym = pseudonym(secret, GEN, "u1")
    assert [(k, v["pseudonym"], v["record_id"], v["key_id"], v["purpose"], v["category"], v["fields"])
            for k, v in gen] == [(nym, nym, record_id(secret, GEN, "e1"), key_id(secret), GEN, "post", POST)]
    assert "event_id" not in gen[0][1] and "receipt_id" not in gen[0][1]
    retracted = committed(trainer, topics.retractions, group="consentgate-sink-")
    assert sorted((v["purpose"], v["pseudonym"]) for _, v in retracted) == sorted(
        (p, pseudonym(secret, p, "u3")) for p in catalog.purposes)
    with pytest.raises(ReadTimeout, match="does not exist"):  # another purpose's training set is not its to read
        committed(trainer, topics.training[ADS], group="consentgate-sink-")

    auditor = secure_roles.settings("auditor")
    decisions = {v["event_id"]: sorted((o["purpose"], o["reason"]) for o in v["outcomes"])
                 for _, v in committed(auditor, topics.decisions, group="consentgate-audit-")}
    assert decisions == {"e1": [(GEN, None), (REC, "no_grant")], "e2": [(ADS, None), (REC, "no_grant")],
                         "e3": [(GEN, "erased"), (REC, "erased")],
                         "e4": [(GEN, "no_consent_record"), (REC, "no_consent_record")]}
    with pytest.raises(KafkaException, match="Topic authorization failed"):  # offsets of activity, never content
        committed(auditor, topics.activity, group="consentgate-audit-")

    metering = MeteringWorker(secure_roles.settings("metering", ledger_url=ledger_url), catalog)
    metering.run(idle_exit_s=1.5)
    assert metering.stats.credited == 2
    engine = connect(ledger_url)
    try:
        with engine.connect() as conn:
            rows = sorted(conn.execute(select(contributions.c.event_id, contributions.c.purpose,
                                              contributions.c.user_id)).all())
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [("e1", GEN, "u1"), ("e2", ADS, "u2")]


def test_demo_secure_runs_each_part_as_its_own_role(secure_cluster: SecureCluster) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    ran = subprocess.run([sys.executable, "-m", "consentgate.cli.main", "demo", "--secure", "--data-dir",
                          str(secure_cluster.data_dir), "--users", "300", "--events", "3000",
                          "--topic-prefix", f"d{uuid.uuid4().hex[:8]}."],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("secure embedded cluster: Kafka 127.0.0.1:") and "(SASL_SSL)" in lines[0]
    assert f"each part acts as its own role: {secure_cluster.data_dir / 'clients'}/<role>.properties" in lines
    assert "  in = passed + dropped + DLQ      yes" in lines
    assert "  the gate's own counters agree    yes" in lines
    assert "  passed = credited                        yes" in lines
