"""Regate against a real broker: after revocations the new generation drops exactly the revoked records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from confluent_kafka.admin import ConfigResource

from consentgate.catalog import Catalog
from consentgate.connectors.iceberg_sink import IcebergSink
from consentgate.connectors.iceberg_table import load_existing, open_catalog
from consentgate.connectors.kafka import admin
from consentgate.connectors.topics import TopicNames
from consentgate.model import ActivityEvent
from consentgate.pseudonyms import record_id
from consentgate.regate import Regate
from consentgate.settings import Settings
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from tests.conftest import TEST_SECRET, SettingsFactory
from tests.helpers import committed, produce_events, produce_raw, run_gate, wait_for
from tests.integration.test_foundation import run_cli

REC = "train_ai_system.recommendation"
SECRET = TEST_SECRET.encode()
USERS = ("amy", "bo", "cai", "dev", "eli")


def generation(settings: Settings, topic: str) -> dict[str, dict[str, Any]]:
    """A training topic's records by record id, without the consent version (it moves on)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in committed(settings, topic):
        assert value["record_id"] not in out, f"duplicate {value['record_id']} in {topic}"
        out[value["record_id"]] = {**{k: v for k, v in value.items() if k != "consent_version"}, "key": key}
    return out


def events_for(t: datetime, wave: str) -> list[ActivityEvent]:
    return [ActivityEvent(f"{wave}-{u}-{i}", u, ("post", "search", "click")[i % 3], t, "web",
                          ({"text": f"{u} wrote {i}"}, {"query": f"{u} asked {i}"},
                           {"item_id": f"i{i}", "url": "https://x.example/"})[i % 3])
            for u in USERS for i in range(6)]


def setup_old_generation(settings: Settings, catalog: Catalog, topics: TopicNames) -> list[ActivityEvent]:
    t = datetime.now(timezone.utc)
    with ConsentWriter(settings, catalog, clock=lambda: t - timedelta(days=1)) as writer:
        writer.apply([ConsentRequest("grant", u, c, REC) for u in USERS for c in ("post", "search", "click")])
    events = events_for(t, "w1")
    produce_events(settings, events)
    produce_raw(settings, [(b"x", b"\x00not avro")])  # dead-lettered by the gate, and by the regate
    run_gate(settings, catalog, idle=1.0)
    assert len(generation(settings, topics.training[REC])) == len(events)
    return events


def test_regate_after_revocations_drops_exactly_the_revoked_records(
        settings: Settings, topics: TopicNames, catalog: Catalog) -> None:
    events = setup_old_generation(settings, catalog, topics)
    old = generation(settings, topics.training[REC])
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("revoke", "bo"),  # everything
                      ConsentRequest("revoke", "cai", "search", REC)])  # one category only
        writer.apply([ConsentRequest("erase", "dev")])

    report = Regate(settings, catalog, REC, "v2").run()

    def rid(e: ActivityEvent) -> str:
        return record_id(SECRET, REC, e.event_id)

    revoked = {rid(e) for e in events if e.user_id == "bo" or (e.user_id == "cai" and e.category == "search")}
    erased = {rid(e) for e in events if e.user_id == "dev"}
    new = generation(settings, f"{topics.training[REC]}.v2")
    assert set(new) == set(old) - revoked - erased
    assert {k: v for k, v in new.items()} == {k: v for k, v in old.items() if k in new}  # same content
    assert report.diff is not None
    assert (report.diff.old_in_range, report.diff.kept, report.diff.added) == (30, 30 - 6 - 2 - 6, 0)
    assert report.diff.dropped == {"erased": 6, "no_grant": 8}
    assert set(report.diff.dropped_ids["no_grant"]) == revoked
    assert set(report.diff.dropped_ids["erased"]) == erased
    assert (report.decided, report.written, dict(report.dead_letters), report.resumed) == (
        30, 16, {"UnknownSchemaId": 1}, False)
    # The generation's topic is made like the live one.
    client = admin(settings)
    meta = client.list_topics(timeout=10).topics
    assert len(meta[f"{topics.training[REC]}.v2"].partitions) == len(meta[topics.training[REC]].partitions)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in (topics.training[REC],
                                                                        f"{topics.training[REC]}.v2")]
    retention = [f.result()["retention.ms"].value for f in client.describe_configs(resources).values()]
    assert retention[0] == retention[1]

    # The sink writes a generation to a table of its own, as it writes the live topic.
    sink = IcebergSink(settings, catalog, REC, generation="v2")
    assert sink.table_name.endswith("training_train_ai_system_recommendation_v2")
    assert sink.run(until_idle=0.5).rows_written == len(new)
    catalog_ = open_catalog(settings)
    try:
        table = load_existing(catalog_, settings, f"{topics.training[REC]}.v2")
        assert sorted(table.scan(selected_fields=("record_id",)).to_arrow().column("record_id").to_pylist()) == \
            sorted(new)
    finally:
        catalog_.engine.dispose()  # type: ignore[attr-defined]

    # Run again into the same generation: it resumes, writes nothing twice, reports the same diff.
    again = Regate(settings, catalog, REC, "v2").run()
    assert (again.resumed, again.written, again.decided) == (True, 0, 30)
    assert again.diff == report.diff
    assert generation(settings, f"{topics.training[REC]}.v2") == new


