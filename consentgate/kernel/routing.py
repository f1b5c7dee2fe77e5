"""What one fetched batch owes to which topic: the gate's routing as one pure function.

``ReferenceKernel.route(batch, lookup, now_ms)`` takes the fetched records (values and
coordinates), a consent lookup and the decision time (the clock is the caller's), and returns
the encoded records per output topic with the counts the worker exports. No Kafka, no registry,
no clock reads. It is the readable reference the compiled kernel (``consentgate._kernel``) is held
byte-identical to; the gate may use either.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from consentgate.kernel.errors import (
    ImpossibleTimestamp,
    MissingValue,
    OversizedRecord,
    RecordError,
)
from consentgate.kernel.plan import OutputPlan
from consentgate.kernel.reference import DecodedEvent, check_event, decode_activity

from consentgate.catalog import Catalog
from consentgate.decision import decide
from consentgate.model import ActivityEvent, ConsentLookup, ConsentState, Decision, Outcome
from consentgate.pseudonyms import key_id, pseudonym, record_id
from consentgate.quality import Assessment, assess
from consentgate.schemas.fastwrite import compile_writer
from consentgate.streams.outputs import DLQ_VALUE_BYTES

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MESSAGE_CHARS = 1000
Lookup = Callable[[str], ConsentLookup]
Encoded = tuple[bytes | None, bytes]  # (key, value) as produced to Kafka


class Fetched(NamedTuple):
    """One fetched input record: what the kernel needs of a ``confluent_kafka.Message``."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: int | None = None  # Kafka timestamp in ms; None or negative when the broker gave none


@dataclass
class BatchResult:
    """The encoded outputs of one batch and the counts the worker exports."""

    outputs: dict[str, list[Encoded]]  # topic -> records in decision order
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (purpose, category, passed|reason)
    dead_letters: Counter[str] = field(default_factory=Counter)  # error class -> records
    decisions: int = 0
    records_passed: int = 0  # decided records that passed for at least one purpose
    deferred: list[int] = field(default_factory=list)  # indexes written with a schema id the kernel does not read


@dataclass(frozen=True)
class KernelConfig:
    """Everything a kernel needs besides the batch: fixed for a worker's life."""

    catalog: Catalog
    secret: bytes
    decisions: OutputPlan
    dead_letters: OutputPlan
    contributions: OutputPlan
    training: dict[str, OutputPlan]  # purpose -> its sink's plan
    known_schema_ids: frozenset[int]  # ActivityEvent writer ids identical to the reader schema
    worker: str
    clock_skew_ms: int = 300_000
    max_record_bytes: int = 1_000_000
    dlq_value_bytes: int = DLQ_VALUE_BYTES


def iso(millis: int) -> str:
    """``datetime.isoformat()`` of a UTC time in epoch milliseconds."""
    return (EPOCH + timedelta(milliseconds=millis)).isoformat()


def check_time(occurred_at: int, now_ms: int, clock_skew_ms: int) -> None:
    """Times beyond the clock-skew allowance, or before 1970, are impossible (SPEC §3)."""
    if occurred_at > now_ms + clock_skew_ms:
        raise ImpossibleTimestamp(f"occurred_at {iso(occurred_at)} is beyond the clock-skew allowance "
                                  f"({iso(now_ms)} + {clock_skew_ms} ms)")
    if occurred_at < 0:
        raise ImpossibleTimestamp(f"occurred_at {iso(occurred_at)} is before 1970")


