"""The gate's per-partition lag, from a real consumer's positions and fetched high watermarks."""

from __future__ import annotations

import uuid

from confluent_kafka import TopicPartition
from consentgate.connectors.kafka import consumer
from consentgate.connectors.topics import TopicNames

from consentgate.settings import Settings
from consentgate.streams.metrics import GateMetrics
from tests.helpers import produce_raw, wait_for


def test_consumer_lag_is_high_watermark_minus_position(settings: Settings, topics: TopicNames) -> None:
    produce_raw(settings, [(b"one-user", b"record %d" % n) for n in range(10)], topics.activity)
    reader = consumer(settings, f"lag-{uuid.uuid4()}")
    metrics = GateMetrics()
    try:
        reader.assign([TopicPartition(topics.activity, p, -2) for p in range(settings.partitions)])
        got = 0
        while got < 4:
            got += sum(1 for m in reader.consume(1, 1.0) if m.error() is None)
        partition = next(tp.partition for tp in reader.position(reader.assignment()) if tp.offset >= 0)

        def lags() -> dict[str, float]:
            metrics.observe_consumer_lag(reader)
            return {s.labels["partition"]: s.value for f in metrics.registry.collect()
                    if f.name == "consentgate_consumer_lag" for s in f.samples}

        # Partitions nothing was read from have no position yet: not reported rather than guessed.
        wait_for(lambda: lags() == {str(partition): 6.0}, 30, "lag of the partition being read")
    finally:
        reader.close()
