"""The audit's working database: an embedded DuckDB, capped in memory, spilling to disk.

Everything the audit reads is appended here chunk by chunk, so a range of any size is held by
DuckDB's buffer manager, not in the Python heap; the checks are SQL over these tables. The
database is in-memory (no file to write and checkpoint: loading is about three times faster)
and, like a file database, it evicts to its spill directory whatever exceeds ``memory_limit``.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from types import TracebackType

import duckdb
import pyarrow as pa

from consentgate.audit import columns
from consentgate.audit.history import History
from consentgate.audit.keyed import KEYED_COLUMNS
from consentgate.catalog import Catalog

TABLES = {"decisions": pa.schema([*columns.DECISIONS, *KEYED_COLUMNS]), "training": columns.TRAINING, "contributions": columns.CONTRIBUTIONS,
          "dead_letters": columns.DEAD_LETTERS, "retractions": columns.RETRACTIONS}
BLOCK = 64


class Store:
    """One audit's tables. ``memory_limit`` bounds DuckDB's memory; beyond it, it spills."""

    def __init__(self, work_dir: Path | None = None, memory_limit: str = "1GB", threads: int = 2) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="consentgate-audit-", dir=work_dir)
        self.db = duckdb.connect(":memory:")
        self.db.execute(f"SET memory_limit = '{memory_limit}'")
        self.db.execute(f"SET temp_directory = '{Path(self._tmp.name) / 'spill'}'")
        self.db.execute(f"SET threads = {threads}")
        self.db.execute("SET preserve_insertion_order = false")
        for name, schema in TABLES.items():
            self._create(name, schema)

    def _create(self, name: str, schema: pa.Schema) -> None:
        self.db.register("empty_rows", schema.empty_table())
        self.db.execute(f"CREATE TABLE {name} AS SELECT * FROM empty_rows")
        self.db.unregister("empty_rows")

    def append(self, name: str, table: pa.Table) -> None:
        if table.num_rows:
            self.db.register("incoming", table)
            self.db.execute(f"INSERT INTO {name} SELECT * FROM incoming")
            self.db.unregister("incoming")

    def load_history(self, history: History) -> None:
        self.db.execute("CREATE TABLE versions (user_id VARCHAR, version BIGINT, action VARCHAR, erased BOOLEAN, "
                        "appended_at BIGINT, changed_at BIGINT, receipt_id VARCHAR)")
        self.db.execute("CREATE TABLE grants (user_id VARCHAR, category VARCHAR, purpose VARCHAR, "
                        "from_version BIGINT, to_version BIGINT, granted_at BIGINT, expires_at BIGINT, "
                        "terms_version BIGINT, receipt_id VARCHAR)")
        for name, rows, fields in (("versions", history.versions, 7), ("grants", history.grants, 9)):
            if rows:
                cols = list(zip(*rows))
                self.append(name, pa.table({f"c{i}": pa.array(list(cols[i])) for i in range(fields)}))

    def load_catalog(self, catalog: Catalog) -> None:
        self.db.execute("CREATE TABLE uses (purpose VARCHAR, category VARCHAR, terms_current BIGINT, "
                        "keep VARCHAR[], ord INTEGER)")
        self.db.execute("CREATE TABLE purposes (purpose VARCHAR, terms_current BIGINT, ord INTEGER)")
        self.db.execute("CREATE TABLE categories (category VARCHAR)")
        for n, p in enumerate(catalog.purposes.values()):
            self.db.execute("INSERT INTO purposes VALUES (?, ?, ?)", [p.name, p.terms_version, n])
            for category, use in p.categories.items():
                self.db.execute("INSERT INTO uses VALUES (?, ?, ?, ?, ?)",
                                [p.name, category, p.terms_version, list(use.keep), n])
        for name in catalog.categories:
            self.db.execute("INSERT INTO categories VALUES (?)", [name])

    def load_scope(self, partitions: dict[int, tuple[int, int]], bounds: list[tuple[int, int, int]]) -> None:
        self.db.execute("CREATE TABLE scope (p INTEGER, start_offset BIGINT, end_offset BIGINT)")
        self.db.executemany("INSERT INTO scope VALUES (?, ?, ?)", [(p, s, e) for p, (s, e) in partitions.items()])
        self.db.execute("CREATE TABLE bounds (p INTEGER, t BIGINT, boundary BIGINT)")
        if bounds:
            cols = list(zip(*bounds))
            self.append("bounds", pa.table({"p": pa.array(cols[0], pa.int32()), "t": pa.array(cols[1], pa.int64()),
                                            "boundary": pa.array(cols[2], pa.int64())}))

    def close(self) -> None:
        self.db.close()
        self._tmp.cleanup()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def hmac_pads(secret: bytes) -> tuple[bytes, bytes]:
    """HMAC-SHA256's inner and outer padded keys, so SQL can compute the keyed hashes."""
    key = hashlib.sha256(secret).digest() if len(secret) > BLOCK else secret
    key = key.ljust(BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