def test_regate_from_a_time_covers_only_what_was_appended_since(
        settings: Settings, topics: TopicNames, catalog: Catalog) -> None:
    setup_old_generation(settings, catalog, topics)
    boundary = datetime.now(timezone.utc) + timedelta(milliseconds=5)
    wait_for(lambda: datetime.now(timezone.utc) > boundary, what="the boundary to pass")
    later = events_for(datetime.now(timezone.utc), "w2")
    produce_events(settings, later)
    run_gate(settings, catalog, idle=1.0)
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("revoke", "amy")])

    result = run_cli(settings, "regate", "--purpose", REC, "--from", boundary.isoformat(), "--into", "since")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    amy_later = {record_id(SECRET, REC, e.event_id) for e in later if e.user_id == "amy"}
    expected = {record_id(SECRET, REC, e.event_id) for e in later} - amy_later
    assert set(generation(settings, f"{topics.training[REC]}.since")) == expected
    assert report["diff"] == {"old_in_range": 30, "new": 24, "kept": 24, "dropped": {"no_grant": 6}, "added": 0}
    assert (report["decided"], report["written"], report["dead_letters"]) == (30, 24, {})


def test_regate_refuses_unknown_purposes_and_bad_names(settings: Settings, catalog: Catalog,
                                                       make_settings: SettingsFactory) -> None:
    for args, message in ((("--purpose", "train_ai_system.everything", "--into", "x"), "unknown purpose"),
                          (("--purpose", REC, "--into", "../x"), "--into '../x'"),
                          (("--purpose", REC, "--from", "yesterday", "--into", "x"), "is not ISO-8601")):
        result = run_cli(settings, "regate", *args)
        assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.reliability
def test_kill_9_mid_regate_then_a_rerun_writes_every_record_once(
        settings: Settings, topics: TopicNames, catalog: Catalog) -> None:
    t = datetime.now(timezone.utc)
    users = [f"k{i}" for i in range(40)]
    with ConsentWriter(settings, catalog, clock=lambda: t - timedelta(days=1)) as writer:
        writer.apply([ConsentRequest("grant", u, "click", REC) for u in users[::2]])
    events = [ActivityEvent(f"e{i}", users[i % 40], "click", t, "web", {"item_id": f"i{i}", "url": "u"})
              for i in range(20_000)]
    produce_events(settings, events)
    new_topic = f"{topics.training[REC]}.crash"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    env.update({"CONSENTGATE_BOOTSTRAP_SERVERS": settings.require_bootstrap(),
                "CONSENTGATE_SCHEMA_REGISTRY_URL": settings.require_registry(),
                "CONSENTGATE_TOPIC_PREFIX": settings.topic_prefix, "CONSENTGATE_DATA_DIR": str(settings.data_dir),
                "CONSENTGATE_PSEUDONYM_SECRET": TEST_SECRET, "CONSENTGATE_REGATE_BATCH_SIZE": "300"})
    command = [sys.executable, "-m", "consentgate.cli.main", "regate", "--purpose", REC, "--into", "crash"]

    def written() -> int:
        try:
            return len(committed(settings, new_topic, timeout=10))
        except Exception:  # noqa: BLE001 - the topic may not exist yet
            return 0

    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: written() >= 1000, timeout=180, what="part of the generation committed")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert written() < 10_000  # killed mid-way
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    report = json.loads(final.stdout)
    assert report["resumed"] is True and report["decided"] == 20_000
    new = generation(settings, new_topic)  # raises on a duplicate record id
    assert set(new) == {record_id(SECRET, REC, e.event_id) for e in events if int(e.user_id[1:]) % 2 == 0}
