"""Where a regate starts and ends in the activity log, per partition."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consentgate.errors import RegateError


@dataclass(frozen=True)
class OffsetRange:
    """Per partition: the first offset in the range and the first one past it."""

    start: dict[int, int]
    end: dict[int, int]

    def size(self) -> int:
        return sum(max(self.end[p] - self.start[p], 0) for p in self.start)


def _millis(at: datetime) -> int:
    if at.tzinfo is None:
        raise RegateError(f"{at.isoformat()} has no UTC offset")
    return int(at.timestamp() * 1000)


def _at_time(consumer: Consumer, topic: str, partitions: list[int], at: datetime,
             past_end: dict[int, int]) -> dict[int, int]:
    """The first offset whose record timestamp is at or after ``at`` (the end when there is none)."""
    ms = _millis(at)
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in partitions], timeout=30)
    except KafkaException as exc:
        raise RegateError(f"cannot look up offsets of {topic} at {at.isoformat()}: {exc.args[0].str()}") from exc
    return {tp.partition: tp.offset if tp.offset >= 0 else past_end[tp.partition] for tp in found}


def resolve(consumer: Consumer, topic: str, stable_end: dict[int, int], start: datetime | None,
            end: datetime | None) -> OffsetRange:
    """From ``start`` (or the oldest record kept) to ``end`` (or ``stable_end``, the last stable offsets
    captured now: records appended later belong to the next regate)."""
    partitions = sorted(stable_end)
    if start is not None and end is not None and end <= start:
        raise RegateError(f"--to {end.isoformat()} is not after --from {start.isoformat()}")
    low = {}
    for p in partitions:
        try:
            low[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[0]
        except KafkaException as exc:
            raise RegateError(f"cannot read the offsets of {topic}[{p}]: {exc.args[0].str()}") from exc
    first = _at_time(consumer, topic, partitions, start, stable_end) if start is not None else low
    last = (_at_time(consumer, topic, partitions, end, stable_end) if end is not None else dict(stable_end))
    last = {p: min(last[p], stable_end[p]) for p in partitions}
    return OffsetRange({p: max(first[p], low[p]) for p in partitions}, last)
