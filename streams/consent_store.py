"""Where a worker keeps the consent view: each user's latest ConsentState.

``memory`` is a dict of the raw Confluent-framed bytes; ``rocksdb`` keeps those bytes on disk for
tens of millions of users; ``compact`` is the compiled kernel's ``ConsentTable``: a packed record per
user behind a hash index (about 150 bytes a user with five grants), decoded strictly on the way in
and read by the kernel's route without a Python call per user. Decoded states live in a bounded
cache in front of every store (see ``consent_view``).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from consentgate.model import ConsentState, Grant

TOMBSTONE = b""  # the user was erased
CORRUPT = b"\xff"  # the record could not be read: the user fails closed
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class ConsentStore(Protocol):
    def put(self, user_id: str, value: bytes) -> str | None:
        """Store a raw value; a store that decodes on the way in returns why it cannot read it."""

    def put_many(self, items: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
        """Store many in order; returns (user, why) for each value the store could not read."""

    def get(self, user_id: str) -> bytes | ConsentState | None:
        """The raw value (TOMBSTONE, CORRUPT or framed bytes), or the state a decoding store holds."""

    def __len__(self) -> int: ...
    def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def put(self, user_id: str, value: bytes) -> None:
        self._data[user_id] = value

    def put_many(self, items: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
        self._data.update(items)
        return []

    def get(self, user_id: str) -> bytes | None:
        return self._data.get(user_id)

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        self._data.clear()


class RocksStore:
    """On-disk view; rebuilt from consent.state on every start (the topic is the truth).

    Because it is rebuilt on every start, nothing is written to RocksDB's write-ahead log, and
    recovery writes in batches without reading first. Its size is RocksDB's estimate of the number
    of keys (exact for the memory store).
    """

    def __init__(self, path: Path) -> None:
        from rocksdict import Options, Rdict, WriteOptions

        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options)
        no_wal = WriteOptions()
        no_wal.disable_wal = True
        self._db.set_write_options(no_wal)

    def put(self, user_id: str, value: bytes) -> None:
        self._db[user_id.encode()] = value

    def put_many(self, items: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for user_id, value in items:
            batch.put(user_id.encode(), value)
        self._db.write(batch)
        return []

    def get(self, user_id: str) -> bytes | None:
        value = self._db.get(user_id.encode())
        return None if value is None else bytes(value)

    def __len__(self) -> int:
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def close(self) -> None:
        self._db.close()


class CompactStore:
    """The kernel's ``ConsentTable``: records in the registered ConsentState schema are decoded strictly
    and packed as they arrive (one that cannot be read is reported by ``put`` and held as CORRUPT);
    records of any other writer schema are kept raw for the codec; an empty value is the tombstone.

    ``table`` is a ``consentgate._kernel.ConsentTable(classify, fallback)``: ``classify(schema_id)`` says
    whether a schema id is exactly the registered contract (None: cannot tell now); ``Kernel.route``
    reads the table natively and calls ``fallback(user)`` for a user kept raw.
    """

    def __init__(self, table: Any) -> None:
        self.table = table

    def put(self, user_id: str, value: bytes) -> str | None:
        problem: str | None = self.table.put(user_id, value)
        return problem

    def put_many(self, items: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = self.table.put_many(items)
        return problems

    def get(self, user_id: str) -> bytes | ConsentState | None:
        found = self.table.get(user_id)
        if found is None or isinstance(found, bytes):
            return found
        version, updated_at, tier, plan, grants = found
        return ConsentState(user_id, version, _time(updated_at), tier, plan, tuple(
            Grant(category, purpose, _time(granted_at), None if expires_at is None else _time(expires_at),
                  terms_version, receipt_id)
            for category, purpose, granted_at, expires_at, terms_version, receipt_id in grants))

    def memory(self) -> int:
        """Bytes the table has allocated."""
        used: int = self.table.memory()
        return used

    def __len__(self) -> int:
        return len(self.table)

    def close(self) -> None:
        self.table.fallback = None  # the view's get: no cycle left behind


def _time(millis: int) -> datetime:
    """A timestamp-millis value as fastavro reads it."""
    return _EPOCH + timedelta(microseconds=millis * 1000)
