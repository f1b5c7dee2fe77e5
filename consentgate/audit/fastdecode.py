"""Columnar decoding of the audited contracts through compiled kernels (``kernels``), into Arrow.

The reference path (``columns``) decodes one record at a time through the project's codecs,
about 10-400 µs a record in Python: too slow for millions. Here a chunk's values are laid end
to end in one byte buffer and a compiled kernel walks every record of the chunk, writing
numbers into arrays and strings as (start, length) spans that become Arrow string columns
without a Python object per value. Only records written with the exact schema this kernel
knows (the shipped contract, by parsing canonical form) take this path; any other schema id,
and any record the kernel finds malformed (overlong or truncated varints, out-of-range union,
enum or boolean bytes, trailing bytes), goes through the reference path, which reports it.
``tests/unit/test_audit_fastdecode.py`` holds the two paths equal.
"""

from __future__ import annotations

import json
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
from confluent_kafka import Message
from consentgate.schemas.codec import Codec
from consentgate.schemas.contracts import schema_json

from consentgate.audit import columns
from consentgate.audit.findings import Finding
from consentgate.audit.kernels import (
    BOOLEAN, ENUM, LONG, NULL_DOUBLE, NULL_ENUM, NULL_INT, NULL_LONG, NULL_STRING, STRING, STRING_DOUBLE_MAP, _decisions,
    _flat, _gather,
)
from consentgate.audit.history import Change

REASONS = next(f["type"][1]["symbols"] for f in schema_json("Decision")["fields"][4]["type"]["items"]["fields"]
               if f["name"] == "reason")
# timestamp-millis the reference decoder can represent (datetime years 1..9999); others take its path
MIN_MS, MAX_MS = -62135596800000, 253402300799999


def _strings(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, keep: np.ndarray) -> pa.Array:
    data, offsets = _gather(buf, starts, lens, keep)
    array = pa.StringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
    array.validate(full=True)  # UTF-8, as Avro requires; an invalid string raises (the chunk then goes slow)
    return array


