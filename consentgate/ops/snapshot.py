"""One snapshot of the whole pipeline from the workers' scraped metrics (pure: no I/O, no clock).

Counters are summed over every worker of a kind. The funnel counts input records (``records_in``,
``dead_letters``) and per-purpose outcomes (``passed``, ``dropped``: one per record and purpose),
so ``passed`` is also the number of training records and of contributions the gate wrote.

The live invariant compares the gate with the metering worker: every passed outcome is a
contribution that metering has read or still has to read (its lag), and every contribution it read
was credited, found already credited (redelivered) or dead-lettered. Both sides count since their
process started, so the check is exact for workers started together (a deployment, the demo); after
a restart of one side, the Prometheus rule (over increases in a window) is the one to trust.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from consentgate.ops.scrape import Page, Sample


def _kind(page: Page) -> str:
    names = {s.name for s in page.samples}
    for kind, probe in (("gate", "consentgate_records_in_total"), ("metering", "consentgate_metering_records_in_total"),
                        ("consent", "consentgate_consent_changes_total"), ("sink", "consentgate_sink_rows_written_total"),
                        ("audit", "consentgate_audit_decisions")):
        if probe in names:
            return kind
    return page.kind or "unknown"


class _Sums:
    """Samples of every reachable page, summed by name and chosen labels."""

    def __init__(self, samples: Iterable[Sample]) -> None:
        self._samples = list(samples)
        self.names = {s.name for s in self._samples}

    def total(self, name: str, **match: str) -> float:
        return sum(s.value for s in self._of(name, match))

    def by(self, name: str, *labels: str, **match: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for s in self._of(name, match):
            out[tuple(s.label(label) for label in labels)] += s.value
        return dict(out)

    def values(self, name: str, **match: str) -> list[float]:
        return [s.value for s in self._of(name, match)]

    def _of(self, name: str, match: dict[str, str]) -> Iterable[Sample]:
        return (s for s in self._samples if s.name == name and all(s.label(k) == v for k, v in match.items()))


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets {upper bound: count}; None without data."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the open-ended bucket: the highest finite bound is all we know
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _ints(d: dict[tuple[str, ...], float], skip_zero: bool = True) -> dict[str, int]:
    return {k[0]: int(v) for k, v in sorted(d.items()) if v or not skip_zero}


def build(pages: list[Page], now: float) -> dict[str, Any]:
    """The snapshot ``consentgate top`` shows and ``top --once --json`` prints."""
    up = [p for p in pages if p.error is None]
    by_kind: dict[str, list[Page]] = defaultdict(list)
    for page in up:
        by_kind[_kind(page)].append(page)
    m = _Sums(s for p in up for s in p.samples)

    outcomes = m.by("consentgate_outcomes_total", "purpose", "category", "result")
    passed_by_purpose: dict[str, int] = defaultdict(int)
    dropped: dict[str, int] = defaultdict(int)
    matrix: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: {"passed": 0, "decided": 0}))
    for (purpose, category, result), n in sorted(outcomes.items()):
        cell = matrix[category][purpose]
        cell["decided"] += int(n)
        if result == "passed":
            passed_by_purpose[purpose] += int(n)
            cell["passed"] += int(n)
        elif n:
            dropped[result] += int(n)
    passed = sum(passed_by_purpose.values())
    records_in = int(m.total("consentgate_records_in_total"))
    dead_letters = int(m.total("consentgate_dlq_total"))

    revocations = {float(le): v for (le,), v in m.by("consentgate_revocation_enforcement_seconds_bucket", "le").items()}
    view_updated = m.values("consentgate_consent_view_updated_timestamp_seconds")
    stamped = [t for t in view_updated if t > 0]
    snapshot: dict[str, Any] = {
        "at": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
        "records_in": records_in,
        "decided": records_in - dead_letters,
        "passed": passed,
        "passed_by_purpose": dict(sorted(passed_by_purpose.items())),
        "dropped": dict(sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
        "dead_letters": dead_letters,
        "dead_letters_by_class": _ints(m.by("consentgate_dlq_total", "error_class")),
        "training_records": dict(sorted(passed_by_purpose.items())),
        "contributions": None,
        "credited": None,
        "matrix": {c: {p: dict(cell) for p, cell in sorted(row.items())} for c, row in sorted(matrix.items())},
        "lag": {k: int(v) for k, v in sorted(_ints(m.by("consentgate_consumer_lag", "partition"), False).items(),
                                             key=lambda kv: int(kv[0]) if kv[0].isdigit() else 1 << 30)},
        "consent_view": {
            "users": int(m.total("consentgate_consent_view_users")) if by_kind["gate"] else None,
            "lag": int(m.total("consentgate_consent_view_lag")),
            # the oldest view among the gates: the one that enforces revocations last
            "age_seconds": round(max(now - min(stamped), 0.0), 3) if stamped else None,
            "corrupt_records": int(m.total("consentgate_consent_corrupt_total")),
        },
        "revocation_enforcement": {
            "count": int(m.total("consentgate_revocation_enforcement_seconds_count")),
            "p50_seconds": _round(quantile(0.5, revocations)),
            "p99_seconds": _round(quantile(0.99, revocations)),
        },
        "aborts": _ints(m.by("consentgate_aborted_batches_total", "cause")),
        "workers": [{"kind": _kind(p) if p.error is None else (p.kind or "unknown"), "worker": p.worker,
                     "url": p.url, "up": p.error is None, "error": p.error} for p in pages],
    }
    metering = by_kind.get("metering")
    if metering:
        contributions = int(m.total("consentgate_metering_records_in_total"))
        credited = int(m.total("consentgate_metering_credited_total"))
        redelivered = int(m.total("consentgate_metering_redelivered_total"))
        metering_dlq = int(m.total("consentgate_metering_dlq_total"))
        lag = int(m.total("consentgate_metering_lag"))
        snapshot.update(contributions=contributions, credited=credited)
        snapshot["metering"] = {"redelivered": redelivered, "dead_letters": metering_dlq, "lag": lag,
                                "db_commit_p99_seconds": _round(quantile(0.99, {
                                    float(le): v for (le,), v in
                                    m.by("consentgate_metering_db_commit_seconds_bucket", "le").items()}))}
        holds = passed == contributions + lag and contributions == credited + redelivered + metering_dlq
        snapshot["invariant"] = {
            "state": "holding" if holds else "broken", "passed": passed, "contributions_read": contributions,
            "contributions_pending": lag, "credited": credited, "redelivered": redelivered,
            "dead_lettered": metering_dlq,
        }
    else:
        snapshot["invariant"] = {"state": "unchecked", "passed": passed,
                                 "detail": "no metering worker reporting metrics"}
    if "consentgate_sink_rows_written_total" in m.names:
        written = _ints(m.by("consentgate_sink_rows_written_total", "purpose"), False)
        snapshot["sinks"] = {p: {"rows_written": n,
                                 "rows_deleted": int(m.total("consentgate_sink_rows_deleted_total", purpose=p)),
                                 "snapshot_age_seconds": _age(now, m.values(
                                     "consentgate_sink_snapshot_timestamp_seconds", purpose=p))}
                             for p, n in written.items()}
    if "consentgate_audit_decisions" in m.names:
        snapshot["audit"] = {"decisions": int(m.total("consentgate_audit_decisions")),
                             "findings": _ints(m.by("consentgate_audit_findings", "kind"))}
    return snapshot


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def _age(now: float, stamps: list[float]) -> float | None:
    stamps = [t for t in stamps if t > 0]
    return round(max(now - max(stamps), 0.0), 3) if stamps else None
