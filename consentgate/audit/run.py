"""Run one audit: read the topics into the working database, check, summarise."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from consentgate.connectors.kafka import admin
from consentgate.connectors.topics import TopicNames
from consentgate.schemas.codec import Codecs, registry_client

from consentgate.audit import checks, columns, fastdecode
from consentgate.audit.findings import Finding, Kind
from consentgate.audit.history import VersionRow, rebuild
from consentgate.audit.keyed import KeyedHashes
from consentgate.audit.report import AuditReport, PurposeSummary
from consentgate.audit.scope import boundaries, input_scope, timestamp_types
from consentgate.audit.sources import CHUNK, read_chunks
from consentgate.audit.store import Store, hmac_pads
from consentgate.catalog import DEFAULT_CATALOG, Catalog
from consentgate.pseudonyms import key_id
from consentgate.settings import Settings

MAX_PROBES = 4000
T = TypeVar("T")
_END: Any = object()


@dataclass(frozen=True)
class AuditOptions:
    """``allowance_ms``: how long after its append a consent change is surely committed (the writer
    commits right after producing); ``margin_ms``: how far before ``from`` decisions are read, so the
    outputs of a decision near the start can be matched."""

    from_ms: int | None = None
    to_ms: int | None = None
    allowance_ms: int = 1000
    margin_ms: int = 15 * 60 * 1000
    memory_limit: str = "1GB"
    work_dir: Path | None = None
    ledger_url: str | None = None
    chunk: int = CHUNK


def probe_times(versions: list[VersionRow], allowance_ms: int) -> tuple[int, list[int]]:
    """The resolution and the times at which to list input offsets: each change's append time plus
    the allowance, rounded up (later is the safe side) so that there are at most MAX_PROBES."""
    resolution = 10
    while True:
        times = {-(-(v.appended_at + allowance_ms) // resolution) * resolution for v in versions}
        if len(times) <= MAX_PROBES:
            return resolution, sorted(times)
        resolution *= 2


def catalog_identity(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    if settings.catalog is not None:
        text = Path(settings.catalog).read_bytes()
        where = str(settings.catalog)
    else:
        text = resources.files("consentgate").joinpath(DEFAULT_CATALOG).read_bytes()
        where = "shipped catalog.yaml"
    return {"version": catalog.version, "sha256": hashlib.sha256(text).hexdigest(), "path": where}


def run_audit(settings: Settings, catalog: Catalog, options: AuditOptions,
              timings: dict[str, float] | None = None) -> AuditReport:
    """Audit the range of ``options`` and return the report (findings empty when clean). ``timings``,
    when given, receives the seconds spent per phase (reading, decoding, loading, each check, ...)."""
    spent: dict[str, float] = {} if timings is None else timings
    clock = _Clock(spent)
    topics = TopicNames.of(settings, catalog)
    secret = settings.require_secret()
    adm = admin(settings)
    scope = input_scope(adm, topics.activity, options.from_ms, options.to_ms)
    unreadable: list[Finding] = []
    read: dict[str, int] = {}
    with registry_client(settings) as registry, \
            Store(options.work_dir, options.memory_limit) as store:
        codecs = Codecs(registry)
        changes = []
        decode_changes = fastdecode.decoder_for(codecs["ConsentChange"]) or columns.changes
        for chunk in clock.each("read", read_chunks(settings, adm, topics.consent_changes, None, options.chunk)):
            with clock("decode consent.changes"):
                changes.extend(decode_changes(codecs["ConsentChange"], chunk, unreadable))
        read[topics.consent_changes] = len(changes)
        with clock("consent history"):
            history = rebuild(changes)
            del changes
            store.load_history(history)
            store.load_catalog(catalog)
            resolution, times = probe_times(history.versions, options.allowance_ms)
        with clock("list input offsets"):
            store.load_scope(scope.partitions, boundaries(adm, scope, times))
        since = None if options.from_ms is None else options.from_ms - options.margin_ms
        sources: list[tuple[str, str, str, columns.Decoder, int | None]] = [
            ("decisions", topics.decisions, "Decision", columns.decisions, since),
            ("dead_letters", topics.dlq, "DeadLetter", columns.dead_letters, since),
            ("contributions", topics.contributions, "Contribution", columns.contributions, since),
            ("retractions", topics.retractions, "Retraction", columns.retractions, since),
            *[("training", topic, "TrainingRecord", columns.training, since)
              for topic in topics.training.values()],
        ]
        keyed = KeyedHashes(secret)
        compiled = {c: fastdecode.decoder_for(codecs[c]) for c in ("Decision", "TrainingRecord", "Contribution")}
        for table, topic, contract, decode, start in sources:
            decode = compiled.get(contract) or decode
            read[topic] = 0
            for chunk in clock.each("read", read_chunks(settings, adm, topic, start, options.chunk)):
                read[topic] += len(chunk)
                with clock(f"decode {table}"):
                    decoded = decode(codecs[contract], chunk, unreadable)
                if table == "decisions":
                    with clock("keyed hashes"):
                        decoded = keyed.with_keyed(decoded)
                with clock("load into DuckDB"):
                    store.append(table, decoded)
        ipad, opad = hmac_pads(secret)
        params = {"activity": topics.activity, "allowance": options.allowance_ms, "res": resolution,
                  "skew_ms": int(settings.clock_skew_s * 1000), "ipad": ipad, "opad": opad,
                  "key_id": key_id(secret), "from_ms": options.from_ms, "to_ms": options.to_ms}
        prepared: dict[str, float] = {}
        checks.prepare(store.db, params, prepared)
        spent.update({f"check: table {name}": seconds for name, seconds in prepared.items()})
        with clock("check: findings queries"):
            found = checks.findings(store.db, params)
        found += unreadable
        found += [Finding(Kind.CONSENT_HISTORY.value, None, None, f"{user}: {what}") for user, what in history.problems]
        ledger = None
        if options.ledger_url is not None:
            from consentgate.audit.ledger import compare_ledger

            ledger, ledger_findings = compare_ledger(store.db, options.ledger_url,
                                                     options.from_ms is None and options.to_ms is None)
            found += ledger_findings
        stamp = timestamp_types(adm, [topics.activity, topics.consent_changes])
        notes = [f"{topic} timestamps are {kind}" + ("" if kind == "LogAppendTime" else
                 ": consent first is checked against producer clocks; LogAppendTime makes it exact")
                 for topic, kind in stamp.items()]
        with clock("summary and replay hash"):
            return _summarise(store, settings, catalog, scope.__dict__ | {"records": scope.records}, found, read,
                              options, ledger, notes)


class _Clock:
    """Adds the seconds spent in a block, or in waiting for an iterator's items, to ``spent``."""

    def __init__(self, spent: dict[str, float]) -> None:
        self.spent = spent

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.spent[phase] = self.spent.get(phase, 0.0) + time.monotonic() - started

    def each(self, phase: str, items: Iterable[T]) -> Iterator[T]:
        iterator = iter(items)
        while True:
            with self(phase):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item  # type: ignore[misc]


