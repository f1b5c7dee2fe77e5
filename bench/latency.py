"""End-to-end latency at a fixed input rate: from produce to the output being readable downstream.

The paced producer stamps each input record with its send time and remembers it by (partition,
offset). A read_committed observer sees each output when its transaction commits and maps it back
to the input: the gate's Decision names its input's coordinates; the passthrough forwards headers.
"""

from __future__ import annotations

import struct
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, TopicPartition
from consentgate.connectors.kafka import consumer, produce, producer

from consentgate.settings import Settings

HEADER = "bench-sent-ns"
Coords = tuple[int, int]  # input (partition, offset)


def paced_copy(settings: Settings, source: str, sink: str, rate: float, count: int) -> dict[Coords, int]:
    """Re-publish ``count`` records of ``source`` to ``sink`` at ``rate``/s; returns send times by coords."""
    reader = consumer(settings, f"pace-{uuid.uuid4()}")
    parts = reader.list_topics(source, timeout=10).topics[source].partitions
    reader.assign([TopicPartition(source, p, -2) for p in parts])
    out = producer(settings)
    sent_at: dict[Coords, int] = {}

    def delivered_at(stamp: int) -> Callable[[KafkaError | None, Message], None]:
        # Delivery reports carry no headers: the send time travels in the closure.
        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                sent_at[(msg.partition() or 0, msg.offset() or 0)] = stamp
        return delivered

    sent, start = 0, time.monotonic()
    while sent < count:
        for msg in reader.consume(500, 1.0):
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp = time.time_ns()
            produce(out, sink, msg.value(), msg.key(), headers=[(HEADER, struct.pack(">q", stamp))],
                    on_delivery=delivered_at(stamp))
            out.poll(0)
            sent += 1
            if sent >= count:
                break
    out.flush(60)
    reader.close()
    return sent_at


def arrived(reader: Any, most: int, wait_s: float) -> list[Message]:
    """What the reader has fetched, at once; if nothing, the first record to arrive within ``wait_s``.
    Unlike consume(most, wait_s), it never holds records back waiting for a full batch, so an observer
    adds no wait of its own to what it measures, whatever the contender's rate."""
    msgs: list[Message] = reader.consume(most, 0)
    if not msgs:
        first = reader.poll(wait_s)
        msgs = [] if first is None else [first]
    return msgs


def header_stamp(msg: Any) -> int | None:
    for name, raw in msg.headers() or ():
        if name == HEADER:
            return int(struct.unpack(">q", raw)[0])
    return None


class Observer:
    """Records when each committed output of ``topic`` becomes readable, keyed by ``identify``."""

    def __init__(self, settings: Settings, topic: str, expected: int,
                 identify: Callable[[Message], Coords | int | None]) -> None:
        self.seen: list[tuple[Coords | int, int]] = []
        self._args = (settings, topic, expected, identify)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def start(self) -> Observer:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        settings, topic, expected, identify = self._args
        # A read_committed fetch can otherwise sit out fetch.wait.max.ms (500 ms) when only commit markers
        # advance; the observer must not add its own wait to what it measures.
        reader = consumer(settings, f"observe-{uuid.uuid4()}", **{"fetch.wait.max.ms": 5})
        parts = reader.list_topics(topic, timeout=10).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, -1) for p in parts])  # from the end: only new outputs
        reader.consume(1, 1.0)
        self._ready.set()
        deadline = time.monotonic() + 600
        # Stamp each output as it arrives and identify it only afterwards: decoding while observing would
        # add the observer's own work to the latency it measures (an Avro decode costs several times a
        # JSON parse, so that work differs by contender).
        stamped: list[tuple[Message, int]] = []
        while len(stamped) < expected and time.monotonic() < deadline:
            msgs = arrived(reader, 1000, 0.5)
            now = time.time_ns()
            stamped += [(msg, now) for msg in msgs if msg.error() is None]
        reader.close()
        for msg, at in stamped:
            key = identify(msg)
            if key is not None:
                self.seen.append((key, at))


def warm_up(settings: Settings, topic: str, outputs: str, rate: float, count: int,
            identify: Callable[[Message], Coords | int | None], timeout: float = 300.0) -> None:
    """Feed ``count`` records of ``topic`` back into it at ``rate`` and wait until the contender has
    written an output for every one: it is then running, caught up and warm (JIT, caches, fetch
    sessions), and the measured window that follows starts from an empty backlog."""
    observer = Observer(settings, outputs, count, identify).start()
    paced_copy(settings, topic, topic, rate, count)
    observer.join(timeout)
    if len(observer.seen) < count:
        raise RuntimeError(f"warm-up: {len(observer.seen)} of {count} outputs on {outputs} within {timeout:.0f}s")


def latencies_ms(seen: list[tuple[Coords | int, int]], sent_at: dict[Coords, int]) -> list[float]:
    out = []
    for key, seen_ns in seen:
        sent = key if isinstance(key, int) else sent_at.get(key)
        if sent is not None:
            out.append((seen_ns - sent) / 1e6)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
