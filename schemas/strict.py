"""Strict checks of Avro binary input, compiled once per writer schema. Pure: no I/O.

fastavro reads leniently: it ignores bytes after the record, accepts overlong (non-canonical)
varints and takes a negative union index as a Python index from the end (silently selecting
the last branch, ``GenericPayload``). Input from a platform's producers is checked here first,
so such a record is rejected as malformed instead of being read as something it is not.

The rules, each a clear ``StrictDecodeError``:
- every int/long is a minimal zig-zag varint (no trailing zero groups) that fits its type;
- a union index, an enum index and a boolean byte are in range;
- a length (string, bytes, block byte-size) is non-negative and within the record;
- array and map blocks follow the spec (a negative count is followed by the block's byte size);
- the record ends exactly at the end of the input: no trailing bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[bytes, int], int]  # (data, position) -> position after the value


class StrictDecodeError(ValueError):
    """The bytes are not a canonical Avro encoding of the writer schema."""


class UnsupportedSchema(Exception):
    """The schema uses a construct the checker does not know (the caller treats it as a mismatch)."""


def _varint(data: bytes, pos: int, max_bytes: int, what: str) -> tuple[int, int]:
    """Read a zig-zag varint; returns (value, position after it)."""
    result = shift = 0
    start = pos
    end = len(data)
    while True:
        if pos >= end:
            raise StrictDecodeError(f"{what} runs past the end of the record at byte {start}")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if pos - start >= max_bytes:
            raise StrictDecodeError(f"{what} at byte {start} is longer than {max_bytes} bytes")
    if pos - start > 1 and b == 0:
        raise StrictDecodeError(f"overlong (non-canonical) {what} at byte {start}")
    bits = 64 if max_bytes == 10 else 32
    if result >> bits:
        raise StrictDecodeError(f"{what} at byte {start} does not fit {bits} bits")
    return (result >> 1) ^ -(result & 1), pos


def _long(data: bytes, pos: int) -> int:
    return _varint(data, pos, 10, "long")[1]


def _int(data: bytes, pos: int) -> int:
    return _varint(data, pos, 5, "int")[1]


def _length(data: bytes, pos: int, what: str) -> tuple[int, int]:
    n, pos = _varint(data, pos, 10, f"{what} length")
    if n < 0:
        raise StrictDecodeError(f"negative {what} length {n} at byte {pos}")
    if pos + n > len(data):
        raise StrictDecodeError(f"{what} of {n} bytes at byte {pos} runs past the end of the record")
    return n, pos


def _bytes(data: bytes, pos: int) -> int:
    n, pos = _length(data, pos, "bytes")
    return pos + n


def _string(data: bytes, pos: int) -> int:
    n, pos = _length(data, pos, "string")
    try:
        data[pos:pos + n].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictDecodeError(f"string at byte {pos} is not UTF-8: {exc.reason}") from exc
    return pos + n


def _boolean(data: bytes, pos: int) -> int:
    if pos >= len(data):
        raise StrictDecodeError("boolean runs past the end of the record")
    if data[pos] > 1:
        raise StrictDecodeError(f"boolean byte {data[pos]} at byte {pos} is neither 0 nor 1")
    return pos + 1


def _fixed_size(size: int, what: str) -> Check:
    def check(data: bytes, pos: int) -> int:
        if pos + size > len(data):
            raise StrictDecodeError(f"{what} at byte {pos} runs past the end of the record")
        return pos + size

    return check


_PRIMITIVES: dict[str, Check] = {
    "null": lambda data, pos: pos, "boolean": _boolean, "int": _int, "long": _long,
    "float": _fixed_size(4, "float"), "double": _fixed_size(8, "double"), "bytes": _bytes, "string": _string,
}


def _blocks(item: Check, what: str) -> Check:
    def check(data: bytes, pos: int) -> int:
        while True:
            count, pos = _varint(data, pos, 10, f"{what} block count")
            if count == 0:
                return pos
            if count < 0:
                count = -count
                size, pos = _length(data, pos, f"{what} block")
                block_end = pos + size
                for _ in range(count):
                    pos = item(data, pos)
                if pos != block_end:
                    raise StrictDecodeError(f"{what} block declares {size} bytes but holds {size + pos - block_end}")
            else:
                for _ in range(count):
                    pos = item(data, pos)

    return check


def _compile(schema: Any, named: dict[str, Check], namespace: str) -> Check:
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        full = schema if "." in schema else f"{namespace}.{schema}" if namespace else schema
        if full in named:
            return lambda data, pos: named[full](data, pos)  # late bound: recursive types
        raise UnsupportedSchema(f"unknown type {schema!r}")
    if isinstance(schema, list):
        branches = [_compile(b, named, namespace) for b in schema]

        def union(data: bytes, pos: int) -> int:
            start = pos
            index, pos = _varint(data, pos, 10, "union index")
            if not 0 <= index < len(branches):
                raise StrictDecodeError(f"union index {index} at byte {start} is not one of "
                                        f"0..{len(branches) - 1}")
            return branches[index](data, pos)

        return union
    if not isinstance(schema, dict):
        raise UnsupportedSchema(f"schema {schema!r}")
    kind = schema.get("type")
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind in ("record", "error"):
        ns = schema.get("namespace", namespace)
        name = schema["name"]
        full = name if "." in name else f"{ns}.{name}" if ns else name
        fields: list[Check] = []
        named[full] = lambda data, pos: _record(fields, data, pos)
        fields.extend(_compile(f["type"], named, ns) for f in schema["fields"])
        return named[full]
    if kind == "enum":
        symbols = len(schema["symbols"])

        def enum(data: bytes, pos: int) -> int:
            start = pos
            index, pos = _varint(data, pos, 5, "enum index")
            if not 0 <= index < symbols:
                raise StrictDecodeError(f"enum index {index} at byte {start} is not one of 0..{symbols - 1}")
            return pos

        _name(schema, named, namespace, enum)
        return enum
    if kind == "fixed":
        check = _fixed_size(int(schema["size"]), "fixed")
        _name(schema, named, namespace, check)
        return check
    if kind == "array":
        return _blocks(_compile(schema["items"], named, namespace), "array")
    if kind == "map":
        value = _compile(schema["values"], named, namespace)
        return _blocks(lambda data, pos: value(data, _string(data, pos)), "map")
    raise UnsupportedSchema(f"type {kind!r}")


def _name(schema: dict[str, Any], named: dict[str, Check], namespace: str, check: Check) -> None:
    ns = schema.get("namespace", namespace)
    name = schema["name"]
    named[name if "." in name else f"{ns}.{name}" if ns else name] = check


def _record(fields: list[Check], data: bytes, pos: int) -> int:
    for check in fields:
        pos = check(data, pos)
    return pos


def compile_checker(schema: Any) -> Callable[[bytes, int], None]:
    """A checker for values written with ``schema`` (JSON form), starting at ``offset`` of the data.

    Raises ``UnsupportedSchema`` for schemas it cannot check (the caller must not read such input).
    """
    check = _compile(schema, {}, "")

    def whole(data: bytes, offset: int) -> None:
        end = check(data, offset)
        if end != len(data):
            raise StrictDecodeError(f"{len(data) - end} trailing bytes after the record")

    return whole
