from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic
from consentgate.connectors.kafka import admin
from consentgate.connectors.topics import TopicNames, create_topics, topic_specs
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.errors import (
    SchemaMismatch,
    UndecodableRecord,
    UnknownSchemaId,
)

from consentgate.catalog import Catalog
from consentgate.cluster import embedded
from consentgate.errors import ConfigurationError
from consentgate.settings import Settings
from tests.cluster import RunningCluster, embedded_cluster
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    env.update({"CONSENTGATE_BOOTSTRAP_SERVERS": settings.require_bootstrap(),
                "CONSENTGATE_SCHEMA_REGISTRY_URL": settings.require_registry(),
                "CONSENTGATE_TOPIC_PREFIX": settings.topic_prefix,
                "CONSENTGATE_DATA_DIR": str(settings.data_dir),
                "CONSENTGATE_PARTITIONS": str(settings.partitions),
                "CONSENTGATE_PSEUDONYM_SECRET": settings.require_secret().decode(),
                "CONSENTGATE_METERING_GROUP_ID": settings.metering_group_id})
    if settings.ledger_url:
        env["CONSENTGATE_LEDGER_URL"] = settings.ledger_url
    return subprocess.run([sys.executable, "-m", "consentgate.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_topics_produce_tail_round_trip_through_the_registry(settings: Settings, catalog: Catalog) -> None:
    created = run_cli(settings, "topics", "create")
    assert created.returncode == 0, created.stderr
    names = [s.name for s in topic_specs(settings, catalog)]
    assert created.stdout.splitlines() == [f"created {n}" for n in names]

    produced = run_cli(settings, "produce", "--jsonl", str(ROOT / "samples" / "activity.jsonl"))
    assert produced.returncode == 1  # one line of the sample is malformed
    assert "line 6: payload.url is required for category 'click'" in produced.stderr.splitlines()
    assert produced.stdout.strip() == f"published 6 records to {settings.topic('activity.events')}; 1 bad lines"

    tailed = run_cli(settings, "tail", settings.topic("activity.events"), "--json", "--from-beginning",
                     "--until-idle", "3")
    assert tailed.returncode == 0, tailed.stderr
    records = sorted((json.loads(line) for line in tailed.stdout.splitlines()), key=lambda r: r["event_id"])
    assert records == [
        {"event_id": "e-0001", "user_id": "u-alice", "category": "post", "occurred_at": "2026-11-27T10:00:00.000Z",
         "source": "web", "payload": {"text": "Sunrise over the harbour this morning."}},
        {"event_id": "e-0002", "user_id": "u-alice", "category": "search",
         "occurred_at": "2026-11-27T08:30:00.000Z", "source": "search-api", "payload": {"query": "ferry timetable"}},
        {"event_id": "e-0003", "user_id": "u-bob", "category": "conversation",
         "occurred_at": "2026-11-27T10:05:00.000Z", "source": "ios",
         "payload": {"text": "see you at six", "thread_id": "t-77"}},
        {"event_id": "e-0004", "user_id": "u-bob", "category": "click", "occurred_at": "2026-11-27T09:06:00.000Z",
         "source": "web", "payload": {"item_id": "item-9", "url": "https://shop.example/item-9"}},
        {"event_id": "e-0005", "user_id": "u-carol", "category": "signal",
         "occurred_at": "2026-11-27T10:07:00.000Z", "source": "android",
         "payload": {"kind": "dwell_ms", "value": 5400.0}},
        {"event_id": "e-0007", "user_id": "u-dave", "category": "voice", "occurred_at": "2026-11-27T10:09:00.000Z",
         "source": "speaker", "payload": {"transcript": "play some jazz"}},
    ]


def test_topics_create_is_idempotent_and_compacts_consent_state(settings: Settings, catalog: Catalog) -> None:
    client = admin(settings)
    first, _ = create_topics(settings, client, catalog)
    second, existing = create_topics(settings, client, catalog)
    names = TopicNames.of(settings, catalog)
    assert len(first) == 11 and second == [] and sorted(existing) == sorted(first)  # 8 fixed + 3 purpose sinks
    configs = client.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, names.consent_state),
                                       ConfigResource(ConfigResource.Type.TOPIC, names.consent_changes)])
    values = {r.name: f.result() for r, f in configs.items()}
    assert values[names.consent_state]["cleanup.policy"].value == "compact"
    assert values[names.consent_changes]["retention.ms"].value == "-1"
    partitions = client.list_topics(names.activity, timeout=10).topics[names.activity].partitions
    assert len(partitions) == 3
    subject = f"{names.consent_state}-value"
    with registry_client(settings) as registry:
        assert registry.get_compatibility(subject) == "BACKWARD"


