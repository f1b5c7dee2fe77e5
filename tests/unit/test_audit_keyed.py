"""The audit's keyed hashes equal the gate's (consentgate.pseudonyms), on exactly the passing outcomes."""

from __future__ import annotations

import pyarrow as pa

from consentgate.audit import keyed as keyed_module
from consentgate.audit.columns import OUTCOME
from consentgate.audit.keyed import KeyedHashes
from consentgate.pseudonyms import pseudonym, record_id

SECRET = b"audit-keyed-test-secret-0123456789abcdef"


def decisions(rows: list[tuple[str, str, list[tuple[str, bool]] | None]]) -> pa.Table:
    return pa.table({
        "event_id": pa.array([r[0] for r in rows], pa.string()), "user_id": pa.array([r[1] for r in rows], pa.string()),
        "outcomes": pa.array([None if r[2] is None else [{"purpose": p, "passed": ok, "reason": None if ok else "no_grant"}
                                                         for p, ok in r[2]] for r in rows], pa.list_(OUTCOME))})


def test_hashes_of_passing_outcomes_equal_the_gates() -> None:
    table = decisions([("e1", "u1", [("a.x", True), ("b.y", False), ("c.z", True)]), ("e2", "u2", []),
                       ("e3", "u1", None), ("e4", "u1", [("a.x", True)])])
    got = KeyedHashes(SECRET).with_keyed(table)
    assert got.column("record_ids").to_pylist() == [
        [record_id(SECRET, "a.x", "e1"), None, record_id(SECRET, "c.z", "e1")], [], None, [record_id(SECRET, "a.x", "e4")]]
    assert got.column("pseudonyms").to_pylist() == [
        [pseudonym(SECRET, "a.x", "u1"), None, pseudonym(SECRET, "c.z", "u1")], [], None, [pseudonym(SECRET, "a.x", "u1")]]
    assert got.column_names == ["event_id", "user_id", "outcomes", "record_ids", "pseudonyms"]


def test_a_long_secret_is_hashed_first_as_hmac_does() -> None:
    secret = bytes(range(100))
    assert KeyedHashes(secret).pseudonym("a.x", "u1") == pseudonym(secret, "a.x", "u1")


def test_the_pseudonym_cache_stays_bounded(monkeypatch: object) -> None:
    monkeypatch.setattr(keyed_module, "CACHED", 3)  # type: ignore[attr-defined]
    hashes = KeyedHashes(SECRET)
    for n in range(10):
        assert hashes.pseudonym("a.x", f"u{n}") == pseudonym(SECRET, "a.x", f"u{n}")
        assert len(hashes._pseudonyms) <= 3  # noqa: SLF001
