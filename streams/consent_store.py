"""Where a worker keeps the consent view: raw ConsentState bytes per user.

Raw Confluent-framed bytes keep the view compact (about 100 bytes a user) and let a
newer writer schema be read later; decoded states live in a bounded cache in front.
``memory`` is a dict; ``rocksdb`` keeps the view on disk for tens of millions of users.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

TOMBSTONE = b""  # the user was erased
CORRUPT = b"\xff"  # the record could not be read: the user fails closed


class ConsentStore(Protocol):
    def put(self, user_id: str, value: bytes) -> None: ...
    def put_many(self, items: list[tuple[str, bytes]]) -> None: ...
    def get(self, user_id: str) -> bytes | None: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def put(self, user_id: str, value: bytes) -> None:
        self._data[user_id] = value

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        self._data.update(items)

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

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for user_id, value in items:
            batch.put(user_id.encode(), value)
        self._db.write(batch)

    def get(self, user_id: str) -> bytes | None:
        value = self._db.get(user_id.encode())
        return None if value is None else bytes(value)

    def __len__(self) -> int:
        return int(self._db.property_int_value("rocksdb.estimate-num-keys") or 0)

    def close(self) -> None:
        self._db.close()
