"""The audit's result, its JSON (SPEC §8 shape) and its plain-text rendering."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from consentgate.audit.findings import Finding


@dataclass(frozen=True)
class PurposeSummary:
    """What one purpose's training set received in the range (Art 53(1)(d)) and its record of processing."""

    purpose: str
    title: str
    sink_topic: str
    training_records: int
    pseudonyms: int
    contributions: int
    by_category: dict[str, int]
    first_occurred_at: int | None
    last_occurred_at: int | None
    categories: dict[str, dict[str, Any]]  # category -> {fideslang, title, kept fields}
    description: dict[str, str]
    terms_version: int
    retention_days: int


@dataclass(frozen=True)
class AuditReport:
    decisions: int
    reproduced: int
    dead_letters: int
    findings: list[Finding]
    replay_hash: str
    scope: dict[str, Any]
    catalog: dict[str, Any]
    counts: list[dict[str, Any]]  # {category, purpose, result, n}
    dead_letter_classes: dict[str, int]
    withdrawals: list[dict[str, Any]]  # {at (bucket start, ms), revoke, erase}
    purposes: list[PurposeSummary]
    records_read: dict[str, int]
    erasures: int
    retractions: int
    ledger: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def findings_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for finding in self.findings:
            out[finding.kind] = out.get(finding.kind, 0) + 1
        return dict(sorted(out.items()))

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["findings"] = [f.as_json() for f in self.findings]
        body["findings_by_kind"] = self.findings_by_kind()
        body["clean"] = self.clean
        return body


def to_json(report: AuditReport) -> str:
    return json.dumps(report.as_json(), indent=2, sort_keys=False) + "\n"


def _ms_text(value: int | None) -> str:
    from datetime import datetime, timezone

    if value is None:
        return "-"
    return datetime.fromtimestamp(value / 1000, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def to_text(report: AuditReport, limit: int = 50) -> str:
    """A page a person reads in a terminal: scope, totals, findings (the first ``limit``)."""
    scope = report.scope
    lines = [
        "consentgate audit",
        f"  range            {_ms_text(scope.get('from_ms'))} .. {_ms_text(scope.get('to_ms'))}",
        f"  input            {scope['topic']}: {scope['records']:,} offsets in "
        f"{len(scope['partitions'])} partitions",
        f"  catalog          version {report.catalog['version']}, sha256 {report.catalog['sha256'][:16]}",
        f"  decisions        {report.decisions:,} (reproduced {report.reproduced:,})",
        f"  dead letters     {report.dead_letters:,}",
        f"  inputs covered   {'yes' if scope['records'] == report.decisions + report.dead_letters else 'no'}"
        f" ({scope['records']:,} = {report.decisions:,} + {report.dead_letters:,})",
        f"  erasures         {report.erasures:,} ({report.retractions:,} retractions read)",
        f"  replay hash      {report.replay_hash}",
    ]
    if report.ledger is not None:
        lines.append(f"  ledger           {report.ledger['credited']:,} credits for {report.ledger['contributions']:,}"
                     " contributions")
    passed: dict[str, int] = {}
    dropped: dict[str, int] = {}
    for row in report.counts:
        target = passed if row["result"] == "pass" else dropped
        key = row["purpose"] if row["result"] == "pass" else row["result"]
        target[key] = target.get(key, 0) + row["n"]
    lines.append("  passed           " + ", ".join(f"{p} {n:,}" for p, n in sorted(passed.items())) if passed
                 else "  passed           none")
    if dropped:
        lines.append("  dropped          " + ", ".join(f"{r} {n:,}" for r, n in sorted(dropped.items())))
    lines.extend(f"  note: {note}" for note in report.notes)
    if report.clean:
        lines.append("RESULT: no findings")
    else:
        lines.append(f"RESULT: {len(report.findings)} findings: "
                     + ", ".join(f"{k} {n}" for k, n in report.findings_by_kind().items()))
        for finding in report.findings[:limit]:
            lines.append(f"  {finding.kind:<19} event {finding.event_id or '-'}  purpose {finding.purpose or '-'}"
                         f"  {finding.detail}" + (f"  [{finding.where}]" if finding.where else ""))
        if len(report.findings) > limit:
            lines.append(f"  ... {len(report.findings) - limit} more (use --format json)")
    return "\n".join(lines) + "\n"
