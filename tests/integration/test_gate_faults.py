"""Bad input, consent races, kill -9 and rebalances: nothing leaks, nothing is lost or doubled."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from consentgate.connectors.kafka import admin, consumer, producer
from consentgate.connectors.reader import stable_ends
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.records import activity_to_avro
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter

from consentgate.catalog import Catalog
from consentgate.decision import decide
from consentgate.model import ActivityEvent, ConsentState, Grant
from consentgate.pseudonyms import record_id
from consentgate.settings import Settings
from tests.conftest import SettingsFactory
from tests.helpers import (
    GateThread,
    produce_events,
    produce_raw,
    run_gate,
    values,
    wait_for,
)

GEN, REC, ADS = "train_ai_system.generative", "train_ai_system.recommendation", "train_ai_system.ads_ranking"


def test_bad_input_goes_to_the_dlq_and_good_records_pass(make_settings: SettingsFactory, topics: TopicNames,
                                                         catalog: Catalog) -> None:
    settings = make_settings(max_record_bytes=2048)
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", "u1", "post", GEN)])
    t = datetime.now(timezone.utc)
    with registry_client(settings) as registry:
        codecs = Codecs(registry)
        act = codecs["ActivityEvent"]

        def enc(event: ActivityEvent) -> bytes:
            return act.encode(topics.activity, activity_to_avro(event))

        good = [enc(ActivityEvent(f"g{i}", "u1", "post", t, "web", {"text": f"good {i}"})) for i in range(4)]
        mismatch = act.encode(topics.activity, {**activity_to_avro(ActivityEvent("pm", "u1", "post", t, "web", {})),
                                                "payload": ("io.consentgate.v1.SearchPayload", {"query": "q"})})
        other_contract = codecs["Decision"].encode(topics.decisions, {
            "event_id": "d", "user_id": "u1", "category": "post", "decided_at": 0, "outcomes": [],
            "consent_version": None, "input": {"topic": "t", "partition": 0, "offset": 0}})
        bad = [
            (b"not avro at all", "UndecodableRecord"),
            (b"\x00\x00\x0f\x42\x40\x02xx", "UnknownSchemaId"),
            (good[0][:-4], "UndecodableRecord"),
            (enc(ActivityEvent("big", "u1", "post", t, "web", {"text": "x" * 5000})), "OversizedRecord"),
            (enc(ActivityEvent("noid", "", "post", t, "web", {"text": "t"})), "MissingIdentifier"),
            (enc(ActivityEvent("future", "u1", "post", t + timedelta(days=1), "web", {"text": "t"})),
             "ImpossibleTimestamp"),
            (mismatch, "PayloadMismatch"),
            (None, "MissingValue"),
            (other_contract, "SchemaMismatch"),
        ]
    # Good records before, between and after the bad ones; each entry: (value, expected error class or None).
    stream: list[tuple[bytes | None, str | None]] = [(good[0], None)]
    for i, (raw, cls) in enumerate(bad):
        stream.append((raw, cls))
        if i in (2, 5, 8):
            stream.append((good[{2: 1, 5: 2, 8: 3}[i]], None))
    produce_raw(settings, [(b"u1", raw) for raw, _ in stream])
    stats = run_gate(settings, catalog)

    dlq = sorted(values(settings, topics.dlq), key=lambda d: d["offset"])  # unkeyed: spread over partitions
    assert [(d["error_class"], d["offset"]) for d in dlq] == [(cls, i) for i, (_, cls) in enumerate(stream) if cls], [(d["error_class"], d["offset"], d["message"][:80]) for d in dlq]
    for entry in dlq:
        raw = stream[entry["offset"]][0]
        assert entry["topic"] == topics.activity and entry["partition"] == dlq[0]["partition"] and entry["worker"]
        assert entry["value"] == (None if raw is None else base64.b64encode(raw).decode())
    messages = {d["error_class"]: d["message"] for d in dlq}
    assert messages["OversizedRecord"] == f"record of {len(bad[3][0] or b'')} bytes exceeds max_record_bytes=2048"
    assert messages["MissingIdentifier"] == "record has an empty user_id"
    assert messages["PayloadMismatch"] == "category 'post' needs payload PostPayload, got SearchPayload"
    assert messages["MissingValue"] == "input record has no value"
    assert messages["ImpossibleTimestamp"].startswith("occurred_at ")
    decided = [(d["event_id"], d["outcomes"][1]["passed"]) for d in values(settings, topics.decisions)]
    assert decided == [("g0", True), ("g1", True), ("g2", True), ("g3", True)]
    assert stats.records_in == len(stream) and stats.dead_letters == len(bad) and stats.decisions == 4


def test_revocation_takes_effect_before_the_next_record(settings: Settings, topics: TopicNames,
                                                        catalog: Catalog) -> None:
    """Right after `revoke` returns, a record for that user and purpose never passes (100 times)."""
    users = [f"race-{i}" for i in range(100)]
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", u, "post", GEN) for u in users])
        with GateThread(settings, catalog) as running, registry_client(settings) as registry:
            codec = Codecs(registry)["ActivityEvent"]
            out = producer(settings)
            for u in users:
                pre = ActivityEvent(f"{u}-before", u, "post", datetime.now(timezone.utc), "web", {"text": "before"})
                out.produce(topics.activity, codec.encode(topics.activity, activity_to_avro(pre)), u.encode())
                writer.apply([ConsentRequest("revoke", u, "post", GEN)])
                post = ActivityEvent(f"{u}-after", u, "post", datetime.now(timezone.utc), "web", {"text": "after"})
                out.produce(topics.activity, codec.encode(topics.activity, activity_to_avro(post)), u.encode())
                out.poll(0)
            assert out.flush(30) == 0
            wait_for(lambda: running.gate.stats.decisions >= 200, what="200 decisions")
    decisions = {d["event_id"]: d["outcomes"][1] for d in values(settings, topics.decisions)}
    after = {u: decisions[f"{u}-after"] for u in users}
    assert all(o == {"purpose": GEN, "passed": False, "reason": "no_grant"} for o in after.values()), after
    secret = settings.require_secret()
    passed_training = {r["record_id"] for r in values(settings, topics.training[GEN])}
    assert passed_training <= {record_id(secret, GEN, f"{u}-before") for u in users}
    assert running.gate.metrics.value("consentgate_revocation_enforcement_seconds_count") == 100


def test_racing_consent_writers_lose_no_update(settings: Settings, topics: TopicNames, catalog: Catalog) -> None:
    pairs = [(c, p.name) for p in catalog.purposes.values() for c in p.categories]
    halves = [pairs[::2], pairs[1::2]]
    users = ["contended-a", "contended-b"]
    errors: list[BaseException] = []

    def write(half: list[tuple[str, str]]) -> None:
        try:
            with ConsentWriter(settings, catalog) as writer:
                for category, purpose in half:
                    for user in users:
                        writer.apply([ConsentRequest("grant", user, category, purpose)])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(h,)) for h in halves]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errors == []
    with ConsentWriter(settings, catalog) as reader:
        for user in users:
            state = reader.show(user)
            assert isinstance(state, ConsentState)
            assert sorted((g.category, g.purpose) for g in state.grants) == sorted(pairs)
            assert state.version == len(pairs)
    versions = Counter((c["user_id"], c["consent_version"]) for c in values(settings, topics.consent_changes))
    assert versions == Counter({(u, v): 1 for u in users for v in range(1, len(pairs) + 1)})


# -- kill -9 and rebalances --------------------------------------------------------------------------------


def _population(settings: Settings, catalog: Catalog, n_users: int, n_events: int
                ) -> tuple[list[ActivityEvent], dict[str, ConsentState]]:
    requests: list[ConsentRequest] = []
    for i in range(n_users):
        u = f"user-{i}"
        if i % 2 == 0:
            requests.append(ConsentRequest("grant", u, "post", REC))
        if i % 3 == 0:
            requests.append(ConsentRequest("grant", u, "search", ADS))
        if i % 5 == 0:
            requests.append(ConsentRequest("grant", u, "post", GEN))
    states: dict[str, ConsentState] = {}
    with ConsentWriter(settings, catalog) as writer:
        for receipt in writer.apply(requests):
            st = states.get(receipt["user_id"]) or ConsentState(receipt["user_id"], 0, receipt["at"], "free", None)
            g = Grant(receipt["category"], receipt["purpose"], receipt["at"], None, receipt["terms_version"],
                      receipt["receipt_id"])
            states[receipt["user_id"]] = ConsentState(st.user_id, receipt["consent_version"], receipt["at"], "free",
                                                      None, (*st.grants, g))
    t = datetime.now(timezone.utc)
    cats = ["post", "search", "click", "conversation"]
    payloads = {"post": {"text": "p"}, "search": {"query": "q"}, "click": {"item_id": "i", "url": "u"},
                "conversation": {"text": "c", "thread_id": "t"}}
    events = [ActivityEvent(f"ev-{j}", f"user-{(j * 7) % n_users}", cats[j % 4], t, "web", payloads[cats[j % 4]])
              for j in range(n_events)]
    return events, states


def _expected(events: list[ActivityEvent], states: dict[str, ConsentState], catalog: Catalog
              ) -> set[tuple[str, str]]:
    now = datetime.now(timezone.utc)
    return {(e.event_id, o.purpose) for e in events for o in decide(e, states.get(e.user_id), catalog, now).outcomes
            if o.passed}


def _assert_exactly_once(settings: Settings, topics: TopicNames, events: list[ActivityEvent],
                         expected: set[tuple[str, str]]) -> None:
    decisions = Counter(d["event_id"] for d in values(settings, topics.decisions))
    assert decisions == Counter({e.event_id: 1 for e in events})
    training = Counter((r["record_id"], r["purpose"]) for t in topics.training.values() for r in values(settings, t))
    secret = settings.require_secret()
    assert training == Counter({(record_id(secret, p, e), p): 1 for e, p in expected})
    contributions = Counter((c["event_id"], c["purpose"]) for c in values(settings, topics.contributions))
    assert contributions == Counter({pair: 1 for pair in expected})


def _gate_process(settings: Settings, worker: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    for name in ("bootstrap_servers", "schema_registry_url", "topic_prefix", "group_id", "transactional_id_prefix",
                 "batch_size", "session_timeout_ms", "transaction_timeout_ms"):
        env[f"CONSENTGATE_{name.upper()}"] = str(getattr(settings, name))
    env["CONSENTGATE_PSEUDONYM_SECRET"] = settings.require_secret().decode()
    env["CONSENTGATE_DATA_DIR"] = str(settings.data_dir)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "consentgate.cli.main", "gate", "--worker-id", worker, *extra],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def _committed_decisions(settings: Settings, topics: TopicNames) -> int:
    client = admin(settings)
    parts = client.list_topics(topics.decisions, timeout=10).topics[topics.decisions].partitions
    return sum(stable_ends(client, [TopicPartition(topics.decisions, p) for p in parts]).values())


def _committed_inputs(settings: Settings, topics: TopicNames) -> int:
    """Input records the gate's group has committed (the activity topic is written without transactions)."""
    reader = consumer(settings, settings.group_id)
    try:
        parts = reader.list_topics(topics.activity, timeout=10).topics[topics.activity].partitions
        offsets = reader.committed([TopicPartition(topics.activity, p) for p in parts], timeout=30)
    finally:
        reader.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def test_kill_9_mid_stream_then_restart_is_exactly_once(make_settings: SettingsFactory, topics: TopicNames,
                                                        catalog: Catalog, tmp_path: Path) -> None:
    settings = make_settings(batch_size=100)
    events, states = _population(settings, catalog, 300, 6000)
    produce_events(settings, events)
    worker = _gate_process(settings, "w1", tmp_path / "w1.log")
    try:
        wait_for(lambda: _committed_decisions(settings, topics) >= 1500, timeout=120, what="progress")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    # Input offsets, not decision offsets: the input topic holds no transaction markers, so this counts
    # exactly the records the killed worker had committed. All 6000 would leave nothing to test.
    assert 0 < _committed_inputs(settings, topics) < 6000, "killed too late (or too early) to test anything"
    again = _gate_process(settings, "w1", tmp_path / "w1.log", "--until-idle", "4")
    assert again.wait(180) == 0, (tmp_path / "w1.log").read_text()[-3000:]
    _assert_exactly_once(settings, topics, events, _expected(events, states, catalog))


