"""Decide-step CPU per record: the compiled kernel against the Python reference, same batch, same run.

    python -m bench.kernel [--records N] [--rounds R]

Stages (µs of this thread's CPU per input record, best of R rounds):
- decode: strict decode + contract checks. Python: the gate's path (``schemas.strict`` check, fastavro,
  ``activity_from_avro``) and the kernel's strict reference; kernel: ``decode_many``.
- assess: quality + SimHash of every text record (``consentgate.quality.assess`` vs the kernel's).
- whole batch: ``route`` = decode, decide, HMAC, assess, encode every output, on the synthetic
  population (``consentgate.synthetic``: 60% of users consent to some pairs).
Python-only rows show where the reference's batch time goes (decide, HMAC, encode).
"""

from __future__ import annotations

import argparse
import io
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import fastavro
from consentgate.kernel import Fetched, available, kernel_for, unavailable_reason
from consentgate.kernel.reference import check_event, decode_activity
from consentgate.schemas.contracts import schema_json
from consentgate.schemas.records import activity_from_avro, activity_to_avro
from consentgate.schemas.strict import compile_checker

from consentgate.decision import decide
from consentgate.model import ConsentState, Grant
from consentgate.pseudonyms import pseudonym, record_id
from consentgate.quality import assess
from consentgate.synthetic import activity, consent_population
from tests.unit.kernel_cases import CATALOG, SECRET, config, encode_event

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
NOW_MS = int(NOW.timestamp() * 1000)


def population(users: int) -> dict[str, ConsentState]:
    grants: dict[str, list[Grant]] = defaultdict(list)
    tiers: dict[str, tuple[str, str | None]] = {}
    for i, req in enumerate(consent_population(CATALOG, users)):
        terms = req.terms_version or CATALOG.purposes[req.purpose].terms_version
        grants[req.user_id].append(Grant(req.category, req.purpose, NOW - timedelta(days=30), req.expires_at,
                                         terms, f"00000000-0000-4000-8000-{i:012d}"))
        if req.tier is not None:
            tiers[req.user_id] = (req.tier, req.plan)
    return {u: ConsentState(u, 3, NOW, *tiers.get(u, ("free", None)), tuple(g)) for u, g in grants.items()}


def cpu(fn: Callable[[], Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not available():
        raise SystemExit(f"the compiled kernel is not available: {unavailable_reason()}")
    from consentgate import _kernel  # type: ignore[attr-defined]

    consent = population(5_000)
    events = list(activity(5_000, args.records, NOW - timedelta(days=1)))
    values = [encode_event(activity_to_avro(e)) for e in events]
    batch = [Fetched(e.user_id.encode(), v, "activity.events", 0, i, NOW_MS) for i, (e, v) in enumerate(zip(events, values))]
    cfg, schemas = config()
    ref, native = kernel_for(cfg, schemas, compiled=False), kernel_for(cfg, schemas, compiled=True)
    schema = fastavro.parse_schema(schema_json("ActivityEvent"))
    check = compile_checker(schema_json("ActivityEvent"))
    texts = [(e.category, e.payload) for e in events if e.category in ("post", "search", "conversation")]

    def gate_decode() -> None:
        for v in values:
            check(v, 5)
            activity_from_avro(fastavro.schemaless_reader(io.BytesIO(v[5:]), schema, None, return_record_name=True))

    def reference_decode() -> None:
        for v in values:
            check_event(decode_activity(v))

    def decide_all() -> None:
        for e in events:
            decide(e, consent.get(e.user_id), CATALOG, NOW)

    decisions = [decide(e, consent.get(e.user_id), CATALOG, NOW) for e in events]
    passed = [(e, o.purpose) for e, d in zip(events, decisions) for o in d.outcomes if o.passed]

    def hmac_all() -> None:
        for e, p in passed:
            pseudonym(SECRET, p, e.user_id)
            record_id(SECRET, p, e.event_id)

    def python_assess() -> None:
        for category, payload in texts:
            assess(category, payload)

    def kernel_assess() -> None:
        for category, payload in texts:
            _kernel.assess_text(category, payload["query" if category == "search" else "text"])

    same = ref.route(batch, consent.get, NOW_MS).outputs == native.route(batch, consent.get, NOW_MS).outputs
    n = len(events)
    rows: list[tuple[str, float, float | None]] = [
        ("decode + checks (gate path: strict + fastavro)", cpu(gate_decode, args.rounds), None),
        ("decode + checks (strict Python reference)", cpu(reference_decode, args.rounds),
         cpu(lambda: _kernel.decode_many(values), args.rounds)),
        ("assess (quality + SimHash, text records)", cpu(python_assess, args.rounds), cpu(kernel_assess, args.rounds)),
        ("decide (SPEC §3), Python only", cpu(decide_all, args.rounds), None),
        ("HMAC pseudonym + record id, per passed pair", cpu(hmac_all, args.rounds), None),
        ("whole batch: route (decode..encode)", cpu(lambda: ref.route(batch, consent.get, NOW_MS), args.rounds),
         cpu(lambda: native.route(batch, consent.get, NOW_MS), args.rounds)),
    ]
    print(f"{n} records ({len(texts)} with text, {len(passed)} passed (record, purpose) pairs); "
          f"outputs identical: {same}; best of {args.rounds} rounds, thread CPU")
    print(f"| stage | Python µs/record | kernel µs/record | Python / kernel |\n|---|---:|---:|---:|")
    gate_row = rows[0][1]
    for name, py, rs in rows:
        per = n if "assess" not in name else len(texts)
        per = len(passed) if "HMAC" in name else per
        kernel = f"{rs / per * 1e6:.2f}" if rs is not None else "—"
        ratio = f"{py / rs:.1f}×" if rs else "—"
        print(f"| {name} | {py / per * 1e6:.2f} | {kernel} | {ratio} |")
    whole = rows[-1]
    print(f"\ngate decode path / kernel decode: {gate_row / rows[1][2]:.1f}×" if rows[1][2] else "")
    print(f"whole batch: reference {whole[1] / n * 1e6:.1f} µs/record, kernel {whole[2] / n * 1e6:.2f} µs/record "
          f"({whole[1] / whole[2]:.1f}×)" if whole[2] else "")


if __name__ == "__main__":
    main()
