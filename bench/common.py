"""What every benchmark needs: a cluster, fresh topics, a consent population, activity."""

from __future__ import annotations

import os
import resource
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from consentgate.connectors.kafka import admin, produce, producer
from consentgate.connectors.topics import TopicNames, create_topics
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.records import activity_to_avro
from consentgate.streams.consent_writer import ConsentWriter

from consentgate.catalog import Catalog, load_catalog
from consentgate.cluster import embedded
from consentgate.settings import Settings
from consentgate.synthetic import activity, consent_population

BENCH_SECRET = "bench-pseudonym-secret-0123456789abcdef"  # at least 32 bytes


@dataclass
class Workbench:
    settings: Settings
    catalog: Catalog
    topics: TopicNames


def workbench(partitions: int = 3, **overrides: object) -> Workbench:
    """Fresh topics under a unique prefix on CONSENTGATE_* or the embedded cluster (started if needed)."""
    base = Settings()
    if not base.bootstrap_servers:
        info = embedded.up(base)
        base = base.model_copy(update={"bootstrap_servers": info.bootstrap_servers,
                                       "schema_registry_url": info.schema_registry_url})
    prefix = str(overrides.pop("topic_prefix", f"bench{uuid.uuid4().hex[:8]}."))
    settings = base.model_copy(update={
        # the data dir's secret when `up` made one: a worker started with another is refused
        "topic_prefix": prefix, "partitions": partitions,
        "pseudonym_secret": base.resolved().pseudonym_secret or BENCH_SECRET,
        "group_id": f"{prefix}gate", "transactional_id_prefix": f"{prefix}gate", "worker_id": "bench",
        **overrides})
    settings = Settings(**{k: getattr(settings, k) for k in Settings.model_fields})  # re-validate
    catalog = load_catalog(settings.catalog)
    create_topics(settings, admin(settings), catalog)
    return Workbench(settings, catalog, TopicNames.of(settings, catalog))


def load_consent(bench: Workbench, users: int, chunk: int = 20_000) -> int:
    """Grant a realistic consent mix to ``users`` users through the consent writer."""
    requests = consent_population(bench.catalog, users, expiring_at=datetime.now(timezone.utc) + timedelta(days=30))
    with ConsentWriter(bench.settings, bench.catalog) as writer:
        for start in range(0, len(requests), chunk):
            writer.apply(requests[start:start + chunk])
    return len(requests)


def load_activity(bench: Workbench, users: int, count: int) -> int:
    """Publish ``count`` events (Zipf over ``users``) that all occurred after the grants; returns bytes."""
    topic = bench.topics.activity
    start = datetime.now(timezone.utc)  # after every grant; 1 us apart keeps the last one well within skew
    total = 0
    with registry_client(bench.settings) as registry:
        encode = Codecs(registry)["ActivityEvent"].writer_for(topic)
        out = producer(bench.settings, **{"linger.ms": 20, "batch.size": 1_000_000,
                                          "queue.buffering.max.messages": 2_000_000})
        for event in activity(users, count, start, spacing=timedelta(microseconds=1)):
            value = encode(activity_to_avro(event))
            total += len(value)
            produce(out, topic, value, event.user_id.encode())
        assert out.flush(120) == 0
    return total


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cores() -> int:
    return os.cpu_count() or 1


_STARTED = time.monotonic()


def timed(label: str) -> float:
    """Announce a phase, with the minutes since the bench started, so slow phases show in the log."""
    now = time.monotonic()
    print(f"  .. [{(now - _STARTED) / 60:5.1f} min] {label}", flush=True)
    return now
