"""The limit: a raw transactional consume-produce loop with confluent-kafka, no decode, no policy."""

from __future__ import annotations

import time

from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic
from consentgate.connectors.kafka import admin, consumer, produce, producer

from consentgate.settings import Settings


def passthrough(settings: Settings, source: str, sink: str, expected: int, batch_size: int,
                group: str | None = None, create_sink: bool = True) -> float:
    """Copy ``expected`` records from ``source`` to ``sink``, one transaction per batch; returns seconds."""
    if create_sink:
        client = admin(settings)
        client.create_topics([NewTopic(sink, settings.partitions, settings.replication_factor)])[sink].result()
    cons = consumer(settings, group or f"{settings.topic_prefix}passthrough")
    prod = producer(settings, **{"transactional.id": f"{group or settings.topic_prefix + 'passthrough'}-txn",
                                 "queue.buffering.max.messages": 1_000_000})
    prod.init_transactions(60)
    cons.subscribe([source])
    done = 0
    started: float | None = None
    while done < expected:
        msgs = cons.consume(batch_size, 0.2)
        if not msgs:
            continue
        if started is None:
            started = time.monotonic()
        offsets: dict[tuple[str, int], int] = {}
        prod.begin_transaction()
        for msg in msgs:
            produce(prod, sink, msg.value(), msg.key(), headers=msg.headers())
            offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        prod.send_offsets_to_transaction([TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                         cons.consumer_group_metadata(), 60)
        prod.commit_transaction(60)
        done += len(msgs)
    elapsed = time.monotonic() - (started or time.monotonic())
    cons.close()
    return elapsed


if __name__ == "__main__":  # python -m bench.passthrough SETTINGS_JSON SOURCE SINK EXPECTED BATCH GROUP
    import json
    import sys

    conf, source, sink, expected, batch, group = sys.argv[1:7]
    elapsed = passthrough(Settings(**json.loads(conf)), source, sink, int(expected), int(batch), group,
                          create_sink=False)
    print(json.dumps({"seconds": elapsed}))
