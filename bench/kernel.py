"""Decide-step CPU per record: the compiled kernel against the Python reference, same batch, same run.

    python -m bench.kernel [--records N] [--rounds R]

One synthetic batch (``consentgate.synthetic``: Zipf users, 60% of whom consent to some pairs) goes
through ``ReferenceKernel.route`` and the compiled kernel's ``route`` (outputs checked identical), and
stage by stage: decode + checks, decide (with the consent lookup), HMAC pseudonym + record id, assess
(quality + SimHash), encode. Kernel stages come from ``Kernel.measure`` (the route up to a stage,
without encoding); encode is the whole minus the stages. Figures: this thread's CPU (``thread_time``),
best of R rounds, in µs per input record, and Python / kernel ratios. Two reference rows: the gate's
decode path today (``schemas.strict`` + fastavro + ``activity_from_avro``), and one text record's
assessment through a Python call.
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
    batch = [Fetched(e.user_id.encode(), v, "activity.events", 0, i, NOW_MS)
             for i, (e, v) in enumerate(zip(events, values))]
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

    passed_records = [e for e, d in zip(events, decisions) if d.passed]

    def assess_passed() -> None:
        for e in passed_records:
            assess(e.category, e.payload)

    def decide_with_lookup() -> None:
        for e in events:
            decide(e, consent.get(e.user_id), CATALOG, NOW)

    same = ref.route(batch, consent.get, NOW_MS).outputs == native.route(batch, consent.get, NOW_MS).outputs
    n, r = len(events), args.rounds
    measured = [cpu(lambda stage=stage: native.measure(batch, consent.get, NOW_MS, stage), r)  # type: ignore[misc]
                for stage in (1, 2, 3, 4)]
    k_whole = cpu(lambda: native.route(batch, consent.get, NOW_MS), r)
    p_stages = [cpu(reference_decode, r), cpu(decide_with_lookup, r), cpu(hmac_all, r), cpu(assess_passed, r)]
    p_whole = cpu(lambda: ref.route(batch, consent.get, NOW_MS), r)
    k_stages = [measured[0], measured[1] - measured[0], measured[2] - measured[1], measured[3] - measured[2]]
    rows = [("decode + checks (strict)", p_stages[0], k_stages[0]),
            ("decide (SPEC §3, consent lookup)", p_stages[1], k_stages[1]),
            ("HMAC pseudonym + record id", p_stages[2], k_stages[2]),
            ("assess (quality + SimHash)", p_stages[3], k_stages[3]),
            ("encode outputs (+ Python result objects)", p_whole - sum(p_stages), k_whole - measured[3]),
            ("whole batch: route", p_whole, k_whole)]
    print(f"{n} records, {len(passed)} passed (record, purpose) pairs, {len(texts)} with text; outputs identical: "
          f"{same}; thread CPU, best of {r} rounds; µs per input record")
    print("| stage | Python reference | kernel | Python / kernel |\n|---|---:|---:|---:|")
    for name, py, rs in rows:
        ratio = f"{py / rs:.1f}×" if rs > 0 else "—"
        print(f"| {name} | {py / n * 1e6:.2f} | {rs / n * 1e6:.2f} | {ratio} |")
    gate = cpu(gate_decode, r)
    print(f"| gate's decode today (schemas.strict + fastavro + activity_from_avro) | {gate / n * 1e6:.2f} | "
          f"{k_stages[0] / n * 1e6:.2f} | {gate / k_stages[0]:.1f}× |")
    py_text, k_text = cpu(python_assess, r), cpu(kernel_assess, r)
    print(f"| assess one text record alone (one Python call each, no word-hash cache) | "
          f"{py_text / len(texts) * 1e6:.2f} | "
          f"{k_text / len(texts) * 1e6:.2f} | {py_text / k_text:.1f}× |")


if __name__ == "__main__":
    main()
