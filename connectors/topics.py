"""Every topic consentgate uses, with its settings and Avro contract (SPEC §2)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from consentgate.schemas.codec import register, registry_client

from consentgate.catalog import Catalog
from consentgate.errors import ConfigurationError
from consentgate.settings import Settings

DAY_MS = 24 * 3600 * 1000
# Explicit, not the broker's default: a dead letter holds at most DLQ_VALUE_BYTES of key and of value
# plus a bounded message, so it always fits, whatever the broker's own limit is set to.
DLQ_MAX_MESSAGE_BYTES = str(1024 * 1024)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    contract: str
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicNames:
    activity: str
    consent_state: str
    consent_changes: str
    retractions: str
    decisions: str
    dlq: str
    contributions: str
    metering_dlq: str
    training: dict[str, str]  # purpose -> sink topic

    @classmethod
    def of(cls, settings: Settings, catalog: Catalog) -> TopicNames:
        t = settings.topic
        return cls(t("activity.events"), t("consent.state"), t("consent.changes"), t("training.retractions"),
                   t("gate.decisions"), t("gate.dlq"), t("metering.contributions"),
                   t("metering.dlq"),
                   {p.name: t(p.sink_topic) for p in catalog.purposes.values()})


def topic_specs(settings: Settings, catalog: Catalog) -> list[TopicSpec]:
    n = TopicNames.of(settings, catalog)
    specs = [
        TopicSpec(n.activity, "ActivityEvent", {"cleanup.policy": "delete"}),
        TopicSpec(n.consent_state, "ConsentState", {
            "cleanup.policy": "compact", "min.insync.replicas": "1",
            # Tombstones (erasures) stay long enough for every worker's view to see them.
            "delete.retention.ms": str(7 * DAY_MS)}),
        TopicSpec(n.consent_changes, "ConsentChange", {"cleanup.policy": "delete", "retention.ms": "-1"}),
        TopicSpec(n.retractions, "Retraction", {"cleanup.policy": "delete", "retention.ms": "-1"}),
        TopicSpec(n.decisions, "Decision", {"cleanup.policy": "delete"}),
        TopicSpec(n.dlq, "DeadLetter", {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS),
                                        "max.message.bytes": DLQ_MAX_MESSAGE_BYTES}),
        TopicSpec(n.contributions, "Contribution", {"cleanup.policy": "delete"}),
        TopicSpec(n.metering_dlq, "DeadLetter", {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS),
                                                 "max.message.bytes": DLQ_MAX_MESSAGE_BYTES}),
    ]
    for purpose in catalog.purposes.values():
        specs.append(TopicSpec(n.training[purpose.name], "TrainingRecord", {
            "cleanup.policy": "delete", "retention.ms": str(purpose.retention_days * DAY_MS)}))
    return specs


def _await_metadata(admin: AdminClient, names: list[str], partitions: int, timeout: float = 30.0) -> None:
    """Return once every new topic is in the broker's metadata with all its partitions.

    CreateTopics answers when the controller has created a topic; the broker serving metadata can
    lag, and a client started at once would be told the topic does not exist.
    """
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=10).topics
        missing = [n for n in names if n not in topics or topics[n].error is not None
                   or len(topics[n].partitions) < partitions]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise ConfigurationError(f"topics created but not visible after {timeout:.0f}s: {missing}")
        time.sleep(0.1)


def create_topics(settings: Settings, admin: AdminClient, catalog: Catalog) -> tuple[list[str], list[str]]:
    """Create missing topics and register their schemas; returns (created, existing).

    Idempotent. An existing topic whose cleanup policy differs from the contract is an
    error: a non-compacted consent.state would silently lose consent on retention.
    """
    specs = topic_specs(settings, catalog)
    existing = set(admin.list_topics(timeout=10).topics)
    new = [NewTopic(s.name, num_partitions=settings.partitions, replication_factor=settings.replication_factor,
                    config=s.config) for s in specs if s.name not in existing]
    created: list[str] = []
    for name, future in (admin.create_topics(new, operation_timeout=30) if new else {}).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ConfigurationError(f"cannot create topic {name}: {exc.args[0].str()}") from exc
    _await_metadata(admin, created, settings.partitions)
    already = [s.name for s in specs if s.name not in created]
    if already:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in already]
        wanted = {s.name: s.config["cleanup.policy"] for s in specs}
        for resource, future in admin.describe_configs(resources).items():
            policy = future.result()["cleanup.policy"].value
            if policy != wanted[resource.name]:
                raise ConfigurationError(f"topic {resource.name} exists with cleanup.policy={policy}; "
                                         f"consentgate needs {wanted[resource.name]}")
    with registry_client(settings) as client:
        for spec in specs:
            register(client, spec.name, spec.contract)
    return created, already