def test_two_workers_through_rebalances_are_exactly_once(make_settings: SettingsFactory, topics: TopicNames,
                                                          catalog: Catalog, tmp_path: Path) -> None:
    settings = make_settings(batch_size=100, session_timeout_ms=6000)
    events, states = _population(settings, catalog, 200, 8000)
    produce_events(settings, events[:4000])
    first = _gate_process(settings, "a", tmp_path / "a.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: _committed_decisions(settings, topics) >= 1000, timeout=120, what="first worker")
        second = _gate_process(settings, "b", tmp_path / "b.log", "--until-idle", "6")  # joins: rebalance
        produce_events(settings, events[4000:])
        wait_for(lambda: _committed_decisions(settings, topics) >= 5000, timeout=120, what="both workers")
        first.send_signal(signal.SIGTERM)  # leaves: rebalance again, b takes over every partition
        assert first.wait(60) == 0, (tmp_path / "a.log").read_text()[-3000:]
        assert second.wait(180) == 0, (tmp_path / "b.log").read_text()[-3000:]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    _assert_exactly_once(settings, topics, events, _expected(events, states, catalog))


def test_versions_keep_rising_across_an_erasure_when_another_writer_takes_over(
        settings: Settings, topics: TopicNames, catalog: Catalog) -> None:
    """Regression: a writer re-reading a partition must not reuse the version of an erasure."""
    with ConsentWriter(settings, catalog) as first:
        first.apply([ConsentRequest("grant", "phoenix", "post", GEN)])
        first.apply([ConsentRequest("erase", "phoenix")])
    with ConsentWriter(settings, catalog) as second:  # fences the first and re-reads the partition
        receipt = second.apply([ConsentRequest("grant", "phoenix", "post", GEN)])[0]
    assert receipt["consent_version"] == 3
    versions = [(c["action"], c["consent_version"]) for c in values(settings, topics.consent_changes)]
    assert versions == [("grant", 1), ("erase", 2), ("grant", 3)]


def test_a_fenced_writer_rereads_the_whole_partition(settings: Settings, topics: TopicNames,
                                                      catalog: Catalog) -> None:
    """Regression: re-reading a partition after being fenced must not trust a stale reader position
    (it once returned an empty partition and the next write dropped the other grants)."""
    with ConsentWriter(settings, catalog) as a, ConsentWriter(settings, catalog) as b:
        a.apply([ConsentRequest("grant", "pingpong", "post", GEN)])
        assert a.show("pingpong") is not None  # a's reader now sits at the partition's end
        b._acquire(b.partition_of("pingpong"))  # b fences a, writes nothing
        receipt = a.apply([ConsentRequest("grant", "pingpong", "post", REC)])[0]
        state = a.show("pingpong")
    assert receipt["consent_version"] == 2
    assert isinstance(state, ConsentState)
    assert sorted((g.category, g.purpose) for g in state.grants) == [("post", GEN), ("post", REC)]


def test_warming_a_writer_takes_every_partition(settings: Settings, topics: TopicNames, catalog: Catalog) -> None:
    """warm() takes every partition up front (the bench relies on it), fencing the other writer on all
    of them; that writer's next changes re-read and land at the right versions."""
    users = [f"warm-{i}" for i in range(12)]
    with ConsentWriter(settings, catalog) as a, ConsentWriter(settings, catalog) as b:
        a.apply([ConsentRequest("grant", u, "post", GEN) for u in users])
        b.warm()
        assert sorted(b._owned) == list(range(settings.partitions))
        receipts = a.apply([ConsentRequest("grant", u, "post", REC) for u in users])
    assert [(r["user_id"], r["consent_version"]) for r in receipts] == [(u, 2) for u in users]


def test_rereading_an_unchanged_partition_sees_every_state(settings: Settings, topics: TopicNames,
                                                           catalog: Catalog) -> None:
    """Regression, deterministic form of the race above: after assign(OFFSET_BEGINNING) librdkafka briefly
    reports the previous position, which equalled the end when nothing was written in between."""
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", "reread", "post", GEN)])
        partition = writer.partition_of("reread")
        first, _, _ = writer._read_partition(partition)
        second, _, _ = writer._read_partition(partition)
    assert "reread" in first and second == first


class _CommitFault:
    """A transactional producer whose next commit fails, either after committing or instead of it.

    This is what a writer sees when it is fenced, or loses its connection, while committing:
    the commit's outcome is unknown to it.
    """

    def __init__(self, real: Producer, *, commits: bool) -> None:
        self._real = real
        self._commits = commits

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def commit_transaction(self, timeout: float) -> None:
        if self._commits:
            self._real.commit_transaction(timeout)
        else:
            self._real.abort_transaction(timeout)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "injected: commit outcome unknown"))


