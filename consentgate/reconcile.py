"""Does every input record have exactly one decision or one dead letter? Counted independently.

The input side comes from the input topic's own offsets; the output side from the decisions and
dead letters read back from their topics (never from the gate's counters), matched by input
coordinates. So a lost, duplicated or misplaced output shows, by offset, instead of cancelling out.
The demo publishes its activity without transactions, so every offset in range is a record.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consentgate.connectors.kafka import admin, consumer
from consentgate.connectors.reader import partitions_of, read_committed
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.settings import Settings

Coordinate = tuple[str, int, int]  # input topic, partition, offset
SHOWN = 10  # coordinates listed per kind of mismatch


@dataclass(frozen=True)
class Balance:
    """Input records against decisions and dead letters, each counted on its own."""

    records_in: int  # offsets in the input topic
    passed: int  # decisions that passed for at least one purpose
    dropped: int  # decisions that passed for none
    dead_letters: int
    missing: tuple[Coordinate, ...]  # input offsets with no output (the first few)
    duplicated: tuple[Coordinate, ...]  # input offsets with more than one output
    strays: tuple[Coordinate, ...]  # outputs naming an offset that is not in the input

    @property
    def balanced(self) -> bool:
        return (self.records_in == self.passed + self.dropped + self.dead_letters
                and not (self.missing or self.duplicated or self.strays))


def balance(ranges: dict[tuple[str, int], tuple[int, int]], decisions: list[tuple[Coordinate, bool]],
            dead_letters: list[Coordinate]) -> Balance:
    """``ranges``: (topic, partition) -> [low, high) offsets of the input; ``decisions``: (input, passed)."""
    outputs = Counter([c for c, _ in decisions] + dead_letters)
    missing: list[Coordinate] = []
    for (topic, partition), (low, high) in sorted(ranges.items()):
        for offset in range(low, high):
            if (topic, partition, offset) not in outputs:
                missing.append((topic, partition, offset))
    strays = sorted(c for c in outputs if (c[0], c[1]) not in ranges
                    or not ranges[(c[0], c[1])][0] <= c[2] < ranges[(c[0], c[1])][1])
    passed = sum(1 for _, p in decisions if p)
    return Balance(records_in=sum(high - low for low, high in ranges.values()), passed=passed,
                   dropped=len(decisions) - passed, dead_letters=len(dead_letters),
                   missing=tuple(missing[:SHOWN]),
                   duplicated=tuple(sorted(c for c, n in outputs.items() if n > 1)[:SHOWN]),
                   strays=tuple(strays[:SHOWN]))


def read_back(settings: Settings, topics: TopicNames) -> Balance:
    """The input topic's offsets, and every committed decision and dead letter, balanced."""
    reader = consumer(settings, f"consentgate-tail-{uuid.uuid4()}")
    try:
        ranges = {(tp.topic, tp.partition): reader.get_watermark_offsets(tp, timeout=10)
                  for tp in partitions_of(reader, topics.activity)}
    finally:
        reader.close()
    with registry_client(settings) as registry:
        codecs = Codecs(registry)
        decisions = [((d["input"]["topic"], d["input"]["partition"], d["input"]["offset"]),
                      any(o["passed"] for o in d["outcomes"]))
                     for d in _read(settings, topics.decisions, codecs["Decision"].decode)]
        dead = [(d["topic"], d["partition"], d["offset"])
                for d in _read(settings, topics.dlq, codecs["DeadLetter"].decode)]
    return balance({k: (low, high) for k, (low, high) in ranges.items()}, decisions, dead)


def _read(settings: Settings, topic: str, decode: Callable[[bytes, str, int, int], dict[str, Any]]
          ) -> list[dict[str, Any]]:
    reader = consumer(settings, f"consentgate-tail-{uuid.uuid4()}")
    try:
        return [decode(msg.value(), topic, msg.partition(), msg.offset())
                for msg in read_committed(reader, [topic], admin=admin(settings))]
    finally:
        reader.close()
