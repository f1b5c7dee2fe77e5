"""What an audit covers: the activity offsets of a time range, found by listing offsets only.

The auditor may list the offsets of ``activity.events`` but never read its content (SPEC §7).
Listing offsets by timestamp answers both questions the audit has about the input: which
offsets a time range covers, and from which offset on a record was appended after a given
moment (for consent first). Both are exact when the topic uses ``LogAppendTime``; with
``CreateTime`` they rest on the producers' clocks, which the report says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec

from consentgate.audit.errors import AuditError

PROBES_PER_REQUEST = 256


@dataclass(frozen=True)
class Scope:
    """The input range audited: per activity partition, offsets ``[start, end)``."""

    topic: str
    from_ms: int | None
    to_ms: int | None
    partitions: dict[int, tuple[int, int]]

    @property
    def records(self) -> int:
        return sum(end - start for start, end in self.partitions.values())

    def covers(self, partition: int, offset: int) -> bool:
        span = self.partitions.get(partition)
        return span is not None and span[0] <= offset < span[1]


def _list(admin: AdminClient, request: dict[TopicPartition, OffsetSpec]) -> dict[tuple[str, int], int]:
    futures = admin.list_offsets(request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=30)
    try:
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
    except KafkaException as exc:
        raise AuditError(f"cannot list offsets of {sorted({tp.topic for tp in request})}: "
                         f"{exc.args[0].str()}") from exc


def partition_ids(admin: AdminClient, topic: str) -> list[int]:
    metadata = admin.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise AuditError(f"topic {topic} does not exist (is the topic prefix right?)")
    return sorted(metadata.partitions)


def ends(admin: AdminClient, topic: str, partitions: list[int]) -> dict[int, int]:
    """The last stable offset of every partition: what is committed now."""
    found = _list(admin, {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions})
    return {p: found[(topic, p)] for p in partitions}


def at_time(admin: AdminClient, topic: str, partitions: list[int], ms: int | None,
            fallback: dict[int, int]) -> dict[int, int]:
    """Per partition, the first offset whose timestamp is at or after ``ms`` (None: the earliest)."""
    spec = OffsetSpec.earliest() if ms is None else OffsetSpec.for_timestamp(ms)
    found = _list(admin, {TopicPartition(topic, p): spec for p in partitions})
    return {p: found[(topic, p)] if found[(topic, p)] >= 0 else fallback[p] for p in partitions}


def input_scope(admin: AdminClient, topic: str, from_ms: int | None, to_ms: int | None) -> Scope:
    partitions = partition_ids(admin, topic)
    last = ends(admin, topic, partitions)
    start = at_time(admin, topic, partitions, from_ms, last)
    end = last if to_ms is None else at_time(admin, topic, partitions, to_ms, last)
    if from_ms is not None and to_ms is not None and to_ms < from_ms:
        raise AuditError("--to is before --from")
    return Scope(topic, from_ms, to_ms, {p: (start[p], max(start[p], end[p])) for p in partitions})


def boundaries(admin: AdminClient, scope: Scope, times: Iterable[int]) -> list[tuple[int, int, int]]:
    """(partition, time, first offset appended at or after time) for every probe time."""
    partitions = sorted(scope.partitions)
    rows: list[tuple[int, int, int]] = []
    pending = sorted(set(times))
    for start in range(0, len(pending), PROBES_PER_REQUEST):
        futures = []
        for ms in pending[start:start + PROBES_PER_REQUEST]:
            request = {TopicPartition(scope.topic, p): OffsetSpec.for_timestamp(ms) for p in partitions}
            futures.append((ms, admin.list_offsets(request, isolation_level=IsolationLevel.READ_COMMITTED,
                                                   request_timeout=30)))
        for ms, by_partition in futures:
            for tp, future in by_partition.items():
                try:
                    offset = future.result().offset
                except KafkaException as exc:
                    raise AuditError(f"cannot list offsets of {scope.topic}: {exc.args[0].str()}") from exc
                rows.append((tp.partition, ms, offset if offset >= 0 else scope.partitions[tp.partition][1]))
    return rows


def timestamp_types(admin: AdminClient, topics: list[str]) -> dict[str, str]:
    """message.timestamp.type of each topic (CreateTime or LogAppendTime)."""
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics]
    out: dict[str, str] = {}
    try:
        for resource, future in admin.describe_configs(resources).items():
            out[resource.name] = future.result()["message.timestamp.type"].value
    except KafkaException as exc:
        raise AuditError(f"cannot describe topics {topics}: {exc.args[0].str()}") from exc
    return out