def test_a_commit_with_unknown_outcome_is_applied_exactly_once(settings: Settings, topics: TopicNames,
                                                               catalog: Catalog) -> None:
    """Regression (seen in CI): a writer fenced while committing retried a change that had landed or had
    not. After such a failure the writer re-takes the partition and looks for the attempt's receipts."""
    receipts = []
    with ConsentWriter(settings, catalog) as writer:
        for user, commits in (("unsure-landed", True), ("unsure-lost", False)):
            writer.apply([ConsentRequest("grant", user, "post", GEN)])
            partition = writer.partition_of(user)
            owned, _ = writer._acquire(partition)
            owned.producer = _CommitFault(owned.producer, commits=commits)  # type: ignore[assignment]
            receipts.append(writer.apply([ConsentRequest("grant", user, "post", REC)])[0])
            state = writer.show(user)
            assert isinstance(state, ConsentState)
            assert (state.version, sorted(g.purpose for g in state.grants)) == (2, [GEN, REC])
    assert [(r["user_id"], r["consent_version"]) for r in receipts] == [("unsure-landed", 2), ("unsure-lost", 2)]
    changes = sorted((c["user_id"], c["purpose"], c["consent_version"]) for c in values(settings, topics.consent_changes))
    assert changes == [("unsure-landed", GEN, 1), ("unsure-landed", REC, 2), ("unsure-lost", GEN, 1),
                       ("unsure-lost", REC, 2)]
    committed = {c["receipt_id"] for c in values(settings, topics.consent_changes)}
    assert {r["receipt_id"] for r in receipts} <= committed


def test_sigterm_while_starting_exits_cleanly(settings: Settings, topics: TopicNames) -> None:
    """A worker told to stop before it has finished starting still exits 0 (it has written nothing)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    env.update({"CONSENTGATE_BOOTSTRAP_SERVERS": settings.require_bootstrap(),
                "CONSENTGATE_SCHEMA_REGISTRY_URL": settings.require_registry(),
                "CONSENTGATE_TOPIC_PREFIX": settings.topic_prefix, "CONSENTGATE_DATA_DIR": str(settings.data_dir),
                "CONSENTGATE_PSEUDONYM_SECRET": settings.require_secret().decode(),
                "CONSENTGATE_GROUP_ID": settings.group_id})
    for command in (["gate"], ["metering", "run"]):
        proc = subprocess.Popen([sys.executable, "-m", "consentgate.cli.main", *command], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Signal as soon as the worker catches SIGTERM (its first import installs the handler), while it is
        # still importing and connecting: no sleep, so a slow start cannot turn this into a default kill.
        wait_for(lambda: _catches(proc.pid, signal.SIGTERM), timeout=60, what="the SIGTERM handler")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, command


def _catches(pid: int, signum: int) -> bool:
    """True once the process has a handler for ``signum`` (the SigCgt mask in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False
