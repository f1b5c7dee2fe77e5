"""The compiled kernels of the audit's columnar decoding (numba): no I/O, no Python objects per record.

Each walks every record of a chunk laid end to end in one byte buffer and writes numbers into
arrays and strings as (start, length) spans; ``fastdecode`` turns those into Arrow columns. A
record a kernel cannot read exactly (another schema id, an overlong or truncated varint, an
out-of-range union, enum or boolean byte, trailing bytes) gets status 1 and is left to the
reference decoder, which reports it.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np

MAX_OUTCOMES = 64  # per record; a record with more takes the reference path
MAX_FIELDS = 64


@nb.njit(cache=True, inline="always")
def _long(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """A minimal zig-zag varint of at most 64 bits; position -1 on error."""
    result = np.uint64(0)
    shift = 0
    first = pos
    while True:
        if pos >= end or shift > 63:
            return 0, -1
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:
            return 0, -1  # more than 64 bits
        result |= np.uint64(b & 0x7F) << np.uint64(shift)
        if b < 0x80:
            if b == 0 and pos - first > 1:
                return 0, -1  # overlong
            break
        shift += 7
    return np.int64(result >> np.uint64(1)) ^ -np.int64(result & np.uint64(1)), pos


@nb.njit(cache=True, inline="always")
def _span(buf: Any, pos: int, end: int) -> tuple[int, int, int]:
    """A string: (start, length, position after); position -1 on error."""
    n, pos = _long(buf, pos, end)
    if pos < 0 or n < 0 or pos + n > end:
        return 0, 0, -1
    return pos, n, pos + n


@nb.njit(cache=True)
def _decisions(buf, starts, ends, ok_ids, s_start, s_len, nums, null_version, outcome_count,
               o_start, o_len, o_passed, o_reason, status):  # type: ignore[no-untyped-def]
    """Fields per record: strings event_id, user_id, category, in_topic; nums decided_at, consent_version,
    in_partition, in_offset."""
    m = 0
    for i in range(starts.shape[0]):
        pos, end = starts[i], ends[i]
        status[i] = 1
        if end - pos < 5 or buf[pos] != 0:
            continue
        sid = (buf[pos + 1] << 24) | (buf[pos + 2] << 16) | (buf[pos + 3] << 8) | buf[pos + 4]
        known = False
        for k in ok_ids:
            if k == sid:
                known = True
        if not known:
            continue
        pos += 5
        bad = False
        for f in range(3):
            s_start[i, f], s_len[i, f], pos = _span(buf, pos, end)
            if pos < 0:
                bad = True
                break
        if bad:
            continue
        nums[i, 0], pos = _long(buf, pos, end)
        if pos < 0:
            continue
        first = m
        while True:
            count, pos = _long(buf, pos, end)
            if pos < 0:
                bad = True
                break
            if count == 0:
                break
            if count < 0:
                count = -count
                _, pos = _long(buf, pos, end)  # the block's byte size
                if pos < 0:
                    bad = True
                    break
            if m - first + count > MAX_OUTCOMES or m + count > o_start.shape[0]:
                bad = True
                break
            for _ in range(count):
                o_start[m], o_len[m], pos = _span(buf, pos, end)
                if pos < 0 or pos >= end or buf[pos] > 1:
                    bad = True
                    break
                o_passed[m] = buf[pos] == 1
                pos += 1
                branch, pos = _long(buf, pos, end)
                if pos < 0 or branch < 0 or branch > 1:
                    bad = True
                    break
                o_reason[m] = -1
                if branch == 1:
                    reason, pos = _long(buf, pos, end)
                    if pos < 0 or reason < 0 or reason >= 7:
                        bad = True
                        break
                    o_reason[m] = reason
                m += 1
            if bad:
                break
        if bad:
            m = first
            continue
        branch, pos = _long(buf, pos, end)
        if pos < 0 or branch < 0 or branch > 1:
            m = first
            continue
        null_version[i] = branch == 0
        nums[i, 1] = 0
        if branch == 1:
            nums[i, 1], pos = _long(buf, pos, end)
            if pos < 0:
                m = first
                continue
        s_start[i, 3], s_len[i, 3], pos = _span(buf, pos, end)
        if pos < 0:
            m = first
            continue
        nums[i, 2], pos = _long(buf, pos, end)
        if pos < 0 or nums[i, 2] < -2147483648 or nums[i, 2] > 2147483647:
            m = first
            continue
        nums[i, 3], pos = _long(buf, pos, end)
        if pos != end:  # also catches an error (-1) and trailing bytes
            m = first
            continue
        outcome_count[i] = m - first
        status[i] = 0
    return m


@nb.njit(cache=True)
def _gather(buf, starts, lens, keep):  # type: ignore[no-untyped-def]
    """Copy the kept spans end to end: (data, int32 offsets)."""
    n = 0
    total = 0
    for i in range(starts.shape[0]):
        if keep[i]:
            n += 1
            total += lens[i]
    data = np.empty(total, np.uint8)
    offsets = np.zeros(n + 1, np.int32)
    j = 0
    at = 0
    for i in range(starts.shape[0]):
        if keep[i]:
            data[at:at + lens[i]] = buf[starts[i]:starts[i] + lens[i]]
            at += lens[i]
            j += 1
            offsets[j] = at
    return data, offsets


# (op, column, enum size): strings go to string columns, numbers to number columns (-1: skipped).
STRING, LONG, NULL_LONG, NULL_DOUBLE, ENUM, NULL_ENUM, STRING_DOUBLE_MAP, NULL_STRING, NULL_INT, BOOLEAN = range(10)


@nb.njit(cache=True)
def _flat(buf, starts, ends, ok_ids, plan, s_start, s_len, s_null, nums, nulls, map_count,  # type: ignore[no-untyped-def]
          k_start, k_len, v_start, v_len, v_string, status):
    m = 0
    for i in range(starts.shape[0]):
        pos, end = starts[i], ends[i]
        status[i] = 1
        if end - pos < 5 or buf[pos] != 0:
            continue
        sid = (buf[pos + 1] << 24) | (buf[pos + 2] << 16) | (buf[pos + 3] << 8) | buf[pos + 4]
        known = False
        for k in ok_ids:
            if k == sid:
                known = True
        if not known:
            continue
        pos += 5
        first = m
        for step in range(plan.shape[0]):
            op, col, enum_limit = plan[step, 0], plan[step, 1], plan[step, 2]
            if op == 0:
                s_start[i, col], s_len[i, col], pos = _span(buf, pos, end)
            elif op == 7:
                branch, pos = _long(buf, pos, end)
                if pos < 0 or branch < 0 or branch > 1:
                    pos = -1
                else:
                    s_null[i, col] = branch == 0
                    s_start[i, col], s_len[i, col] = 0, 0
                    if branch == 1:
                        s_start[i, col], s_len[i, col], pos = _span(buf, pos, end)
            elif op == 1:
                nums[i, col], pos = _long(buf, pos, end)
            elif op == 2 or op == 3 or op == 5 or op == 8:
                branch, pos = _long(buf, pos, end)
                if pos < 0 or branch < 0 or branch > 1:
                    pos = -1
                elif branch == 0:
                    if col >= 0:
                        nulls[i, col] = True
                elif op == 3:
                    pos = pos + 8 if pos + 8 <= end else -1
                else:
                    value, pos = _long(buf, pos, end)
                    if op == 5 and (value < 0 or value >= enum_limit):
                        pos = -1
                    if op == 8 and (value < -2147483648 or value > 2147483647):
                        pos = -1
                    if col >= 0:
                        nums[i, col] = value
                        nulls[i, col] = False
            elif op == 4:
                nums[i, col], pos = _long(buf, pos, end)
                if nums[i, col] < 0 or nums[i, col] >= enum_limit:
                    pos = -1
            elif op == 9:
                if pos >= end or buf[pos] > 1:
                    pos = -1
                else:
                    if col >= 0:
                        nums[i, col] = buf[pos]
                    pos += 1
            elif op == 6:
                while pos >= 0:
                    count, pos = _long(buf, pos, end)
                    if pos < 0 or count == 0:
                        break
                    if count < 0:
                        count = -count
                        _, pos = _long(buf, pos, end)
                        if pos < 0:
                            break
                    if m - first + count > MAX_FIELDS or m + count > k_start.shape[0]:
                        pos = -1
                        break
                    for _ in range(count):
                        k_start[m], k_len[m], pos = _span(buf, pos, end)
                        if pos < 0:
                            break
                        branch, pos = _long(buf, pos, end)
                        if pos < 0 or branch < 0 or branch > 1:
                            pos = -1
                            break
                        v_string[m] = branch == 0
                        if branch == 0:
                            v_start[m], v_len[m], pos = _span(buf, pos, end)
                        else:
                            v_start[m], v_len[m] = 0, 0
                            pos = pos + 8 if pos + 8 <= end else -1
                        if pos < 0:
                            break
                        m += 1
                    if pos < 0:
                        break
            if pos < 0:
                break
        if pos != end:
            m = first
            continue
        map_count[i] = m - first
        status[i] = 0
    return m
