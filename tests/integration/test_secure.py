"""The secure embedded cluster (``consentgate up --secure``): every role may do exactly what SPEC §7 says.

The expected tables below are written from SPEC §7 by hand (not derived from ``security.acls``), so
the broker's answers are checked against the contract, not against the module that made the ACLs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from functools import partial
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    OffsetSpec,
    ResourcePatternType,
    ResourceType,
)
from consentgate.connectors.kafka import admin, consumer, producer

from consentgate.catalog import Catalog
from consentgate.security import properties
from consentgate.security.acls import acl_set
from consentgate.settings import Settings
from tests.conftest import SecureCluster, SecureRoles

REC, GEN, ADS = ("training.train_ai_system.recommendation", "training.train_ai_system.generative",
                 "training.train_ai_system.ads_ranking")
SINKS = {REC, GEN, ADS}
TOPICS = ["activity.events", "consent.state", "consent.changes", "training.retractions", "gate.decisions",
          "gate.dlq", "metering.contributions", "metering.dlq", REC, GEN, ADS]
ROLES = ["admin", "platform", "consent", "gate", "metering", "auditor", "trainer.train_ai_system.recommendation",
         "trainer.train_ai_system.generative", "trainer.train_ai_system.ads_ranking"]
EVERY = set(TOPICS)

# SPEC §7, "may": write ...
PRODUCE: dict[str, set[str]] = {
    "admin": EVERY, "platform": {"activity.events"},
    "consent": {"consent.state", "consent.changes", "training.retractions"},
    "gate": {"gate.decisions", "gate.dlq", "metering.contributions", *SINKS},
    "metering": {"metering.dlq"}, "auditor": set(),
    **{f"trainer.{s.removeprefix('training.')}": set() for s in SINKS}}
# SPEC §7, "may": read ... (departures: consent reads its receipts, metering reads training text)
CONSUME: dict[str, set[str]] = {
    "admin": EVERY, "platform": set(), "consent": {"consent.state", "consent.changes"},
    "gate": {"activity.events", "consent.state"}, "metering": {"metering.contributions", *SINKS},
    "auditor": {"consent.changes", "gate.decisions", "gate.dlq", "training.retractions",
                "metering.contributions", *SINKS},
    **{f"trainer.{s.removeprefix('training.')}": {s, "training.retractions"} for s in SINKS}}
# listing offsets: whatever a role reads or writes, and the auditor's activity.events (never its content)
DESCRIBE = {role: PRODUCE[role] | CONSUME[role] | ({"activity.events"} if role == "auditor" else set())
            for role in ROLES}
# a group each role's readers use (assigning partitions still needs READ on the group)
READER_GROUP = {"admin": "consentgate-tail-", "platform": "consentgate-tail-", "consent": "consent-writer-reader-",
                "gate": "consent-view-", "metering": "{prefix}metering", "auditor": "consentgate-audit-",
                **{f"trainer.{s.removeprefix('training.')}": "consentgate-sink-" for s in SINKS}}
TXN_IDS = {"{prefix}gate-w1": {"admin", "gate"}, "{prefix}consent-writer-0": {"admin", "consent"},
           "{prefix}intruder": {"admin"}}
TRAINERS = {f"trainer.{s.removeprefix('training.')}" for s in SINKS}
GROUPS = {"{prefix}gate": {"admin", "gate"}, "{prefix}metering": {"admin", "metering"},
          "consent-view-x": {"admin", "gate"}, "consent-writer-reader-x": {"admin", "consent"},
          "consentgate-audit-x": {"admin", "auditor"}, "consentgate-sink-x": {"admin", *TRAINERS},
          "consentgate-tail-x": {"admin", "auditor", *TRAINERS}, "intruder-x": {"admin"}}
REFUSALS = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
            KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED}


def _outcome(action: Callable[[], None]) -> str:
    """'ok', 'refused' (an authorization error) or the unexpected error's text."""
    try:
        action()
    except KafkaException as exc:
        err = exc.args[0]
        return "refused" if err.code() in REFUSALS else f"error {err.name()}: {err.str()}"
    return "ok"


def _produce_each(settings_role: object, topics: dict[str, str]) -> dict[str, str]:
    """Produce one record to every topic; what the broker said for each."""
    out = producer(settings_role, **{"enable.idempotence": False, "message.timeout.ms": 10000})  # type: ignore[arg-type]
    results: dict[str, str] = {}

    def delivered(short: str) -> Callable[[KafkaError | None, object], None]:
        def report(err: KafkaError | None, msg: object) -> None:
            results[short] = ("ok" if err is None else "refused" if err.code() in REFUSALS
                              else f"error {err.name()}")
        return report

    for short, topic in topics.items():
        out.produce(topic, value=b"probe", key=b"probe", partition=1, on_delivery=delivered(short))
    assert out.flush(30) == 0
    return results