def _layout(msgs: list[Message]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = [m.value() or b"" for m in msgs]
    lengths = np.array([len(v) for v in values], np.int64)
    ends = np.cumsum(lengths)
    return np.frombuffer(b"".join(values), np.uint8), ends - lengths, ends


def _coords(msgs: list[Message], keep: np.ndarray) -> list[pa.Array]:
    parts = np.array([m.partition() for m in msgs], np.int32)
    offsets = np.array([m.offset() for m in msgs], np.int64)
    stamps = np.array([m.timestamp()[1] for m in msgs], np.int64)
    return [pa.array(parts[keep]), pa.array(offsets[keep]), pa.array(stamps[keep])]


class FastDecoder:
    """Decodes chunks of one contract through the compiled kernel where the writer schema allows."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._canonical = fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(
            schema_json(codec.contract)))
        self._ids: dict[int, bool] = {}

    def _accepted(self, buf: np.ndarray, starts: np.ndarray) -> np.ndarray:
        heads = starts[(starts + 5 <= len(buf))]
        ids = set()
        if len(heads):
            raw = buf[heads[:, None] + np.arange(1, 5)].astype(np.int64)
            ids = set(np.unique((raw[:, 0] << 24) | (raw[:, 1] << 16) | (raw[:, 2] << 8) | raw[:, 3]).tolist())
        for sid in ids - set(self._ids):
            try:
                text = self.codec._client.get_schema(int(sid)).schema_str or "null"  # noqa: SLF001
                parsed = fastavro.parse_schema(json.loads(text))
                self._ids[sid] = fastavro.schema.to_parsing_canonical_form(parsed) == self._canonical
            except Exception:  # noqa: BLE001 - unknown or unreachable: the reference path says which
                self._ids[sid] = False
        return np.array([s for s, ok in self._ids.items() if ok] or [-1], np.int64)

    def decisions(self, msgs: list[Message], unreadable: list[Finding]) -> pa.Table:
        buf, starts, ends = _layout(msgs)
        n = len(msgs)
        s_start = np.zeros((n, 4), np.int64)
        s_len = np.zeros((n, 4), np.int64)
        nums = np.zeros((n, 4), np.int64)
        null_version = np.zeros(n, np.bool_)
        outcome_count = np.zeros(n, np.int64)
        cap = max(16, n * 4)
        o_start, o_len = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
        o_passed, o_reason = np.zeros(cap, np.bool_), np.zeros(cap, np.int8)
        status = np.ones(n, np.int8)
        m = _decisions(buf, starts, ends, self._accepted(buf, starts), s_start, s_len, nums, null_version,
                       outcome_count, o_start, o_len, o_passed, o_reason, status)
        decoded = status == 0
        keep = decoded & (nums[:, 0] >= MIN_MS) & (nums[:, 0] <= MAX_MS)
        every = np.repeat(keep[decoded], outcome_count[decoded])
        o_start, o_len = o_start[:m][every], o_len[:m][every]
        o_passed, o_reason = o_passed[:m][every], o_reason[:m][every]
        m = len(o_start)
        every = np.ones(m, np.bool_)
        try:
            strings = [_strings(buf, s_start[:, f], s_len[:, f], keep) for f in range(4)]
            reasons = pa.DictionaryArray.from_arrays(pa.array(o_reason[:m], pa.int8(), mask=o_reason[:m] < 0),
                                                     pa.array(REASONS)).cast(pa.string())
            outcomes = pa.StructArray.from_arrays(
                [_strings(buf, o_start[:m], o_len[:m], every), pa.array(o_passed[:m]), reasons],
                fields=list(columns.OUTCOME))
        except pa.ArrowInvalid:  # invalid UTF-8 somewhere: let the reference path find and report it
            return columns.decisions(self.codec, msgs, unreadable)
        counts = outcome_count[keep]
        list_offsets = np.zeros(len(counts) + 1, np.int32)
        np.cumsum(counts, out=list_offsets[1:])
        kept_nums = nums[keep]
        fast = pa.Table.from_arrays([
            strings[0], strings[1], strings[2], pa.array(kept_nums[:, 0]),
            pa.array(kept_nums[:, 1], mask=null_version[keep]), strings[3],
            pa.array(kept_nums[:, 2], pa.int32()), pa.array(kept_nums[:, 3]),
            pa.ListArray.from_arrays(pa.array(list_offsets), outcomes), *_coords(msgs, keep)], schema=columns.DECISIONS)
        slow = [msg for msg, k in zip(msgs, keep) if not k]
        return pa.concat_tables([fast, columns.decisions(self.codec, slow, unreadable)]) if slow else fast


PLANS = {
    "TrainingRecord": [(STRING, 0, 0), (STRING, 1, 0), (STRING, 2, 0), (STRING, 3, 0), (STRING, 4, 0), (LONG, 0, 0),
                       (STRING_DOUBLE_MAP, 0, 0), (LONG, 1, 0)],
    "Contribution": [(STRING, 0, 0), (STRING, 1, 0), (STRING, 2, 0), (STRING, 3, 0), (STRING, 4, 0), (STRING, 5, 0),
                     (LONG, 0, 0), (NULL_DOUBLE, -1, 0), (NULL_LONG, 1, 0), (LONG, 2, 0), (ENUM, 3, 2),
                     (NULL_ENUM, 4, 4), (STRING, 6, 0), (LONG, 3, 0)],
    "ConsentChange": [(STRING, 0, 0), (STRING, 1, 0), (ENUM, 0, 5), (NULL_STRING, 2, 0), (NULL_STRING, 3, 0),
                      (LONG, 1, 0), (STRING, 4, 0), (NULL_INT, 2, 0), (NULL_STRING, 5, 0), (NULL_STRING, 6, 0),
                      (NULL_LONG, 3, 0), (NULL_ENUM, 4, 2), (NULL_ENUM, 5, 4), (LONG, 6, 0), (NULL_STRING, 7, 0),
                      (NULL_STRING, 8, 0), (BOOLEAN, -1, 0), (NULL_STRING, 9, 0)],
}
TIMESTAMPS = {"TrainingRecord": [0], "Contribution": [2], "ConsentChange": [1, 3]}  # timestamp-millis columns
ACTIONS = next(f["type"]["symbols"] for f in schema_json("ConsentChange")["fields"] if f["name"] == "action")


def _lists(counts: np.ndarray, values: pa.Array) -> pa.Array:
    offsets = np.zeros(len(counts) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


class _Flat:
    """The kernel's raw output for one chunk of a flat contract."""

    def __init__(self, decoder: FastDecoder, msgs: list[Message]) -> None:
        plan = PLANS[decoder.codec.contract]
        self.buf, starts, ends = _layout(msgs)
        n = len(msgs)
        strings = 1 + max(c for op, c, _ in plan if op in (STRING, NULL_STRING))
        numbers = 1 + max([c for op, c, _ in plan if op not in (STRING, NULL_STRING)] + [0])
        self.s_start, self.s_len = np.zeros((n, strings), np.int64), np.zeros((n, strings), np.int64)
        self.s_null = np.zeros((n, strings), np.bool_)
        self.nums, self.nulls = np.zeros((n, numbers), np.int64), np.zeros((n, numbers), np.bool_)
        self.map_count = np.zeros(n, np.int64)
        cap = max(16, n * 4)
        self.k_start, self.k_len = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
        self.v_start, self.v_len = np.zeros(cap, np.int64), np.zeros(cap, np.int64)
        self.v_string = np.zeros(cap, np.bool_)
        status = np.ones(n, np.int8)
        self.m = _flat(self.buf, starts, ends, decoder._accepted(self.buf, starts), np.array(plan, np.int64),
                       self.s_start, self.s_len, self.s_null, self.nums, self.nulls,
                       self.map_count, self.k_start, self.k_len, self.v_start, self.v_len, self.v_string, status)
        decoded = status == 0
        keep = decoded.copy()
        for col in TIMESTAMPS[decoder.codec.contract]:
            keep &= (self.nums[:, col] >= MIN_MS) & (self.nums[:, col] <= MAX_MS)
        entries = np.repeat(keep[decoded], self.map_count[decoded])
        for name in ("k_start", "k_len", "v_start", "v_len", "v_string"):
            setattr(self, name, getattr(self, name)[:self.m][entries])
        self.m = int(entries.sum())
        self.keep = keep

    def string(self, col: int, nullable: bool = False) -> pa.Array:
        values = _strings(self.buf, self.s_start[:, col], self.s_len[:, col], self.keep)
        if not nullable:
            return values
        return pa.compute.if_else(pa.array(self.s_null[self.keep, col]), pa.scalar(None, pa.string()), values)

    def number(self, col: int, kind: pa.DataType = pa.int64(), nullable: bool = False) -> pa.Array:
        return pa.array(self.nums[self.keep, col], kind, mask=self.nulls[self.keep, col] if nullable else None)


def _training(decoder: FastDecoder, msgs: list[Message], unreadable: list[Finding]) -> pa.Table:
    flat = _Flat(decoder, msgs)
    m = flat.m
    names = _strings(flat.buf, flat.k_start[:m], flat.k_len[:m], np.ones(m, np.bool_))
    texts = _strings(flat.buf, flat.v_start[:m], flat.v_len[:m], flat.v_string[:m])
    counts = flat.map_count[flat.keep]
    # per record, how many of its map values are strings
    owner = np.repeat(np.arange(len(counts)), counts)
    text_counts = np.bincount(owner[flat.v_string[:m]], minlength=len(counts)) if m else np.zeros(len(counts), int)
    kept = int(flat.keep.sum())
    topic = pa.array([msgs[0].topic()] * kept, pa.string()) if kept else pa.array([], pa.string())
    fast = pa.Table.from_arrays([
        flat.string(0), flat.string(1), flat.string(2), flat.string(3), flat.string(4), flat.number(0),
        flat.number(1), _lists(counts, names), _lists(text_counts, texts),
        _lists(np.zeros(kept, np.int64), pa.array([], pa.string())), topic, *_coords(msgs, flat.keep)],
        schema=columns.TRAINING)
    slow = [msg for msg, k in zip(msgs, flat.keep) if not k]
    return pa.concat_tables([fast, columns.training(decoder.codec, slow, unreadable)]) if slow else fast


def _contributions(decoder: FastDecoder, msgs: list[Message], unreadable: list[Finding]) -> pa.Table:
    flat = _Flat(decoder, msgs)
    fast = pa.Table.from_arrays([
        flat.string(0), flat.string(1), flat.string(4), flat.string(5), flat.number(2), flat.number(3),
        flat.number(0), flat.string(2), flat.string(3), *_coords(msgs, flat.keep)], schema=columns.CONTRIBUTIONS)
    slow = [msg for msg, k in zip(msgs, flat.keep) if not k]
    return pa.concat_tables([fast, columns.contributions(decoder.codec, slow, unreadable)]) if slow else fast


def _changes(decoder: FastDecoder, msgs: list[Message], unreadable: list[Finding]) -> list[Change]:
    flat = _Flat(decoder, msgs)
    kept = [m for m, k in zip(msgs, flat.keep) if k]
    nums, nulls = flat.nums[flat.keep].tolist(), flat.nulls[flat.keep].tolist()
    out = [Change(user, n[6], ACTIONS[n[0]], category, purpose, n[1], None if z[3] else n[3], None if z[2] else n[2],
                  receipt, msg.timestamp()[1], columns.where(msg))
           for user, category, purpose, receipt, n, z, msg in zip(
               flat.string(1).to_pylist(), flat.string(2, True).to_pylist(), flat.string(3, True).to_pylist(),
               flat.string(0).to_pylist(), nums, nulls, kept)]
    slow = [msg for msg, k in zip(msgs, flat.keep) if not k]
    return out + columns.changes(decoder.codec, slow, unreadable) if slow else out


def decoder_for(codec: Codec) -> columns.Decoder | None:
    """The compiled decoder of ``codec``'s contract, or None where there is none."""
    fast = FastDecoder(codec)
    chosen = {"Decision": lambda msgs, bad: fast.decisions(msgs, bad),
              "TrainingRecord": lambda msgs, bad: _guard(_training, fast, msgs, bad, columns.training),
              "Contribution": lambda msgs, bad: _guard(_contributions, fast, msgs, bad, columns.contributions),
              "ConsentChange": lambda msgs, bad: _guard(_changes, fast, msgs, bad, columns.changes),
              }.get(codec.contract)
    if chosen is None:
        return None
    return lambda _codec, msgs, bad: chosen(msgs, bad)


def _guard(run: Any, fast: FastDecoder, msgs: list[Message], bad: list[Finding], reference: Any) -> pa.Table:
    try:
        return run(fast, msgs, bad)  # type: ignore[no-any-return]
    except pa.ArrowInvalid:  # invalid UTF-8 somewhere: the reference path finds and reports it
        return reference(fast.codec, msgs, bad)  # type: ignore[no-any-return]
