"""Optionally, the money trail: every contribution in range credited once in the payout ledger, as written.

The ledger is read, never written (no migration is run): its ``contributions`` table holds one
row per credited (event_id, purpose) with the user, units and consent version it was credited
under (``consentgate.connectors.ledger``).
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import create_engine, select
from sqlalchemy.exc import SQLAlchemyError

from consentgate.audit.errors import AuditError
from consentgate.audit.findings import Finding, Kind
from consentgate.connectors.ledger import contributions as ledger_contributions

BATCH = 50_000
LEDGER = pa.schema([("event_id", pa.string()), ("purpose", pa.string()), ("user_id", pa.string()),
                    ("units", pa.int64()), ("consent_version", pa.int64())])

FINDINGS = [
    """SELECT b.event_id, b.purpose, 'passed and contributed, but not credited in the ledger' FROM by_event b
       WHERE b.in_scope AND EXISTS (SELECT 1 FROM contributions c WHERE c.event_id = b.event_id
         AND c.purpose = b.purpose) AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.event_id = b.event_id
         AND l.purpose = b.purpose)""",
    """SELECT c.event_id, c.purpose, 'the ledger credits ' || l.user_id || ' ' || l.units || ' units under v'
       || l.consent_version || ', the contribution says ' || c.user_id || ' ' || c.units || ' units under v'
       || c.consent_version FROM contributions c JOIN ledger l USING (event_id, purpose)
       WHERE l.user_id <> c.user_id OR l.units <> c.units OR l.consent_version <> c.consent_version""",
    """SELECT l.event_id, l.purpose, 'credited in the ledger without a passing decision' FROM ledger l
       WHERE $whole AND NOT EXISTS (SELECT 1 FROM by_event b WHERE b.event_id = l.event_id
         AND b.purpose = l.purpose)""",
]


def compare_ledger(db: duckdb.DuckDBPyConnection, url: str, whole_history: bool
                   ) -> tuple[dict[str, Any], list[Finding]]:
    """Load the ledger's credits next to the topics' contributions and compare them."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    db.register("empty_ledger", LEDGER.empty_table())
    db.execute("CREATE TABLE ledger AS SELECT * FROM empty_ledger")
    db.unregister("empty_ledger")
    c = ledger_contributions.c
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(
                select(c.event_id, c.purpose, c.user_id, c.units, c.consent_version))
            while rows := result.fetchmany(BATCH):
                db.register("incoming", pa.Table.from_pylist([dict(r._mapping) for r in rows], schema=LEDGER))
                db.execute("INSERT INTO ledger SELECT * FROM incoming")
                db.unregister("incoming")
        engine.dispose()
    except SQLAlchemyError as exc:
        raise AuditError(f"cannot read the ledger at {url!r}: {exc}") from exc
    found = [Finding(Kind.LEDGER_MISMATCH.value, event_id, purpose, detail)
             for query in FINDINGS
             for event_id, purpose, detail in db.execute(query, {"whole": whole_history} if "$whole" in query
                                                           else {}).fetchall()]
    credited = db.execute("SELECT count(*) FROM ledger l JOIN contributions c USING (event_id, purpose)").fetchone()
    total = db.execute("SELECT count(*) FROM contributions").fetchone()
    assert credited is not None and total is not None
    return {"credited": credited[0], "contributions": total[0]}, sorted(found)