def _consume(settings_role: object, topic: str, group: str) -> None:
    """Read partition 0 from the start; the seed record must come back, or an error must."""
    reader = consumer(settings_role, group)  # type: ignore[arg-type]
    try:
        _visible(reader.list_topics(topic, timeout=10).topics[topic])
        reader.assign([TopicPartition(topic, 0, -2)])
        for _ in range(100):
            msg = reader.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            assert msg.value() == b"seed"
            return
        raise AssertionError(f"neither the seed record nor an error from {topic}")
    finally:
        reader.close()


def _visible(metadata: object) -> None:
    """The broker withholds a topic's metadata from a principal that may not even describe it."""
    error = getattr(metadata, "error", None)
    if error is not None:
        raise KafkaException(error)


def _list_offsets(client: AdminClient, topic: str) -> None:
    _visible(client.list_topics(topic, timeout=10).topics[topic])
    for future in client.list_offsets({TopicPartition(topic, 0): OffsetSpec.latest()},
                                      request_timeout=10).values():
        future.result()


def _init_transactions(settings_role: object, txn_id: str) -> None:
    out = producer(settings_role, **{"transactional.id": txn_id, "transaction.timeout.ms": 10000})  # type: ignore[arg-type]
    out.init_transactions(20)


def _describe_group(client: AdminClient, group: str) -> None:
    for future in client.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                     request_timeout=10).values():
        future.result()


def test_every_role_may_do_exactly_what_spec_7_says(secure_roles: SecureRoles, catalog: Catalog) -> None:
    prefix = secure_roles.base.topic_prefix
    full = {short: f"{prefix}{short}" for short in TOPICS}
    seeds = _produce_each(secure_roles.settings("admin"), {s: t for s, t in full.items()})
    assert seeds == dict.fromkeys(TOPICS, "ok")
    seed = producer(secure_roles.settings("admin"))
    for topic in full.values():
        seed.produce(topic, value=b"seed", key=b"seed", partition=0)
    assert seed.flush(30) == 0

    table: dict[str, dict[str, str]] = {}
    mismatches: list[str] = []
    for role in ROLES:
        settings = secure_roles.settings(role)
        client = admin(settings)
        row: dict[str, str] = {}
        produced = _produce_each(settings, full)
        for short in TOPICS:
            cell = ""
            group = (f"{prefix}metering" if role == "metering"
                     else READER_GROUP[role].format(prefix=prefix) + uuid.uuid4().hex[:6])
            checks = (("W", produced[short], short in PRODUCE[role]),
                      ("R", _outcome(partial(_consume, settings, full[short], group)), short in CONSUME[role]),
                      ("D", _outcome(partial(_list_offsets, client, full[short])), short in DESCRIBE[role]))
            for letter, outcome, allowed in checks:
                if outcome == "ok":
                    cell += letter
                if outcome != ("ok" if allowed else "refused"):
                    mismatches.append(f"{role} {letter} {short}: {outcome}, expected "
                                      f"{'ok' if allowed else 'refused'}")
            row[short] = cell or "-"
        for txn, allowed_roles in TXN_IDS.items():
            outcome = _outcome(partial(_init_transactions, settings, txn.format(prefix=prefix)))
            row[f"txn {txn.format(prefix='')}"] = "ok" if outcome == "ok" else "-"
            if outcome != ("ok" if role in allowed_roles else "refused"):
                mismatches.append(f"{role} transactional id {txn}: {outcome}")
        for probe, allowed_roles in GROUPS.items():
            outcome = _outcome(partial(_describe_group, client, probe.format(prefix=prefix)))
            row[f"group {probe.format(prefix='')}"] = "ok" if outcome == "ok" else "-"
            if outcome != ("ok" if role in allowed_roles else "refused"):
                mismatches.append(f"{role} group {probe}: {outcome}")
        table[role] = row
    _print_matrix(table)
    assert mismatches == []