def _summarise(store: Store, settings: Settings, catalog: Catalog, scope: dict[str, Any], found: list[Finding],
               read: dict[str, int], options: AuditOptions, ledger: dict[str, Any] | None,
               notes: list[str]) -> AuditReport:
    db = store.db
    decisions = db.execute("SELECT count(*) FROM d").fetchone()[0]  # type: ignore[index]
    problem_kinds = [Kind.WRONG_OUTCOME.value, Kind.MISSING_OUTCOME.value, Kind.STALE_CONSENT.value]
    bad = {(f.event_id, f.where) for f in found if f.kind in problem_kinds}
    reproduced = decisions - len(bad)
    dead = db.execute("""SELECT error_class, count(*) FROM dead_letters x JOIN scope s ON x.in_topic = $a
        AND x.in_partition = s.p AND x.in_offset >= s.start_offset AND x.in_offset < s.end_offset GROUP BY ALL""",
                      {"a": scope["topic"]}).fetchall()
    digest = db.execute("""SELECT count(*), coalesce(sum(('0x' || left(sha256(concat_ws('|', event_id, in_partition,
        in_offset, user_id, category, coalesce(consent_version::VARCHAR, '-'), decided_at, purpose,
        array_to_string(acceptable, ','))), 16))::UBIGINT::HUGEINT), 0) FROM judged""").fetchone()
    assert digest is not None
    replay_hash = hashlib.sha256(f"{digest[0]}:{digest[1]}".encode()).hexdigest()
    counts = [{"category": c, "purpose": p, "result": r, "n": n} for c, p, r, n in db.execute(
        "SELECT category, purpose, actual, count(*) FROM judged GROUP BY ALL ORDER BY ALL").fetchall()]
    withdrawals = _withdrawals(store)
    purposes = _purposes(store, catalog)
    erasures = db.execute("SELECT count(*) FROM versions WHERE action = 'erase'").fetchone()[0]  # type: ignore[index]
    retractions = db.execute("SELECT count(*) FROM retractions").fetchone()[0]  # type: ignore[index]
    scope_json = {"topic": scope["topic"], "from_ms": scope["from_ms"], "to_ms": scope["to_ms"],
                  "records": scope["records"],
                  "partitions": {str(p): {"start": s, "end": e} for p, (s, e) in sorted(scope["partitions"].items())},
                  "topic_prefix": settings.topic_prefix, "consent_allowance_ms": options.allowance_ms}
    return AuditReport(decisions, reproduced, sum(n for _, n in dead), found, replay_hash, scope_json,
                       catalog_identity(settings, catalog), counts, dict(sorted(dead)), withdrawals, purposes,
                       read, erasures, retractions, ledger, notes)


