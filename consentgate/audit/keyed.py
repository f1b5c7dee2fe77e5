"""The keyed hashes a passing outcome owes, computed as each chunk of decisions is loaded. Pure: no I/O.

The audit's own reading of SPEC's keyed ids (it does not call ``consentgate.pseudonyms``): the
first 32 hex digits of HMAC-SHA256(secret, message), with ``record\\0<purpose>\\0<event_id>`` for a
record id and ``<purpose>\\0<user_id>`` for a pseudonym. The HMAC's keyed inner and outer states
are computed once and copied per message; a pseudonym is computed once per (purpose, user).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

BLOCK = 64
HEX = 32
CACHED = 1_000_000  # pseudonyms kept; the cache starts over beyond this (memory stays bounded)

KEYED_COLUMNS = [("record_ids", pa.list_(pa.string())), ("pseudonyms", pa.list_(pa.string()))]


class KeyedHashes:
    def __init__(self, secret: bytes) -> None:
        key = (hashlib.sha256(secret).digest() if len(secret) > BLOCK else secret).ljust(BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        self._pseudonyms: dict[tuple[str, str], str] = {}

    def hmac(self, message: str) -> str:
        inner = self._inner.copy()
        inner.update(message.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()[:HEX]

    def pseudonym(self, purpose: str, user_id: str) -> str:
        key = (purpose, user_id)
        found = self._pseudonyms.get(key)
        if found is None:
            if len(self._pseudonyms) >= CACHED:
                self._pseudonyms.clear()
            found = self._pseudonyms[key] = self.hmac(f"{purpose}\0{user_id}")
        return found

    def with_keyed(self, decisions: pa.Table) -> pa.Table:
        """``decisions`` with ``record_ids`` and ``pseudonyms``: lists parallel to ``outcomes``, holding
        the hashes of each passing outcome (null for a drop)."""
        outcomes = decisions.column("outcomes").combine_chunks()
        counts = outcomes.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        flat = outcomes.flatten()
        purposes = flat.field("purpose").to_pylist()
        passed = np.flatnonzero(flat.field("passed").fill_null(False).to_numpy(zero_copy_only=False))
        owner = np.repeat(np.arange(len(counts)), counts)[passed].tolist()
        events = decisions.column("event_id").to_pylist()
        users = decisions.column("user_id").to_pylist()
        record_ids: list[str | None] = [None] * len(purposes)
        pseudonyms: list[str | None] = [None] * len(purposes)
        hmac, pseudonym = self.hmac, self.pseudonym
        for j, i in zip(passed.tolist(), owner):
            purpose = purposes[j]
            record_ids[j] = hmac(f"record\0{purpose}\0{events[i]}")
            pseudonyms[j] = pseudonym(purpose, users[i])
        offsets = np.zeros(len(counts) + 1, np.int32)
        np.cumsum(counts, out=offsets[1:])
        lists = [pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.string()),
                                          mask=outcomes.is_null())
                 for values in (record_ids, pseudonyms)]
        return decisions.append_column(KEYED_COLUMNS[0][0], lists[0]).append_column(KEYED_COLUMNS[1][0], lists[1])
