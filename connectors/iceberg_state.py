"""What the sink records beside its tables, in the catalog's own database: erasures and rejects.

- ``consentgate_sink_erasures``: one row per (table, pseudonym, erasure time): when the retraction was
  applied (``deleted_at``, the rows gone from the current snapshot) and when ``sink expire`` made it
  physical (``purged_at``, no retained snapshot or file holds them).
- ``consentgate_sink_rejects``: records the sink could not store, with their coordinates, a prefix of
  their bytes and their SHA-256: never silently dropped.

Both are written before the Iceberg commit that moves the offsets past them and are idempotent
(keyed by what they describe), so a crash and replay writes each once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from consentgate.connectors.iceberg_rows import Retraction

VALUE_PREFIX_BYTES = 64 * 1024
_meta = MetaData()
erasures = Table(
    "consentgate_sink_erasures", _meta,
    Column("table_name", String(255), primary_key=True),
    Column("pseudonym", String(128), primary_key=True),
    Column("requested_at", DateTime(timezone=True), primary_key=True),
    Column("key_id", String(64), nullable=False),
    Column("deleted_at", DateTime(timezone=True)),
    Column("before_snapshot_ms", BigInteger),  # the newest snapshot that still held the rows
    Column("purged_at", DateTime(timezone=True)),
)
rejects = Table(
    "consentgate_sink_rejects", _meta,
    Column("table_name", String(255), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("error_class", String(128), nullable=False),
    Column("message", String(1000), nullable=False),
    Column("value_prefix", LargeBinary),
    Column("value_length", BigInteger),
    Column("value_sha256", String(64)),
    Column("rejected_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Reject:
    topic: str
    partition: int
    offset: int
    error_class: str
    message: str
    value: bytes | None


@dataclass(frozen=True)
class ErasureRecord:
    table_name: str
    pseudonym: str
    key_id: str
    requested_at: datetime
    deleted_at: datetime | None
    purged_at: datetime | None


def ensure(engine: Engine) -> None:
    _meta.create_all(engine)


def _insert_ignoring_duplicates(engine: Engine, table: Table, rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
    if engine.dialect.name not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"catalog database {engine.dialect.name} is not supported (SQLite, PostgreSQL)")
    with engine.begin() as conn:
        conn.execute(dialect.insert(table).values(rows).on_conflict_do_nothing())


def record_requested(engine: Engine, table_name: str, retractions: Iterable[Retraction]) -> None:
    _insert_ignoring_duplicates(engine, erasures, [
        {"table_name": table_name, "pseudonym": r.pseudonym, "requested_at": r.requested_at, "key_id": r.key_id}
        for r in retractions])


def record_deleted(engine: Engine, table_name: str, retractions: Iterable[Retraction], at: datetime,
                   before_snapshot_ms: int | None) -> None:
    """Mark erasures applied; an erasure applied before (a replay) keeps its first time."""
    with engine.begin() as conn:
        for r in retractions:
            conn.execute(update(erasures).where(and_(
                erasures.c.table_name == table_name, erasures.c.pseudonym == r.pseudonym,
                erasures.c.requested_at == r.requested_at, erasures.c.deleted_at.is_(None),
            )).values(deleted_at=at, before_snapshot_ms=before_snapshot_ms))


def erased_pseudonyms(engine: Engine, table_name: str) -> dict[str, datetime]:
    """Each erased pseudonym's newest erasure time: records arriving after a retraction are held to it."""
    out: dict[str, datetime] = {}
    with engine.connect() as conn:
        for nym, at in conn.execute(select(erasures.c.pseudonym, erasures.c.requested_at)
                                    .where(erasures.c.table_name == table_name)):
            at = _aware(at)
            if nym not in out or at > out[nym]:
                out[nym] = at
    return out


def unapplied(engine: Engine, table_name: str) -> list[Retraction]:
    """Erasures recorded as requested whose delete was not confirmed (a crash between the two)."""
    with engine.connect() as conn:
        return [Retraction(r.pseudonym, r.key_id, "", _aware(r.requested_at)) for r in conn.execute(
            select(erasures).where(and_(erasures.c.table_name == table_name, erasures.c.deleted_at.is_(None))))]


def pending_purge(engine: Engine, table_name: str) -> list[tuple[str, datetime, int | None]]:
    with engine.connect() as conn:
        return [(nym, _aware(at), before) for nym, at, before in conn.execute(
            select(erasures.c.pseudonym, erasures.c.requested_at, erasures.c.before_snapshot_ms).where(and_(
                erasures.c.table_name == table_name, erasures.c.deleted_at.is_not(None),
                erasures.c.purged_at.is_(None))))]


def record_purged(engine: Engine, table_name: str, which: list[tuple[str, datetime]], at: datetime) -> None:
    with engine.begin() as conn:
        for nym, requested_at in which:
            conn.execute(update(erasures).where(and_(
                erasures.c.table_name == table_name, erasures.c.pseudonym == nym,
                erasures.c.requested_at == requested_at)).values(purged_at=at))


def erasure_records(engine: Engine, table_name: str) -> list[ErasureRecord]:
    with engine.connect() as conn:
        rows = conn.execute(select(erasures).where(erasures.c.table_name == table_name)
                            .order_by(erasures.c.requested_at, erasures.c.pseudonym)).all()
    return [ErasureRecord(r.table_name, r.pseudonym, r.key_id, _aware(r.requested_at), _maybe(r.deleted_at),
                          _maybe(r.purged_at)) for r in rows]


def record_rejects(engine: Engine, table_name: str, items: Iterable[Reject], at: datetime) -> None:
    _insert_ignoring_duplicates(engine, rejects, [{
        "table_name": table_name, "topic": r.topic, "partition": r.partition, "offset": r.offset,
        "error_class": r.error_class, "message": r.message[:1000],
        "value_prefix": r.value[:VALUE_PREFIX_BYTES] if r.value is not None else None,
        "value_length": len(r.value) if r.value is not None else None,
        "value_sha256": hashlib.sha256(r.value).hexdigest() if r.value is not None else None,
        "rejected_at": at} for r in items])


def rejected(engine: Engine, table_name: str) -> list[tuple[str, int, int, str, str]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(  # type: ignore[misc]
            select(rejects.c.topic, rejects.c.partition, rejects.c.offset, rejects.c.error_class, rejects.c.message)
            .where(rejects.c.table_name == table_name).order_by(rejects.c.topic, rejects.c.partition,
                                                                rejects.c.offset))]


def _aware(at: datetime) -> datetime:
    """SQLite returns naive datetimes; every time here was written in UTC."""
    from datetime import timezone

    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def _maybe(at: datetime | None) -> datetime | None:
    return None if at is None else _aware(at)