def _withdrawals(store: Store) -> list[dict[str, Any]]:
    span = store.db.execute("SELECT min(changed_at), max(changed_at) FROM versions "
                            "WHERE action IN ('revoke', 'erase')").fetchone()
    if span is None or span[0] is None:
        return []
    width = max(1000, -(-(span[1] - span[0] + 1) // 40))  # at most 40 bars
    rows = store.db.execute("""SELECT (changed_at // $w) * $w AS bucket, count(*) FILTER (action = 'revoke'),
        count(*) FILTER (action = 'erase') FROM versions WHERE action IN ('revoke', 'erase')
        GROUP BY ALL ORDER BY 1""", {"w": width}).fetchall()
    return [{"at": b, "width_ms": width, "revoke": r, "erase": e} for b, r, e in rows]


def _purposes(store: Store, catalog: Catalog) -> list[PurposeSummary]:
    out = []
    for purpose in catalog.purposes.values():
        by_category = dict(store.db.execute(
            "SELECT category, count(*) FROM training WHERE purpose = ? GROUP BY ALL ORDER BY ALL",
            [purpose.name]).fetchall())
        row = store.db.execute("SELECT count(DISTINCT pseudonym), min(occurred_at), max(occurred_at) FROM training "
                               "WHERE purpose = ?", [purpose.name]).fetchone()
        contributions = store.db.execute("SELECT count(*) FROM contributions WHERE purpose = ?",
                                         [purpose.name]).fetchone()
        assert row is not None and contributions is not None
        cats = {name: {"fideslang": catalog.categories[name].fideslang, "title": catalog.categories[name].title,
                       "keep": list(use.keep)} for name, use in purpose.categories.items()}
        out.append(PurposeSummary(purpose.name, purpose.title, purpose.sink_topic, sum(by_category.values()),
                                  row[0], contributions[0], by_category, row[1], row[2], cats,
                                  dict(purpose.description), purpose.terms_version, purpose.retention_days))
    return out
