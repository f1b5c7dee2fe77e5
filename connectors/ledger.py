"""The payout ledger: tables, migrations and connections (SQLAlchemy Core).

One SQL layer for PostgreSQL (production, CI) and SQLite (the embedded default).
Money is integers only: values in micro-units of the catalog currency, payouts in cents
(or whole credits), so every sum in SQL is exact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy import inspect as inspect_schema
from sqlalchemy.exc import OperationalError

from consentgate.errors import ConfigurationError
from consentgate.valuation import ID_LENGTHS

metadata = MetaData()

migrations_table = Table(
    "ledger_migrations", metadata,
    Column("version", Integer, primary_key=True),
    Column("name", String(80), nullable=False),
)

contributions = Table(
    "contributions", metadata,
    Column("event_id", String(ID_LENGTHS["event_id"]), primary_key=True),
    Column("purpose", String(120), primary_key=True),
    Column("user_id", String(ID_LENGTHS["user_id"]), nullable=False),
    Column("category", String(60), nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("period", String(7), nullable=False),
    Column("occurred_period", String(7), nullable=False),  # differs when it arrived after its period closed
    Column("tier", String(20), nullable=False),
    Column("plan", String(20)),
    Column("receipt_id", String(ID_LENGTHS["receipt_id"]), nullable=False),
    Column("consent_version", BigInteger, nullable=False),
    Column("fingerprint", BigInteger),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    # The training record's keyed id: how `metering value` finds the contribution's minimised text.
    Column("record_id", String(ID_LENGTHS["record_id"])),
    Column("key_id", String(ID_LENGTHS["key_id"])),
)
Index("contributions_user_period", contributions.c.user_id, contributions.c.period)
Index("contributions_period_purpose", contributions.c.period, contributions.c.purpose)
Index("contributions_partition_period", contributions.c.source_partition, contributions.c.period)

# How each contribution was valued; one row per contribution, written with it.
valuations = Table(
    "valuations", metadata,
    Column("event_id", String(200), primary_key=True),
    Column("purpose", String(120), primary_key=True),
    Column("quality", Float, nullable=False),  # the gate's content assessment
    Column("duplicate", Integer, nullable=False),  # 1: an exact or near copy, earns nothing
    Column("rate_micros", BigInteger, nullable=False),  # per unit, from the rate card at the time
    Column("weight_milli", BigInteger, nullable=False),  # units x quality x 1000 (0 for duplicates, free tier)
    Column("value_micros", BigInteger, nullable=False),  # units x rate x quality x usefulness, in micro-units
    # Set by `metering value` (SPEC §11); NULL until then, and for records without text: multiplier 1.
    Column("usefulness_milli", BigInteger),  # the multiplier applied, in thousandths
    Column("usefulness_value", Float),  # the exact KNN-Shapley value it came from
    Column("usefulness_topic", String(60)),  # topic of the reference it helped most (shown to its owner)
    Column("usefulness_method", String(200)),  # method, embedder, k, cap and reference digest
)

periods = Table(
    "periods", metadata,
    Column("period", String(7), primary_key=True),
    Column("status", String(10), nullable=False),  # open | closed
    Column("closed_at", DateTime(timezone=True)),
)

pools = Table(
    "pools", metadata,
    Column("pool_id", Integer, primary_key=True, autoincrement=True),
    Column("period", String(7), ForeignKey("periods.period"), nullable=False),
    Column("purpose", String(120), nullable=False),
    Column("plan", String(20), nullable=False),  # revenue_share | dividend
    Column("amount_cents", BigInteger, nullable=False),
    Column("status", String(10), nullable=False),  # declared | paid | carried (no one to pay: moved on)
    Column("carried_from", String(7)),
    UniqueConstraint("period", "purpose", "plan"),
)

payouts = Table(
    "payouts", metadata,
    Column("payout_id", Integer, primary_key=True, autoincrement=True),
    Column("period", String(7), ForeignKey("periods.period"), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("purpose", String(120), nullable=False),
    Column("plan", String(20), nullable=False),
    Column("kind", String(10), nullable=False),  # cash (cents) | credits
    Column("amount", BigInteger, nullable=False),
    Column("pool_id", Integer, ForeignKey("pools.pool_id")),
    UniqueConstraint("period", "user_id", "purpose", "plan"),
)
Index("payouts_user", payouts.c.user_id, payouts.c.period)

statements = Table(
    "statements", metadata,
    Column("period", String(7), ForeignKey("periods.period"), primary_key=True),
    Column("user_id", String(200), primary_key=True),
    Column("contributions", BigInteger, nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("value_micros", BigInteger, nullable=False),
    Column("cash_cents", BigInteger, nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

# Where the metering worker is in each partition of metering.contributions: stored in the
# same transaction as the rows, so the ledger and its position never disagree.
offsets = Table(
    "metering_offsets", metadata,
    Column("topic", String(250), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)


def _create(*tables: Table) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        metadata.create_all(conn, tables=list(tables))
    return apply


def _add_columns(table: Table, *names: str) -> Callable[[Connection], None]:
    """Add columns a ledger made before them lacks (a fresh ledger got them from ``_create``)."""

    def apply(conn: Connection) -> None:
        present = {c["name"] for c in inspect_schema(conn).get_columns(table.name)}
        for name in names:
            if name not in present:
                column = table.c[name]
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{name}" {kind}'))
    return apply


def _both(*steps: Callable[[Connection], None]) -> Callable[[Connection], None]:
    def apply(conn: Connection) -> None:
        for step in steps:
            step(conn)
    return apply


# Append only: a released migration never changes; a new one gets the next number.
MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("contributions, valuations and offsets", _create(contributions, valuations, offsets)),
    ("periods, pools, payouts and statements", _create(periods, pools, payouts, statements)),
    ("record ids and usefulness", _both(
        _add_columns(contributions, "record_id", "key_id"),
        _add_columns(valuations, "usefulness_milli", "usefulness_value", "usefulness_topic", "usefulness_method"))),
]


def connect(url: str) -> Engine:
    """An engine for ``url`` with the ledger migrated to the newest version."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        engine = create_engine(url, future=True, pool_pre_ping=True)
    except Exception as exc:  # noqa: BLE001 - bad URL or missing driver
        raise ConfigurationError(f"ledger URL {url!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        if engine.url.database and engine.url.database != ":memory:":
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
        _sqlite_serialised(engine)
    try:
        migrate(engine)
    except OperationalError as exc:
        raise ConfigurationError(f"cannot open the ledger at {engine.url!r}: {exc.orig}") from exc
    return engine


def _sqlite_serialised(engine: Engine) -> None:
    """SQLite: WAL, and BEGIN IMMEDIATE so a transaction that will write takes the lock first."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine) -> int:
    """Apply every migration not yet applied, each in its own transaction; return the version."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7707001)"))  # one migrator at a time
        metadata.create_all(conn, tables=[migrations_table])
    for version, (name, apply) in enumerate(MIGRATIONS, start=1):
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(7707001)"))
            done = conn.execute(select(migrations_table.c.version)
                                .where(migrations_table.c.version == version)).first()
            if done is None:
                apply(conn)
                conn.execute(insert(migrations_table).values(version=version, name=name))
    return len(MIGRATIONS)


