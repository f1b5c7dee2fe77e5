"""Write consent changes: one transaction holds the receipts and the users' new states.

Serialisation without a lock service: every writer of consent.state partition P uses the
transactional id ``consent-writer-P``. Acquiring P (``init_transactions``) fences any other
writer of P and waits out its open transaction; the new owner then reads P to its end, so
it starts from every committed state. A fenced writer cannot commit, re-acquires, re-reads,
and retries. Two writers racing on one user therefore never lose an update, and the
per-user version increases by exactly one per change.

A change counts as acknowledged only once it is readable with read_committed (the commit
markers are written after ``commit_transaction`` returns): a gate that fetches activity
after that moment is guaranteed to apply the change first.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import KafkaException, Message, Producer, TopicPartition
from consentgate.connectors.kafka import admin, consumer, partition_for, producer
from consentgate.connectors.retry import Backoff, Failure, RetryPolicy, abort, classify
from consentgate.connectors.reader import (
    ReadTimeout,
    partitions_of,
    read_until,
    stable_ends,
)
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.errors import RecordError
from consentgate.schemas.records import EPOCH, consent_from_avro, consent_to_avro
from consentgate.streams.metrics import ConsentMetrics
from consentgate.streams.consent_rules import check_grant, check_tier, with_grant, with_tier, without_grants

from consentgate.catalog import Catalog
from consentgate.errors import ConsentGateError, ConsentRequestError
from consentgate.model import ConsentLookup, ConsentState, Erased, Grant
from consentgate.pseudonyms import key_id, pseudonym
from consentgate.settings import Settings

log = logging.getLogger("consentgate.consent_writer")

# Every failure is retried (after releasing what it broke) for up to a minute, with jitter so that
# two writers fencing each other do not retry in lockstep.
RETRY = RetryPolicy(Backoff(0.05, 2.0, jitter=True), deadline_s=60.0, retry_on=frozenset(Failure))
VERSION_HEADER = "consent-version"
RECEIPT_HEADER = "consent-receipt"

# topic, key, value, partition (None: by key), the user's consent version, the receipt id
_Output = tuple[str, str, bytes | None, int | None, int, str]


class ConsentWriteError(ConsentGateError):
    """A consent change could not be committed."""


@dataclass(frozen=True)
class ConsentRequest:
    action: str  # grant | revoke | erase | tier
    user_id: str
    category: str | None = None
    purpose: str | None = None
    expires_at: datetime | None = None
    tier: str | None = None
    plan: str | None = None
    source: str = "cli"
    jurisdiction: str | None = None
    notice_version: str | None = None
    terms_version: int | None = None  # imports of historical grants only; default: the catalog's current
    # Who asked, and how (the consent service fills these from the verified token, never from free text).
    issuer: str | None = None  # the token's issuer
    subject: str | None = None  # the token's subject: the user, or the platform back-end acting as admin
    gpc: bool = False  # the request carried Sec-GPC: 1 (recorded only; it never creates a grant)
    collection_method: str | None = None  # e.g. web_page, api, admin_api


@dataclass
class _Owned:
    """A consent.state partition this writer holds the transactional id of."""

    producer: Producer
    states: dict[str, ConsentLookup] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)


class ConsentWriter:
    def __init__(self, settings: Settings, catalog: Catalog,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 metrics: ConsentMetrics | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.metrics = metrics or ConsentMetrics()
        self.topics = TopicNames.of(settings, catalog)
        self._clock = clock
        self._registry = registry_client(settings)
        self._codecs = Codecs(self._registry)
        self._encode_change = self._codecs["ConsentChange"].writer_for(self.topics.consent_changes)
        self._encode_state = self._codecs["ConsentState"].writer_for(self.topics.consent_state)
        self._encode_retraction = self._codecs["Retraction"].writer_for(self.topics.retractions)
        self._admin = admin(settings)
        probe = consumer(settings, f"consent-writer-probe-{uuid.uuid4()}")
        try:
            self._partitions = len(partitions_of(probe, self.topics.consent_state))
        finally:
            probe.close()
        self._owned: dict[int, _Owned] = {}
        self._policy = RETRY

    def close(self) -> None:
        for owned in self._owned.values():
            owned.producer.flush(5)
        self._owned.clear()
        self._registry.close()

    def __enter__(self) -> ConsentWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def warm(self) -> None:
        """Take and read every consent.state partition now, so that later changes do not pay for it."""
        for partition in range(self._partitions):
            self._acquire(partition)

    def partition_of(self, user_id: str) -> int:
        return partition_for(user_id.encode(), self._partitions)

    # -- reading -------------------------------------------------------------------------

    def _read_partition(self, partition: int, wanted: frozenset[str] = frozenset()
                        ) -> tuple[dict[str, ConsentLookup], dict[str, int], set[str]]:
        """States and versions of the partition's users, and which of the ``wanted`` receipts it holds."""
        tp = TopicPartition(self.topics.consent_state, partition)
        ends = stable_ends(self._admin, [tp])
        # A fresh consumer each time: right after a re-assign librdkafka can still report the previous
        # position, and a reader that had reached the end would then stop before reading anything.
        reader = consumer(self.settings, f"consent-writer-reader-{uuid.uuid4()}")
        reader.assign([TopicPartition(tp.topic, partition, -2)])
        states: dict[str, ConsentLookup] = {}
        versions: dict[str, int] = {}
        found: set[str] = set()
        try:
            records = list(read_until(reader, ends))
        finally:
            reader.close()
        for msg in records:
            self._apply_record(msg, partition, states, versions, wanted, found)
        return states, versions, found

    def _apply_record(self, msg: Message, partition: int, states: dict[str, ConsentLookup],
                      versions: dict[str, int], wanted: frozenset[str], found: set[str]) -> None:
        """Fold one consent.state record into ``states``. An unreadable record affects only its own user,
        who is taken to hold no grants (what the gate enforces for them), so that every user of the
        partition, that one included, can still be granted, revoked, erased and shown."""
        try:
            user = (msg.key() or b"").decode()
        except UnicodeDecodeError:
            user = ""
        if not user:
            log.error("consent.state record at %s/%d has no readable user key; ignored", partition, msg.offset())
            return
        # A tombstone has no body, so every record carries its version in a header too.
        for name, raw in msg.headers() or ():
            try:
                if name == VERSION_HEADER and raw:
                    versions[user] = max(versions.get(user, 0), int(raw))
                elif name == RECEIPT_HEADER and wanted and raw and raw.decode() in wanted:
                    found.add(raw.decode())
            except (ValueError, UnicodeDecodeError):
                log.error("consent.state record at %s/%d has an unreadable %s header", partition, msg.offset(), name)
        if msg.value() is None:
            states[user] = Erased(user)
            return
        try:
            state = consent_from_avro(self._codecs["ConsentState"].decode(msg.value(), msg.topic(), partition,
                                                                          msg.offset()))
            if state.user_id != user:
                raise ValueError(f"key {user!r} holds the state of {state.user_id!r}")
        except (RecordError, KeyError, TypeError, ValueError) as exc:
            log.error("unreadable consent.state record at %s/%d for a user (%s); the user is taken to hold no "
                      "grants until a valid state is written", partition, msg.offset(), exc)
            self.metrics.corrupt.inc()
            states[user] = ConsentState(user, versions.get(user, 0), EPOCH, "free", None, ())
            return
        states[user] = state
        versions[user] = max(versions.get(user, 0), state.version)

    def show(self, user_id: str) -> ConsentLookup:
        """The user's committed consent, read from consent.state."""
        return self._read_partition(self.partition_of(user_id))[0].get(user_id)

    def current(self, user_id: str) -> ConsentLookup:
        """The user's consent as this writer last committed or read it: no read once ``warm()`` ran."""
        owned = self._owned.get(self.partition_of(user_id))
        return owned.states.get(user_id) if owned is not None else self.show(user_id)

    # -- writing -------------------------------------------------------------------------

    def _acquire(self, partition: int, wanted: frozenset[str] = frozenset()) -> tuple[_Owned, set[str]]:
        """Own ``partition`` (reading it if newly taken) and say which ``wanted`` receipts it holds."""
        owned = self._owned.get(partition)
        if owned is not None:
            return owned, set()
        txn_id = f"{self.settings.topic_prefix}consent-writer-{partition}"
        prod = producer(self.settings, **{"transactional.id": txn_id, "transaction.timeout.ms": 30000})
        prod.init_transactions(30)  # fences every other writer of this partition
        states, versions, found = self._read_partition(partition, wanted)
        owned = self._owned[partition] = _Owned(prod, states, versions)
        return owned, found

    def apply(self, requests: list[ConsentRequest]) -> list[dict[str, Any]]:
        """Validate and commit ``requests``; returns their ConsentChange receipts in order."""
        now = self._clock()
        try:
            for req in requests:
                self._validate(req, now)
        except ConsentRequestError:
            self.metrics.refused.inc()
            raise
        receipts: list[dict[str, Any]] = [{} for _ in requests]
        by_partition: dict[int, list[int]] = {}
        for index, req in enumerate(requests):
            by_partition.setdefault(self.partition_of(req.user_id), []).append(index)
        for partition, indexes in sorted(by_partition.items()):
            for index, receipt in zip(indexes, self._commit(partition, [requests[i] for i in indexes], now)):
                receipts[index] = receipt
                self.metrics.changes.labels(requests[index].action).inc()
        return receipts

    def _validate(self, req: ConsentRequest, now: datetime) -> None:
        if not req.user_id:
            raise ConsentRequestError("a user id is required")
        if req.action == "grant":
            check_grant(self.catalog, req.category or "", req.purpose or "", req.expires_at, now, req.tier,
                        req.plan, req.terms_version)
        elif req.action == "revoke":
            if req.purpose is not None and req.purpose not in self.catalog.purposes:
                raise ConsentRequestError(f"unknown purpose {req.purpose!r}")
            if req.category is not None and req.category not in self.catalog.categories:
                raise ConsentRequestError(f"unknown category {req.category!r}")
        elif req.action == "tier":
            check_tier(req.tier, req.plan)
        elif req.action != "erase":
            raise ConsentRequestError(f"unknown consent action {req.action!r}")

    def _commit(self, partition: int, requests: list[ConsentRequest], now: datetime) -> list[dict[str, Any]]:
        # Receipts of an attempt whose commit failed with an unknown outcome: a writer fenced while
        # committing may still have committed, so before trying again the re-read partition is checked.
        unsure: list[dict[str, Any]] = []

        def attempt() -> list[dict[str, Any]]:
            nonlocal unsure
            try:
                owned, found = self._acquire(partition, frozenset(r["receipt_id"] for r in unsure))
            except (KafkaException, ReadTimeout):  # the broker is away: take the partition again later
                self._release(partition, fresh_metadata=True)
                raise
            if unsure and found:
                if len(found) != len(unsure):  # one transaction: all of it is there or none
                    raise ConsentWriteError(f"partition {partition} holds {len(found)} of {len(unsure)} "
                                            "receipts of one transaction")
                self._await_visible(partition)
                return unsure
            unsure = []
            states = dict(owned.states)
            versions = dict(owned.versions)
            outputs: list[_Output] = []
            receipts = [self._change(req, states, versions, now, partition, outputs) for req in requests]
            prod = owned.producer
            committing = False
            try:
                prod.begin_transaction()
                for topic, key, value, part, version, receipt_id in outputs:
                    kwargs: dict[str, Any] = {"partition": part} if part is not None else {}
                    prod.produce(topic, value=value, key=key.encode(),
                                 headers=[(VERSION_HEADER, str(version).encode()),
                                          (RECEIPT_HEADER, receipt_id.encode())], **kwargs)
                committing = True
                prod.commit_transaction(30)  # a failed delivery fails the commit
            except KafkaException as exc:
                failure = classify(exc.args[0])
                if committing or failure is not Failure.ABORTABLE or not abort(prod):
                    # Fenced, fatal, or the commit's outcome is unknown: take the partition again. Its new
                    # init_transactions settles the open transaction, and the re-read shows whether it landed.
                    self._release(partition)
                    unsure = receipts if committing else []
                raise
            owned.states, owned.versions = states, versions
            self._await_visible(partition)
            return receipts

        try:
            return self._policy.run(attempt, what=f"consent change on {self.topics.consent_state}[{partition}]")
        except (KafkaException, ReadTimeout) as exc:
            raise ConsentWriteError(f"consent change not committed within {self._policy.deadline_s:.0f}s: "
                                    f"{exc}") from exc

    def _release(self, partition: int, fresh_metadata: bool = False) -> None:
        """Give up the partition's producer; it is taken (and the partition re-read) on the next attempt."""
        self._owned.pop(partition, None)
        if fresh_metadata:
            self._admin = admin(self.settings)  # a client can keep stale metadata from before a restart

    def _await_visible(self, partition: int, timeout: float = 60.0) -> None:
        """Return once everything written to the partition so far is readable with read_committed.

        While this writer holds the partition's transactional id nobody else writes to it, so
        the high watermark read after the commit covers the records just committed.
        """
        tp = TopicPartition(self.topics.consent_state, partition)
        committed = time.monotonic()
        deadline = committed + timeout
        written: int | None = None
        while True:
            try:
                if written is None:
                    written = stable_ends(self._admin, [tp], committed=False)[(tp.topic, partition)]
                if stable_ends(self._admin, [tp])[(tp.topic, partition)] >= written:
                    self.metrics.visible_seconds.observe(time.monotonic() - committed)
                    return
            except ReadTimeout:
                # The change is committed; only seeing it is delayed (e.g. a broker restart).
                self._admin = admin(self.settings)
                time.sleep(0.2)
            if time.monotonic() > deadline:
                raise ReadTimeout(f"consent change on {tp.topic}[{partition}] committed but not visible "
                                  f"within {timeout}s")
            time.sleep(0.005)

    def _change(self, req: ConsentRequest, states: dict[str, ConsentLookup], versions: dict[str, int],
                now: datetime, partition: int, outputs: list[_Output]
                ) -> dict[str, Any]:
        current = states.get(req.user_id)
        version = versions.get(req.user_id, 0) + 1
        receipt_id = str(uuid.uuid4())
        new_state: ConsentLookup
        if req.action == "grant":
            assert req.category and req.purpose
            terms = req.terms_version or self.catalog.purposes[req.purpose].terms_version
            grant = Grant(req.category, req.purpose, now, req.expires_at, terms, receipt_id)
            new_state = with_grant(current, req.user_id, grant, version, now, req.tier, req.plan)
        elif req.action == "revoke":
            if not isinstance(current, ConsentState):
                raise ConsentRequestError(f"user {req.user_id!r} has no consent to revoke")
            new_state = without_grants(current, version, now, req.category, req.purpose)
        elif req.action == "tier":
            assert req.tier
            new_state = with_tier(current, req.user_id, version, now, req.tier, req.plan)
        else:
            new_state = Erased(req.user_id)
        receipt = {
            "receipt_id": receipt_id, "user_id": req.user_id, "action": req.action, "category": req.category,
            "purpose": req.purpose, "at": now, "source": req.source,
            "terms_version": (req.terms_version or self.catalog.purposes[req.purpose].terms_version)
            if req.action == "grant" and req.purpose else None,
            "notice_version": req.notice_version, "jurisdiction": req.jurisdiction, "expires_at": req.expires_at,
            "tier": new_state.tier if isinstance(new_state, ConsentState) else None,
            "plan": new_state.plan if isinstance(new_state, ConsentState) else None,
            "consent_version": version,
            "issuer": req.issuer, "subject": req.subject, "gpc": req.gpc,
            "collection_method": req.collection_method,
        }
        outputs.append((self.topics.consent_changes, req.user_id, self._encode_change(receipt), None, version,
                        receipt_id))
        if isinstance(new_state, ConsentState):
            value: bytes | None = self._encode_state(consent_to_avro(new_state))
        else:
            value = None
            secret = self.settings.require_secret()
            for purpose in self.catalog.purposes.values():
                nym = pseudonym(secret, purpose.name, req.user_id)
                outputs.append((self.topics.retractions, nym, self._encode_retraction({
                    "pseudonym": nym, "key_id": key_id(secret), "purpose": purpose.name,
                    "sink_topic": self.topics.training[purpose.name], "requested_at": now,
                    "consent_version": version}), None, version, receipt_id))
        outputs.append((self.topics.consent_state, req.user_id, value, partition, version, receipt_id))
        states[req.user_id] = new_state
        versions[req.user_id] = version
        return receipt
