"""The one retry and transaction policy: every classification and every path, with a fake producer."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException
from consentgate.connectors.reader import ReadTimeout
from consentgate.connectors.retry import (
    Backoff,
    Failure,
    Pause,
    RetryPolicy,
    Stopped,
    abort,
    classify,
    commit,
    failure_of,
    start_producer,
)


def kafka(code: int, *, fatal: bool = False, retriable: bool = False, abortable: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, f"error {code}", fatal=fatal, retriable=retriable,
                                     txn_requires_abort=abortable))


@pytest.mark.parametrize(("error", "failure"), [
    (kafka(KafkaError._FENCED, fatal=True), Failure.FENCED),  # fenced wins over fatal
    (kafka(KafkaError.PRODUCER_FENCED), Failure.FENCED),
    (kafka(KafkaError.INVALID_PRODUCER_EPOCH, abortable=True), Failure.FENCED),
    (kafka(KafkaError._FATAL, fatal=True), Failure.FATAL),
    (kafka(KafkaError._INCONSISTENT, abortable=True), Failure.ABORTABLE),
    (kafka(KafkaError._TIMED_OUT), Failure.RETRIABLE),  # not flagged retriable, but transient
    (kafka(KafkaError.NOT_COORDINATOR, retriable=True), Failure.RETRIABLE),
    (kafka(KafkaError._STATE), Failure.PERMANENT),
])
def test_classify(error: KafkaException, failure: Failure) -> None:
    assert classify(error.args[0]) is failure
    assert failure_of(error) is failure


def test_failure_of_other_exceptions() -> None:
    assert failure_of(ReadTimeout("slow")) is Failure.RETRIABLE
    assert failure_of(ValueError("x")) is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def policy(clock: Clock, **kw: object) -> RetryPolicy:
    return RetryPolicy(Backoff(0.1, 0.4), sleep=clock.sleep, clock=clock, rng=random.Random(1), **kw)  # type: ignore[arg-type]


def failing(errors: list[Exception], result: str = "done") -> Callable[[], str]:
    def call() -> str:
        if errors:
            raise errors.pop(0)
        return result

    return call


def test_retries_retriable_errors_with_exponential_backoff() -> None:
    clock = Clock()
    errors: list[Exception] = [kafka(KafkaError._TRANSPORT)] * 4
    assert policy(clock).run(failing(errors), what="x") == "done"
    assert clock.slept == [0.1, 0.2, 0.4, 0.4]  # capped


def test_other_failures_are_raised_at_once() -> None:
    clock = Clock()
    for error in (kafka(KafkaError._FATAL, fatal=True), kafka(KafkaError._STATE), ValueError("bug")):
        with pytest.raises(type(error)):
            policy(clock).run(failing([error]), what="x")
    assert clock.slept == []


def test_attempts_and_deadline_bound_the_retries() -> None:
    clock = Clock()
    errors: list[Exception] = [kafka(KafkaError._TRANSPORT)] * 10
    with pytest.raises(KafkaException):
        policy(clock, attempts=3).run(failing(errors), what="x")
    assert clock.slept == [0.1, 0.2] and len(errors) == 7
    clock = Clock()
    errors = [kafka(KafkaError._TRANSPORT)] * 10
    with pytest.raises(KafkaException):
        policy(clock, deadline_s=0.65).run(failing(errors), what="x")
    assert clock.slept == [0.1, 0.2, 0.4] and clock.now == pytest.approx(0.7)


def test_retry_on_names_what_is_retried() -> None:
    clock = Clock()
    errors: list[Exception] = [kafka(KafkaError._FENCED), ReadTimeout("slow")]
    assert policy(clock, retry_on=frozenset(Failure)).run(failing(errors), what="x") == "done"
    assert clock.slept == [0.1, 0.2]


def test_stopping_ends_the_waiting() -> None:
    clock = Clock()
    errors: list[Exception] = [kafka(KafkaError._TRANSPORT)] * 10
    with pytest.raises(Stopped):
        policy(clock).run(failing(errors), what="x", stopping=lambda: len(clock.slept) >= 2)
    assert len(errors) == 8


def test_jitter_stays_within_the_delay() -> None:
    rng = random.Random(7)
    delays = [Backoff(0.05, 1.0, jitter=True).delay(n, rng) for n in range(10)]
    assert all(0 <= d <= min(1.0, 0.05 * 2 ** n) for n, d in enumerate(delays)) and len(set(delays)) == 10


def test_pause_grows_and_resets() -> None:
    clock = Clock()
    pause = Pause(Backoff(0.25, 1.0), sleep=clock.sleep)
    for _ in range(4):
        pause.after_failure()
    pause.after_success()
    pause.after_failure()
    assert clock.slept == [0.25, 0.5, 1.0, 1.0, 0.25]


class FakeProducer:
    """Records calls; each method raises the next scripted error for it, if any."""

    def __init__(self, **errors: list[Exception]) -> None:
        self.errors = errors
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        scripted = self.errors.get(name)
        if scripted:
            raise scripted.pop(0)

    def init_transactions(self, timeout: float) -> None:
        self._call("init")

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")


def test_start_producer_makes_a_new_client_per_attempt() -> None:
    clock = Clock()
    made: list[FakeProducer] = []
    script = [[kafka(KafkaError._TIMED_OUT)], [kafka(KafkaError._TRANSPORT, retriable=True)], []]

    def make() -> FakeProducer:
        made.append(FakeProducer(init=script[len(made)]))
        return made[-1]

    assert start_producer(make, policy(clock)) is made[2]
    assert [p.calls for p in made] == [["init"], ["init"], ["init"]]
    with pytest.raises(Stopped):
        start_producer(make, policy(clock), stopping=lambda: True)


def test_commit_retries_only_retriable_errors() -> None:
    clock = Clock()
    prod = FakeProducer(commit=[kafka(KafkaError.NOT_COORDINATOR, retriable=True)])
    commit(prod, policy(clock))
    assert prod.calls == ["commit", "commit"]
    prod = FakeProducer(commit=[kafka(KafkaError._INCONSISTENT, abortable=True)])
    with pytest.raises(KafkaException):
        commit(prod, policy(clock))
    assert prod.calls == ["commit"]


def test_abort_says_when_the_producer_must_be_replaced() -> None:
    assert abort(FakeProducer()) is True
    assert abort(FakeProducer(abort=[kafka(KafkaError._STATE)])) is True  # nothing was open
    assert abort(FakeProducer(abort=[kafka(KafkaError._FENCED, fatal=True)])) is False
    assert abort(FakeProducer(abort=[kafka(KafkaError._TIMED_OUT)])) is False
