"""``consentgate produce --jsonl`` and ``consentgate tail``."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import KafkaError, Message, TopicPartition
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from consentgate.cli.options import add_connection, settings_from
from consentgate.connectors.jsonl import JsonLineError, activity_from_json, to_jsonable
from consentgate.connectors.kafka import consumer, producer
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.errors import EncodeError
from consentgate.schemas.records import activity_to_avro


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("produce", help="publish ActivityEvents given as JSON lines")
    p.add_argument("--jsonl", required=True, type=Path, help="file of JSON lines ('-' for stdin)")
    p.add_argument("--topic", help="topic to publish to (default: activity.events)")
    add_connection(p)
    p.set_defaults(run=run_produce)
    p = sub.add_parser("tail", help="print a topic's records decoded as JSON lines")
    p.add_argument("topic", help="topic name (the topic prefix is not added)")
    p.add_argument("--json", action="store_true", required=True, help="print JSON lines")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    p.add_argument("--until-idle", type=float, metavar="SECONDS", help="exit after this long without records")
    add_connection(p)
    p.set_defaults(run=run_tail)


def run_produce(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    topic = args.topic or settings.topic("activity.events")
    codec = Codecs(registry_client(settings))["ActivityEvent"]
    out = producer(settings)
    failures: list[str] = []
    acked = 0

    def delivered(err: KafkaError | None, msg: Message) -> None:
        nonlocal acked
        if err is not None:
            failures.append(f"delivery to {msg.topic()} failed: {err.str()}")
        else:
            acked += 1

    lines = sys.stdin if str(args.jsonl) == "-" else args.jsonl.open(encoding="utf-8")
    bad = 0
    with lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = activity_from_json(line)
                value = codec.encode(topic, activity_to_avro(event))
            except (JsonLineError, EncodeError) as exc:
                bad += 1
                print(f"line {number}: {exc}", file=sys.stderr)
                continue
            out.produce(topic, value=value, key=event.user_id.encode(), on_delivery=delivered)
            out.poll(0)
    remaining = out.flush(60)
    if remaining:
        failures.append(f"{remaining} records not acknowledged within 60s")
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"published {acked} records to {topic}; {bad} bad lines")
    return 1 if bad or failures else 0


def run_tail(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    decode = AvroDeserializer(registry_client(settings), return_record_name=True)
    reader = consumer(settings, f"consentgate-tail-{uuid.uuid4()}")
    metadata = reader.list_topics(args.topic, timeout=10).topics.get(args.topic)
    if metadata is None or metadata.error is not None:
        print(f"no topic {args.topic}", file=sys.stderr)
        return 2
    start = -2 if args.from_beginning else -1  # OFFSET_BEGINNING / OFFSET_END
    reader.assign([TopicPartition(args.topic, p, start) for p in metadata.partitions])
    errors = 0
    last = time.monotonic()
    try:
        while args.until_idle is None or time.monotonic() - last < args.until_idle:
            msg = reader.poll(0.2)
            if msg is None:
                continue
            last = time.monotonic()
            if msg.error():
                errors += 1
                print(f"error: {msg.error().str()}", file=sys.stderr)
                continue
            errors += _print_record(msg, decode)
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
    return 1 if errors else 0


def _print_record(msg: Message, decode: AvroDeserializer) -> int:
    key = msg.key()
    if msg.value() is None:
        print(json.dumps({"tombstone": True, "key": key.decode(errors="replace") if key else None}))
        return 0
    try:
        value = decode(msg.value(), SerializationContext(msg.topic() or "", MessageField.VALUE))
    except Exception as exc:  # noqa: BLE001 - reported with coordinates, never skipped silently
        print(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: undecodable: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(to_jsonable(value), ensure_ascii=False), flush=True)
    return 0