def lock_periods(conn: Connection, names: list[str]) -> dict[str, str]:
    """Create missing periods (open) and lock them for the rest of the transaction.

    The worker takes a shared lock and ``close`` an exclusive one, so no contribution can
    land in a period while it closes. Returns period -> status.
    """
    if not names:
        return {}
    existing = {p for (p,) in conn.execute(select(periods.c.period).where(periods.c.period.in_(names)))}
    for name in sorted(set(names) - existing):
        conn.execute(insert_ignore(conn, periods).values(period=name, status="open"))
    query = select(periods.c.period, periods.c.status).where(periods.c.period.in_(names))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    return {p: s for p, s in conn.execute(query)}


def insert_ignore(conn: Connection, table: Table):  # type: ignore[no-untyped-def]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert(table).on_conflict_do_nothing()




def insert_new(conn: Connection, table: Table, rows: list[dict[str, object]]) -> set[tuple[object, ...]]:
    """Insert ``rows``, skipping any whose primary key exists; return the keys inserted.

    PostgreSQL: COPY into a session-local staging table, then one INSERT ... SELECT ... ON
    CONFLICT DO NOTHING (parsing a many-row VALUES statement costs more than the insert).
    SQLite: the driver's executemany.
    """
    key = [c.name for c in table.primary_key.columns]
    if not rows:
        return set()
    if conn.dialect.name != "postgresql":
        result = conn.execute(insert_ignore(conn, table).returning(*(table.c[k] for k in key)), rows)
        return {tuple(row) for row in result}
    names = [c.name for c in table.columns]
    cols = ", ".join(f'"{n}"' for n in names)
    staging = f"staging_{table.name}"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table.name}) ON COMMIT DELETE ROWS")
        with cursor.copy(f"COPY {staging} ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row.get(n) for n in names])
        cursor.execute(f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {staging} "
                       f"ON CONFLICT DO NOTHING RETURNING {', '.join(key)}")
        inserted = {tuple(row) for row in cursor.fetchall()}
        cursor.execute(f"TRUNCATE {staging}")
        return inserted
    finally:
        cursor.close()
