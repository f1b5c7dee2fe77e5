"""The training-set sink against a real broker: erasure made physical, kill -9 exactly once, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from consentgate.catalog import Catalog
from consentgate.connectors import iceberg_state as state
from consentgate.connectors.iceberg_expire import expire
from consentgate.connectors.iceberg_rows import Retraction
from consentgate.connectors.iceberg_sink import IcebergSink
from consentgate.connectors.iceberg_table import (
    OFFSETS_PROPERTY,
    committed_offsets,
    load_existing,
    open_catalog,
    table_name,
)
from consentgate.connectors.topics import TopicNames
from consentgate.model import ActivityEvent
from consentgate.pseudonyms import key_id, pseudonym, record_id
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.settings import Settings
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter
from tests.conftest import TEST_SECRET, SettingsFactory, fresh_database
from tests.helpers import produce_events, produce_raw, run_gate, wait_for
from tests.integration.test_foundation import run_cli

REC = "train_ai_system.recommendation"
SECRET = TEST_SECRET.encode()


@pytest.fixture
def iceberg_url(tmp_path: Path) -> Iterator[str]:
    """A fresh, empty Iceberg catalog database."""
    with fresh_database(tmp_path, "iceberg") as url:
        yield url


def scan(settings: Settings, topic: str) -> list[dict[str, Any]]:
    catalog = open_catalog(settings)
    try:
        return load_existing(catalog, settings, topic).scan().to_arrow().to_pylist()
    finally:
        catalog.engine.dispose()  # type: ignore[attr-defined]


def erasures(settings: Settings, topic: str) -> list[state.ErasureRecord]:
    engine = open_catalog(settings).engine  # type: ignore[attr-defined]
    try:
        return state.erasure_records(engine, table_name(topic))
    finally:
        engine.dispose()


def rejected(settings: Settings, topic: str) -> list[tuple[str, int, int, str, str]]:
    engine = open_catalog(settings).engine  # type: ignore[attr-defined]
    try:
        return state.rejected(engine, table_name(topic))
    finally:
        engine.dispose()


def parquet_files(settings: Settings) -> list[Path]:
    return sorted((settings.data_dir / "iceberg" / "warehouse").rglob("*.parquet"))


def pseudonyms_in_files(settings: Settings) -> Counter[str]:
    """Every pseudonym in every data file left on storage, whatever snapshot (if any) references it."""
    found: Counter[str] = Counter()
    for path in parquet_files(settings):
        found.update(pq.read_table(path, columns=["pseudonym"]).column("pseudonym").to_pylist())
    return found


def test_erasure_is_gone_from_the_table_and_from_storage_after_expire(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, iceberg_url: str) -> None:
    settings = make_settings(iceberg_catalog_url=iceberg_url, snapshot_max_age_s=0, orphan_min_age_s=0)
    t = datetime.now(timezone.utc)
    with ConsentWriter(settings, catalog, clock=lambda: t - timedelta(days=60)) as writer:
        writer.apply([ConsentRequest("grant", u, c, REC) for u in ("ana", "ben") for c in ("post", "search")])
    # Posts 40 days back, searches now: two months, so two partitions.
    events = [ActivityEvent(f"{u}-{i}", u, "post" if i % 2 else "search", t - timedelta(days=40 * (i % 2)), "web",
                            {"text": f"note {i} of {u}"} if i % 2 else {"query": f"q {i}"})
              for u in ("ana", "ben") for i in range(6)]
    produce_events(settings, events)
    run_gate(settings, catalog, idle=1.0)
    topic = topics.training[REC]

    sink = IcebergSink(settings, catalog, REC)
    stats = sink.run(until_idle=1.0)
    assert (stats.records_in, stats.rows_written, stats.retractions_applied) == (12, 12, 0)
    assert sink.metrics.value("consentgate_sink_rows_written_total", purpose=REC) == 12
    assert sink.metrics.value("consentgate_sink_snapshot_timestamp_seconds", purpose=REC) > 0
    ana, ben = pseudonym(SECRET, REC, "ana"), pseudonym(SECRET, REC, "ben")
    rows = scan(settings, topic)
    assert sorted((r["pseudonym"], r["record_id"]) for r in rows) == sorted(
        (pseudonym(SECRET, REC, e.user_id), record_id(SECRET, REC, e.event_id)) for e in events)
    assert {r["key_id"] for r in rows} == {key_id(SECRET)}
    assert {(r["record_id"], r["category"], tuple(r["fields"])) for r in rows if r["pseudonym"] == ana} == {
        (record_id(SECRET, REC, e.event_id), e.category, tuple(e.payload.items())) for e in events
        if e.user_id == "ana"}
    # Partitioned by the month of occurred_at: these events span two months.
    months = {p.parent.name for p in parquet_files(settings)}
    assert len(months) == 2 and all(m.startswith("occurred_month=") for m in months)

    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("erase", "ana")])
    sink = IcebergSink(settings, catalog, REC)
    stats = sink.run(until_idle=1.0)
    assert (stats.records_in, stats.retractions_applied) == (0, 1)
    assert sink.metrics.value("consentgate_sink_rows_deleted_total", purpose=REC) == 6  # ana's six rows
    assert Counter(r["pseudonym"] for r in scan(settings, topic)) == {ben: 6}
    # Deleted from the current snapshot, but older snapshots' files still hold ana's rows.
    assert pseudonyms_in_files(settings)[ana] == 6
    [erasure] = erasures(settings, topic)
    assert (erasure.pseudonym, erasure.key_id, erasure.purged_at) == (ana, key_id(SECRET), None)
    assert erasure.deleted_at is not None

    report = expire(settings, topic)
    assert (report.erasures_purged, report.erasures_pending, report.snapshots_kept) == (1, 0, 1)
    assert report.files_deleted > 0
    # Physically gone: no data file left on storage holds ana; ben's six rows are all there.
    assert pseudonyms_in_files(settings) == {ben: 6}
    assert Counter(r["pseudonym"] for r in scan(settings, topic)) == {ben: 6}
    [erasure] = erasures(settings, topic)
    assert erasure.purged_at == report.at
    # The same from the command line: what was erased when; a second expiry has nothing left to do.
    flags = ("--purpose", REC, "--iceberg-catalog-url", iceberg_url)
    listed = run_cli(settings, "sink", "erasures", *flags)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [json.loads(line) for line in listed.stdout.splitlines()] == [{
        "pseudonym": ana, "key_id": key_id(SECRET), "requested_at": erasure.requested_at.isoformat(),
        "deleted_at": erasure.deleted_at.isoformat(), "purged_at": report.at.isoformat()}]
    again = run_cli(settings, "sink", "expire", *flags, "--snapshot-max-age-s", "0")
    assert again.returncode == 0, again.stderr[-2000:]
    assert {k: v for k, v in json.loads(again.stdout).items() if k != "at"} == {
        "table": table_name(topic), "snapshots_expired": 0, "snapshots_kept": 1, "files_deleted": 0,
        "orphans_deleted": 0, "erasures_purged": 0, "erasures_pending": 0}
    # Another engine reads the table's current data files.
    catalog_ = open_catalog(settings)
    try:
        table = load_existing(catalog_, settings, topic)
        files = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
        got = duckdb.sql(f"SELECT pseudonym, count(*) FROM read_parquet({files!r}) GROUP BY 1").fetchall()
        assert got == [(ben, 6)]
        # The table still says where to resume: both topics' offsets, in the current snapshot's summary.
        assert OFFSETS_PROPERTY in table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
        assert sum(committed_offsets(table)[topic].values()) == 12
    finally:
        catalog_.engine.dispose()  # type: ignore[attr-defined]


def test_records_of_an_erased_person_arriving_late_are_not_written(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, iceberg_url: str) -> None:
    settings = make_settings(iceberg_catalog_url=iceberg_url)
    with ConsentWriter(settings, catalog) as writer:
        writer.apply([ConsentRequest("grant", "cy", "post", REC)])
        writer.apply([ConsentRequest("erase", "cy")])
    erased_at = datetime.now(timezone.utc)
    cy = pseudonym(SECRET, REC, "cy")
    topic = topics.training[REC]
    before, after = erased_at - timedelta(minutes=5), erased_at + timedelta(minutes=5)
    with registry_client(settings) as registry:
        encode = Codecs(registry)["TrainingRecord"].writer_for(topic)
        produce_raw(settings, [(cy.encode(), encode({
            "pseudonym": cy, "record_id": rid, "key_id": key_id(SECRET), "purpose": REC, "category": "post",
            "occurred_at": at, "fields": {"text": "hello"}, "consent_version": 1}))
            for rid, at in (("r-before", before), ("r-after", after))], topic)
    stats = IcebergSink(settings, catalog, REC).run(until_idle=1.0)
    # Erased before it arrived: the earlier record is never written; one from a later consent is kept.
    assert (stats.records_in, stats.rows_written, stats.erased_on_arrival) == (2, 1, 1)
    assert [r["record_id"] for r in scan(settings, topic)] == ["r-after"]


def test_bad_records_are_kept_aside_and_the_sink_goes_on(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, iceberg_url: str) -> None:
    settings = make_settings(iceberg_catalog_url=iceberg_url)
    topic = topics.training[REC]
    nym = pseudonym(SECRET, REC, "dee")
    with registry_client(settings) as registry:
        encode = Codecs(registry)["TrainingRecord"].writer_for(topic)
        good = {"pseudonym": nym, "record_id": "r1", "key_id": key_id(SECRET), "purpose": REC, "category": "post",
                "occurred_at": datetime.now(timezone.utc), "fields": {"text": "hi"}, "consent_version": 1}
        produce_raw(settings, [
            (nym.encode(), b"\x01garbage"),  # not Confluent-framed Avro
            (nym.encode(), encode({**good, "record_id": ""})),  # an old writer's record without a record id
            (nym.encode(), encode({**good, "purpose": "train_ai_system.generative"})),  # on the wrong topic
            (nym.encode(), None),
            (nym.encode(), encode(good)),
        ], topic)
    stats = IcebergSink(settings, catalog, REC).run(until_idle=1.0)
    assert (stats.records_in, stats.rows_written, stats.rejects) == (5, 1, 4)
    assert [r["record_id"] for r in scan(settings, topic)] == ["r1"]
    rejects = rejected(settings, topic)
    assert [(o, cls, m) for _t, _p, o, cls, m in rejects[1:]] == [
        (1, "InvalidTrainingRecord", "record_id is missing or empty"),
        (2, "InvalidTrainingRecord", f"record of purpose 'train_ai_system.generative' on the topic of '{REC}'"),
        (3, "InvalidTrainingRecord", "a training record with no value")]
    assert (rejects[0][2], rejects[0][3]) == (0, "UndecodableRecord")
    # Read again from the start (a replay), nothing is stored twice.
    stats = IcebergSink(settings, catalog, REC).run(until_idle=0.5)
    assert stats.records_in == 0 and len(rejected(settings, topic)) == 4


def test_kill_9_mid_stream_writes_every_record_exactly_once(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, iceberg_url: str) -> None:
    settings = make_settings(iceberg_catalog_url=iceberg_url)
    topic = topics.training[REC]
    t0 = datetime(2026, 5, 30, tzinfo=timezone.utc)
    records = [{"pseudonym": pseudonym(SECRET, REC, f"u{i % 50}"), "record_id": f"r{i}", "key_id": key_id(SECRET),
                "purpose": REC, "category": "click", "occurred_at": t0 + timedelta(hours=i),
                "fields": {"item_id": f"i{i}"}, "consent_version": 1} for i in range(4000)]
    with registry_client(settings) as registry:
        encode = Codecs(registry)["TrainingRecord"].writer_for(topic)
        produce_raw(settings, [(r["pseudonym"].encode(), encode(r)) for r in records], topic)

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTGATE_")}
    env.update({"CONSENTGATE_BOOTSTRAP_SERVERS": settings.require_bootstrap(),
                "CONSENTGATE_SCHEMA_REGISTRY_URL": settings.require_registry(),
                "CONSENTGATE_TOPIC_PREFIX": settings.topic_prefix, "CONSENTGATE_DATA_DIR": str(settings.data_dir),
                "CONSENTGATE_ICEBERG_CATALOG_URL": iceberg_url, "CONSENTGATE_SINK_MAX_RECORDS": "150"})
    command = [sys.executable, "-m", "consentgate.cli.main", "sink", "iceberg", "--purpose", REC]

    def committed_rows() -> int:
        catalog_ = open_catalog(settings)
        try:
            snapshot = load_existing(catalog_, settings, topic).current_snapshot()
            return int(snapshot.summary.additional_properties["total-records"]) if snapshot else 0
        except Exception:  # noqa: BLE001 - the table may not exist yet
            return 0
        finally:
            catalog_.engine.dispose()  # type: ignore[attr-defined]

    kills = 0
    for step in (300, 1500):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: committed_rows() >= step, timeout=120, what=f"{step} rows committed")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        kills += 1
    assert kills == 2 and committed_rows() < len(records)  # killed mid-stream
    final = subprocess.run([*command, "--until-idle", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    rows = scan(settings, topic)
    assert Counter((r["record_id"], r["pseudonym"], r["occurred_at"], r["fields"][0][1]) for r in rows) == Counter(
        (r["record_id"], r["pseudonym"], r["occurred_at"], r["fields"]["item_id"]) for r in records)
    assert len({(r["source_partition"], r["source_offset"]) for r in rows}) == len(records)


def test_a_second_sink_on_the_same_table_is_fenced_and_resumes_from_the_table(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, iceberg_url: str) -> None:
    settings = make_settings(iceberg_catalog_url=iceberg_url)
    topic = topics.training[REC]
    records = [{"pseudonym": pseudonym(SECRET, REC, f"u{i % 7}"), "record_id": f"r{i}", "key_id": key_id(SECRET),
                "purpose": REC, "category": "post", "occurred_at": datetime(2026, 1, 1, tzinfo=timezone.utc),
                "fields": {"text": f"t{i}"}, "consent_version": 1} for i in range(300)]
    with registry_client(settings) as registry:
        encode = Codecs(registry)["TrainingRecord"].writer_for(topic)
        produce_raw(settings, [(r["pseudonym"].encode(), encode(r)) for r in records], topic)
    first = IcebergSink(settings, catalog, REC)
    first_ran: list[int] = []

    def clock() -> datetime:
        # The second sink has read its batch from the empty table; the first one commits everything now.
        if not first_ran:
            first_ran.append(first.run(until_idle=0.5).rows_written)
        return datetime.now(timezone.utc)

    second = IcebergSink(settings, catalog, REC, clock=clock)
    stats = second.run(until_idle=0.5)
    assert first_ran == [300]
    assert (stats.conflicts, stats.rows_written) == (1, 0)  # lost the race, then found nothing left to do
    assert sorted(r["record_id"] for r in scan(settings, topic)) == sorted(r["record_id"] for r in records)


def test_an_erasure_recorded_but_not_confirmed_before_a_crash_is_applied_on_restart(
        make_settings: SettingsFactory, topics: TopicNames, catalog: Catalog, iceberg_url: str) -> None:
    settings = make_settings(iceberg_catalog_url=iceberg_url)
    topic = topics.training[REC]
    eve, fay = pseudonym(SECRET, REC, "eve"), pseudonym(SECRET, REC, "fay")
    at = datetime(2026, 2, 1, tzinfo=timezone.utc)
    with registry_client(settings) as registry:
        encode = Codecs(registry)["TrainingRecord"].writer_for(topic)
        produce_raw(settings, [(nym.encode(), encode({
            "pseudonym": nym, "record_id": f"{nym[:4]}-{i}", "key_id": key_id(SECRET), "purpose": REC,
            "category": "post", "occurred_at": at, "fields": {"text": "x"}, "consent_version": 1}))
            for nym in (eve, fay) for i in range(3)], topic)
    assert IcebergSink(settings, catalog, REC).run(until_idle=0.5).rows_written == 6
    # The state a crash leaves between recording an erasure and committing its delete.
    engine = open_catalog(settings).engine  # type: ignore[attr-defined]
    state.record_requested(engine, table_name(topic), [Retraction(eve, key_id(SECRET), REC, at)])
    engine.dispose()
    IcebergSink(settings, catalog, REC).run(until_idle=0.5)
    assert Counter(r["pseudonym"] for r in scan(settings, topic)) == {fay: 3}
    [erasure] = erasures(settings, topic)
    assert erasure.pseudonym == eve and erasure.deleted_at is not None