def _print_matrix(table: dict[str, dict[str, str]]) -> None:
    columns = list(next(iter(table.values())))
    short = {c: c.replace("training.train_ai_system.", "tr.").replace("metering.", "m.").replace("consent.", "c.")
             .replace("gate.", "g.").replace("training.", "tr.").replace("activity.events", "activity")
             for c in columns}
    print("\npermission matrix (W produce, R consume, D list offsets; ok = allowed; - = refused by the broker)")
    print("| role | " + " | ".join(short[c] for c in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for role, row in table.items():
        print(f"| {role.replace('trainer.train_ai_system.', 'trainer.')} | " + " | ".join(row[c] for c in columns)
              + " |")


def _refusal_codes(conf: Mapping[str, Any]) -> set[int]:
    """The errors a client with ``conf`` meets: it must not get the cluster's metadata."""
    seen: set[int] = set()
    settings: dict[str, Any] = {**conf, "error_cb": lambda err: seen.add(err.code()), "log_level": 0}
    client = AdminClient(settings)
    with pytest.raises(KafkaException):
        client.list_topics(timeout=5)
    client.poll(1)  # serves the error callbacks
    return seen


def test_plaintext_wrong_password_and_untrusted_clients_are_refused(secure_cluster: SecureCluster) -> None:
    gate = properties.read(secure_cluster.client_config("gate"), "client config")
    bootstrap = {"bootstrap.servers": secure_cluster.bootstrap_servers}
    assert KafkaError._ALL_BROKERS_DOWN in _refusal_codes(bootstrap)  # plaintext: the broker hangs up
    wrong = {**bootstrap, **gate, "sasl.password": gate["sasl.password"] + "x"}
    assert KafkaError._AUTHENTICATION in _refusal_codes(wrong)
    system_cas_only = {k: v for k, v in {**bootstrap, **gate}.items() if k != "ssl.ca.location"}
    assert KafkaError._SSL in _refusal_codes(system_cas_only)  # the local CA is not a public one
    right = AdminClient({**bootstrap, **gate, "log_level": 0})
    assert right.list_topics(timeout=10).brokers  # the same settings with the right password connect


def test_up_secure_wrote_a_client_file_per_role_readable_only_by_its_owner(secure_cluster: SecureCluster,
                                                                           catalog: Catalog) -> None:
    clients = secure_cluster.data_dir / "clients"
    assert sorted(p.name for p in clients.iterdir()) == sorted(f"{role}.properties" for role in ROLES)
    assert secure_cluster.data_dir.stat().st_mode & 0o777 == 0o700
    assert (secure_cluster.data_dir / "pseudonym.secret").stat().st_mode & 0o777 == 0o600
    passwords = set()
    for role in ROLES:
        path = clients / f"{role}.properties"
        assert path.stat().st_mode & 0o777 == 0o600
        conf = properties.read(path, "client config")
        assert {k: v for k, v in conf.items() if k != "sasl.password"} == {
            "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": role,
            "ssl.ca.location": str(secure_cluster.data_dir / "tls" / "ca.pem")}
        passwords.add(conf["sasl.password"])
        assert conf["sasl.password"] not in secure_cluster.up_output
    assert len(passwords) == len(ROLES)
    assert f"client configs:    {clients}/<role>.properties" in secure_cluster.up_output
    broker = json.loads((secure_cluster.data_dir / "kafka" / "broker-secrets.json").read_text())
    assert (secure_cluster.data_dir / "kafka" / "broker-secrets.json").stat().st_mode & 0o777 == 0o600
    assert (secure_cluster.data_dir / "kafka" / "server.properties").stat().st_mode & 0o777 == 0o600
    secrets = passwords | {broker["scram"], broker["plain"],
                           (secure_cluster.data_dir / "pseudonym.secret").read_text().strip()}
    for written in ("kafka/kafka.log", "registry/registry.log", "cluster.json", "ports.json"):
        text = (secure_cluster.data_dir / written).read_text(errors="replace")
        assert [s for s in secrets if s in text] == [], f"a secret in {written}"


def test_acls_print_shows_the_set_up_secure_applied(secure_cluster: SecureCluster, catalog: Catalog) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    env["CONSENTGATE_DATA_DIR"] = str(secure_cluster.data_dir)
    printed = subprocess.run([sys.executable, "-m", "consentgate.cli.main", "acls", "--print"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0].split() == ["PRINCIPAL", "OPERATION", "RESOURCE", "PATTERN", "NAME"]
    assert lines[-1] == ("# 51 ALLOW bindings, host *; everything else is denied (StandardAuthorizer, "
                         "allow.everyone.if.no.acl.found=false)")
    shown = {(p, r, n, pat.lower(), op.lower()) for p, op, r, pat, n in (line.split() for line in lines[1:-1])}
    up_settings = Settings(data_dir=secure_cluster.data_dir)  # `up --secure` ran with the defaults
    assert shown == {(a.principal, a.resource, a.name, a.pattern, a.operation) for a in acl_set(up_settings, catalog)}
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                                  AclPermissionType.ANY)
    client = admin(Settings(bootstrap_servers=secure_cluster.bootstrap_servers,
                            kafka_config=secure_cluster.client_config("admin")))
    broker = client.describe_acls(everything, request_timeout=30).result()  # the client must outlive the call
    applied = {(b.principal, "cluster" if b.restype == ResourceType.BROKER else b.restype.name.lower(), b.name,
                b.resource_pattern_type.name.lower(), b.operation.name.lower()) for b in broker
               if b.permission_type == AclPermissionType.ALLOW and b.host == "*"}
    assert shown <= applied
    assert not any(b.permission_type != AclPermissionType.ALLOW for b in broker)  # no DENY needed: default deny