class ReferenceKernel:
    """The routing in plain Python over the project's own modules (decision, pseudonyms, quality, fastwrite)."""

    def __init__(self, config: KernelConfig, schemas: dict[str, dict[str, Any]]) -> None:
        """``schemas``: contract name -> registered schema (JSON form) used by the plans."""
        self.config = config
        self._known = set(config.known_schema_ids)
        self._key_id = key_id(config.secret)

        def writer(plan: OutputPlan) -> Callable[[dict[str, Any]], bytes]:
            compiled = compile_writer(schemas[plan.contract], plan.header)
            assert compiled is not None, plan.contract
            return compiled

        self._decision = writer(config.decisions)
        self._dead_letter = writer(config.dead_letters)
        self._contribution = writer(config.contributions)
        self._training = {p: writer(plan) for p, plan in config.training.items()}

    def learn_schema_id(self, schema_id: int) -> None:
        """Decode records written with ``schema_id`` too (the codec found it equal to the reader schema)."""
        self._known.add(schema_id)

    @property
    def known_schema_ids(self) -> frozenset[int]:
        """The ActivityEvent writer schema ids this kernel decodes (others are deferred)."""
        return frozenset(self._known)

    def route(self, batch: Sequence[Fetched], lookup: Lookup, now_ms: int) -> BatchResult:
        """Decide ``batch`` at ``now_ms``; records with an unknown writer schema id are left in ``deferred``."""
        cfg = self.config
        result = BatchResult({plan.topic: [] for plan in (cfg.decisions, cfg.dead_letters, cfg.contributions,
                                                           *cfg.training.values())})
        now = EPOCH + timedelta(milliseconds=now_ms)
        for index, record in enumerate(batch):
            try:
                event = self._read(record, now_ms)
            except RecordError as exc:
                result.outputs[cfg.dead_letters.topic].append((None, self._dead_letter(
                    dead_letter(record, exc, now_ms, cfg.worker, cfg.dlq_value_bytes))))
                result.dead_letters[type(exc).__name__] += 1
                continue
            if event is None:
                result.deferred.append(index)
                continue
            self._decide(record, event, lookup(event.user_id), now, now_ms, result)
        return result

    def _read(self, record: Fetched, now_ms: int) -> DecodedEvent | None:
        value = record.value
        if not value:
            raise MissingValue("input record has no value")
        if len(value) > self.config.max_record_bytes:
            raise OversizedRecord(f"record of {len(value)} bytes exceeds max_record_bytes="
                                  f"{self.config.max_record_bytes}")
        if len(value) >= 5 and value[0] == 0 and int.from_bytes(value[1:5], "big") not in self._known:
            return None  # another writer schema: the registry-backed codec resolves it
        event = decode_activity(value)
        check_event(event)
        check_time(event.occurred_at, now_ms, self.config.clock_skew_ms)
        return event

    def _decide(self, record: Fetched, decoded: DecodedEvent, consent: ConsentLookup, now: datetime, now_ms: int,
                result: BatchResult) -> None:
        cfg = self.config
        event = ActivityEvent(decoded.event_id, decoded.user_id, decoded.category,
                              EPOCH + timedelta(milliseconds=decoded.occurred_at), decoded.source, decoded.payload)
        decision = decide(event, consent, cfg.catalog, now)
        user_key = event.user_id.encode()
        result.outputs[cfg.decisions.topic].append((user_key, self._decision(
            decision_record(decision, now_ms, record))))
        result.decisions += 1
        assessment: Assessment | None = None
        passed_any = False
        for outcome in decision.outcomes:
            if not outcome.passed:
                assert outcome.reason is not None
                result.outcomes[(outcome.purpose, event.category, outcome.reason.value)] += 1
                continue
            assert isinstance(consent, ConsentState)
            passed_any = True
            nym = pseudonym(cfg.secret, outcome.purpose, event.user_id)
            rid = record_id(cfg.secret, outcome.purpose, event.event_id)
            result.outputs[cfg.training[outcome.purpose].topic].append((nym.encode(), self._training[outcome.purpose](
                training_record(event, outcome, cfg.catalog, nym, rid, self._key_id, consent.version))))
            if assessment is None:
                assessment = assess(event.category, event.payload)
            result.outputs[cfg.contributions.topic].append((user_key, self._contribution(
                contribution_record(event, outcome, consent, assessment, rid, self._key_id))))
            result.outcomes[(outcome.purpose, event.category, "passed")] += 1
        result.records_passed += passed_any


def decision_record(decision: Decision, now_ms: int, record: Fetched) -> dict[str, Any]:
    return {"event_id": decision.event_id, "user_id": decision.user_id, "category": decision.category,
            "decided_at": now_ms,
            "outcomes": [{"purpose": o.purpose, "passed": o.passed, "reason": o.reason} for o in decision.outcomes],
            "consent_version": decision.consent_version,
            "input": {"topic": record.topic, "partition": record.partition, "offset": record.offset}}


def training_record(event: ActivityEvent, outcome: Outcome, catalog: Catalog, nym: str, rid: str, kid: str,
                    consent_version: int) -> dict[str, Any]:
    """Minimised to the fields the catalog keeps; every field of either TrainingRecord shape is filled."""
    assert outcome.grant is not None
    keep = catalog.purposes[outcome.purpose].categories[event.category].keep
    payload = event.payload
    return {"pseudonym": nym, "record_id": rid, "key_id": kid, "event_id": event.event_id,
            "purpose": outcome.purpose, "category": event.category, "occurred_at": event.occurred_at,
            "fields": {name: payload[name] for name in keep if name in payload},
            "receipt_id": outcome.grant.receipt_id, "consent_version": consent_version}


def contribution_record(event: ActivityEvent, outcome: Outcome, consent: ConsentState, assessment: Assessment,
                        rid: str, kid: str) -> dict[str, Any]:
    assert outcome.grant is not None
    return {"event_id": event.event_id, "record_id": rid, "key_id": kid, "purpose": outcome.purpose,
            "user_id": event.user_id, "category": event.category, "units": 1, "quality": assessment.quality,
            "fingerprint": assessment.fingerprint, "occurred_at": event.occurred_at, "tier": consent.tier,
            "plan": consent.plan, "receipt_id": outcome.grant.receipt_id, "consent_version": consent.version}


def dead_letter(record: Fetched, error: Exception, failed_at_ms: int, worker: str, bound: int) -> dict[str, Any]:
    """As ``streams.outputs.dead_letter``: key and value cut to ``bound``, the value's length and SHA-256 kept."""
    ts = record.timestamp
    key, value = record.key, record.value
    return {"key": key[:bound] if key is not None else None, "value": value[:bound] if value is not None else None,
            "value_length": len(value) if value is not None else None,
            "value_sha256": hashlib.sha256(value).hexdigest() if value is not None else None,
            "truncated": (key is not None and len(key) > bound) or (value is not None and len(value) > bound),
            "topic": record.topic, "partition": record.partition,
            "offset": record.offset, "timestamp": ts if ts is not None and ts >= 0 else None,
            "error_class": type(error).__name__, "message": str(error)[:MESSAGE_CHARS],
            "failed_at": failed_at_ms, "worker": worker}