def test_topics_create_refuses_a_consent_state_that_is_not_compacted(settings: Settings, catalog: Catalog) -> None:
    client = admin(settings)
    name = settings.topic("consent.state")
    client.create_topics([NewTopic(name, 1, 1, config={"cleanup.policy": "delete"})])[name].result()
    with pytest.raises(ConfigurationError, match=f"topic {name} exists with cleanup.policy=delete; "
                                                 "consentgate needs compact"):
        create_topics(settings, client, catalog)


def test_codec_errors_carry_bytes_and_coordinates(settings: Settings, topics: TopicNames,
                                                  request: pytest.FixtureRequest) -> None:
    registry = registry_client(settings)
    request.addfinalizer(registry.close)
    codecs = Codecs(registry)
    codec = codecs["ActivityEvent"]
    with pytest.raises(UndecodableRecord) as bad_magic:
        codec.decode(b"\x07garbage", topics.activity, 2, 41)
    assert (bad_magic.value.raw, bad_magic.value.topic, bad_magic.value.partition, bad_magic.value.offset) == (
        b"\x07garbage", topics.activity, 2, 41)
    with pytest.raises(UnknownSchemaId):
        codec.decode(b"\x00\x7f\xff\xff\x00" + b"\x02a", topics.activity, 0, 1)
    good = codec.encode(topics.activity, {
        "event_id": "e", "user_id": "u", "category": "post", "occurred_at": 0, "source": "s",
        "payload": ("io.consentgate.v1.PostPayload", {"text": "hello"})})
    with pytest.raises(UndecodableRecord, match="cannot decode as ActivityEvent"):
        codec.decode(good[:-3], topics.activity, 0, 2)  # truncated Avro body
    decision_bytes = codecs["Decision"].encode(topics.decisions, {
        "event_id": "e", "user_id": "u", "category": "post", "decided_at": 0, "outcomes": [],
        "consent_version": None, "input": {"topic": "t", "partition": 0, "offset": 0}})
    with pytest.raises(SchemaMismatch, match="cannot decode as ActivityEvent: SchemaResolutionError"):
        codec.decode(decision_bytes, topics.activity, 0, 3)  # another contract's schema id


def test_up_is_harmless_twice(cluster: RunningCluster, tmp_path: Path) -> None:
    if cluster.kind != "embedded":  # the session runs elsewhere: the launcher gets a cluster of its own
        with embedded_cluster(tmp_path / "own") as own:
            _up_twice(own)
    else:
        _up_twice(cluster)


def _up_twice(cluster: RunningCluster) -> None:
    assert cluster.data_dir is not None
    settings = Settings(data_dir=cluster.data_dir, bootstrap_servers=None, schema_registry_url=None)
    again = embedded.up(settings)
    assert (again.bootstrap_servers, again.schema_registry_url) == (cluster.bootstrap_servers,
                                                                    cluster.schema_registry_url)
    assert embedded.status(settings) == again


def test_down_stops_only_the_processes_up_started(tmp_path: Path) -> None:
    """Recorded pids that now belong to someone else (another command line, or a reused pid with
    another start time) are spared; the one that still matches is stopped, so the check can fail."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    foreign = subprocess.Popen(sleeper)  # not started for this data dir: its command line does not name it
    reused = subprocess.Popen([*sleeper, str(data_dir)])  # names it, but started at another time than recorded
    ours = subprocess.Popen([*sleeper, str(data_dir)])  # what `up` would have started and recorded
    try:
        for proc in (foreign, reused, ours):  # until exec: before it, the child still shows pytest's command line
            wait_for(lambda: b"time.sleep(600)" in Path(f"/proc/{proc.pid}/cmdline").read_bytes(),  # noqa: B023
                     timeout=30, what="the stand-in processes to start")
        starts = {p.pid: embedded._proc_start(p.pid) for p in (foreign, reused, ours)}
        assert None not in starts.values()
        processes = [{"name": "kafka", "pid": foreign.pid, "started": starts[foreign.pid], "log": "k.log"},
                     {"name": "registry", "pid": reused.pid, "started": str(int(starts[reused.pid] or 0) - 1),
                      "log": "r.log"},
                     {"name": "mine", "pid": ours.pid, "started": starts[ours.pid], "log": "m.log"}]
        (data_dir / "cluster.json").write_text(json.dumps({"bootstrap_servers": "127.0.0.1:1",
                                                          "schema_registry_url": "http://r", "processes": processes}))
        stopped = embedded.down(Settings(data_dir=data_dir))
        assert [(p.name, p.pid) for p in stopped] == [("mine", ours.pid)]
        assert not Path(f"/proc/{ours.pid}").exists() or ours.poll() is not None
        assert foreign.poll() is None and reused.poll() is None  # both still running
        assert not (data_dir / "cluster.json").exists()
    finally:
        for proc in (foreign, reused, ours):
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
