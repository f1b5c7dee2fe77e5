"""One retry and transaction policy for every worker.

Kafka errors are classified once (``classify``), the way librdkafka reports them: fenced (another
instance owns the transactional id), fatal (the producer is unusable), abortable (abort the
transaction and redo the batch), retriable (the same call may succeed later), or permanent. A
``RetryPolicy`` retries a call on the failures it names, with exponential backoff, for a number of
attempts or a time budget, and stops waiting when the worker is asked to stop. The transactional
steps every consume-transform-produce loop shares (``start_producer``, ``commit``, ``abort``) live
here too, so each worker keeps only its own logic. Clock, sleep and randomness are injected.
"""

from __future__ import annotations

import enum
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from confluent_kafka import KafkaError, KafkaException
from consentgate.connectors.reader import ReadTimeout

from consentgate.errors import ConsentGateError

log = logging.getLogger("consentgate.retry")
T = TypeVar("T")


class Failure(enum.Enum):
    FENCED = "fenced"
    FATAL = "fatal"
    ABORTABLE = "abortable"
    RETRIABLE = "retriable"
    PERMANENT = "permanent"


_FENCED_CODES = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH,
                           KafkaError.TRANSACTION_COORDINATOR_FENCED})
# Reported as not retriable by some calls, but they only mean the cluster is (for now) out of reach.
_TRANSIENT_CODES = frozenset({KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                              KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT})


def classify(err: KafkaError) -> Failure:
    """What a Kafka error asks of the caller; fencing first, since a fenced producer is also fatal."""
    if err.code() in _FENCED_CODES:
        return Failure.FENCED
    if err.fatal():
        return Failure.FATAL
    if err.txn_requires_abort():
        return Failure.ABORTABLE
    if err.retriable() or err.code() in _TRANSIENT_CODES:
        return Failure.RETRIABLE
    return Failure.PERMANENT


def failure_of(exc: BaseException) -> Failure | None:
    """The failure an exception stands for; None for anything that is not a Kafka or read failure."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return classify(exc.args[0])
    if isinstance(exc, ReadTimeout):
        return Failure.RETRIABLE
    return None


class Stopped(ConsentGateError):
    """The worker was asked to stop while waiting to try again."""


@dataclass(frozen=True)
class Backoff:
    """Exponential delays: ``base`` * 2**attempt, at most ``cap``; with jitter, uniform in [0, delay]
    (two writers that fence each other then do not retry in lockstep)."""

    base: float
    cap: float
    jitter: bool = False

    def delay(self, attempt: int, rng: random.Random) -> float:
        delay = min(self.cap, self.base * 2 ** min(attempt, 32))
        return rng.uniform(0, delay) if self.jitter else delay


def _never() -> bool:
    return False


@dataclass
class RetryPolicy:
    """Retry a call on the failures in ``retry_on``; give up after ``attempts`` calls or once
    ``deadline_s`` has passed (the last error is raised), whichever comes first; None: no such limit."""

    backoff: Backoff
    attempts: int | None = None
    deadline_s: float | None = None
    retry_on: frozenset[Failure] = frozenset({Failure.RETRIABLE})
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)

    def run(self, call: Callable[[], T], *, what: str, stopping: Callable[[], bool] = _never) -> T:
        started = self.clock()
        for attempt in itertools.count():
            if stopping():
                raise Stopped(f"stopped before {what} succeeded")
            try:
                return call()
            except Exception as exc:
                failure = failure_of(exc)
                if failure not in self.retry_on or self._exhausted(attempt, started):
                    raise
                delay = self.backoff.delay(attempt, self.rng)
                log.warning("%s failed (%s: %s); retrying in %.2fs", what, failure.value, exc, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _exhausted(self, attempt: int, started: float) -> bool:
        if self.attempts is not None and attempt + 1 >= self.attempts:
            return True
        return self.deadline_s is not None and self.clock() - started >= self.deadline_s


@dataclass
class Pause:
    """Backoff between whole-batch retries of a loop: grows while failures follow each other, and
    starts again from the base after a success."""

    backoff: Backoff
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def after_failure(self) -> None:
        self.sleep(self.backoff.delay(self.failures, self.rng))
        self.failures += 1

    def after_success(self) -> None:
        self.failures = 0


class TransactionalProducer(Protocol):
    """What the transaction steps need of confluent_kafka's Producer (a fake stands in for tests)."""

    def init_transactions(self, timeout: float) -> None: ...

    def commit_transaction(self, timeout: float) -> None: ...

    def abort_transaction(self, timeout: float) -> None: ...


P = TypeVar("P", bound=TransactionalProducer)


def start_producer(make: Callable[[], P], policy: RetryPolicy, stopping: Callable[[], bool] = _never) -> P:
    """A new transactional producer whose ``init_transactions`` succeeded: it fenced any previous
    holder of its transactional id and settled that holder's open transaction."""

    def attempt() -> P:
        prod = make()
        prod.init_transactions(60)
        return prod

    return policy.run(attempt, what="init_transactions", stopping=stopping)


def commit(prod: TransactionalProducer, policy: RetryPolicy) -> None:
    """Commit the open transaction, retrying retriable errors; any other failure is raised for the
    caller to classify (abortable: abort and redo; fenced or fatal: replace the producer)."""
    policy.run(lambda: prod.commit_transaction(60), what="commit_transaction")


def abort(prod: TransactionalProducer) -> bool:
    """Abort the open transaction (none open is fine). False: the producer cannot abort (fenced,
    fatal, or out of reach) and must be replaced, which settles the transaction instead."""
    try:
        prod.abort_transaction(60)
        return True
    except KafkaException as exc:
        err = exc.args[0]
        if err.code() == KafkaError._STATE:  # no transaction was open
            return True
        log.warning("abort failed (%s): %s", classify(err).value, err.str())
        return False
