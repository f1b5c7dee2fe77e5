"""The audit pack: one self-contained HTML page a person can read offline and keep as evidence.

Scope and offsets, catalog version and hash, the reproducibility proof, counts by category x
purpose x result with charts, findings, withdrawals over time, and per purpose the EU AI Act
Art 53(1)(d) training-content summary and the GDPR Art 30 record of processing, drawn from the
catalog and from what the training topics actually received in the range.
"""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from consentgate.audit.charts import stacked_bars, time_bars
from consentgate.audit.report import AuditReport, PurposeSummary

FINDINGS_SHOWN = 500
STYLE = """
body{font-family:system-ui,sans-serif;max-width:1000px;margin:24px auto;padding:0 16px;color:#1b1b1b}
h1{font-size:26px;margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{margin-bottom:6px} table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top} th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums} code{font-size:13px;word-break:break-all}
.verdict{font-size:20px;font-weight:bold;padding:10px 14px;border-radius:6px;display:inline-block}
.clean{background:#e8f5e9;color:#1b5e20} .dirty{background:#ffebee;color:#b71c1c}
.muted{color:#666;font-size:13px} dl{display:grid;grid-template-columns:220px 1fr;gap:4px 12px}
dt{font-weight:bold} dd{margin:0} table.pivot{font-size:13px} table.pivot th{max-width:90px}
"""


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _row(*cells: object, numeric: tuple[int, ...] = ()) -> str:
    return "<tr>" + "".join(
        f'<td class="n">{c:,}</td>' if i in numeric and isinstance(c, int) else f"<td>{escape(str(c))}</td>"
        for i, c in enumerate(cells)) + "</tr>"


def to_html(report: AuditReport) -> str:
    scope = report.scope
    results = sorted({r["result"] for r in report.counts}, key=lambda r: (r != "pass", r))
    by_purpose: dict[str, dict[str, int]] = {}
    for row in report.counts:
        parts = by_purpose.setdefault(row["purpose"], {})
        parts[row["result"]] = parts.get(row["result"], 0) + row["n"]
    verdict = ('<span class="verdict clean">No findings</span>' if report.clean else
               f'<span class="verdict dirty">{len(report.findings):,} findings</span>')
    covered = report.decisions + report.dead_letters
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>consentgate audit pack</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>consentgate audit pack</h1>",
        f'<p class="muted">Every decision in the range re-derived from the topics by the audit\'s own '
        f"implementation of the consent rules (SPEC §3), independent of the gate.</p>{verdict}",
        "<h2>Scope</h2><dl>",
        f"<dt>Input range</dt><dd>{escape(_range(scope.get('from_ms'), scope.get('to_ms')))}</dd>",
        f"<dt>Input topic</dt><dd><code>{escape(scope['topic'])}</code>: {scope['records']:,} offsets</dd>",
        f"<dt>Catalog</dt><dd>version {report.catalog['version']}, {escape(report.catalog['path'])}<br>"
        f"sha256 <code>{escape(report.catalog['sha256'])}</code></dd>",
        f"<dt>Decisions</dt><dd>{report.decisions:,} read, {report.reproduced:,} reproduced exactly</dd>",
        f"<dt>Dead letters</dt><dd>{report.dead_letters:,}"
        + (" (" + ", ".join(f"{escape(k)} {v:,}" for k, v in report.dead_letter_classes.items()) + ")"
           if report.dead_letter_classes else "") + "</dd>",
        f"<dt>Inputs accounted for</dt><dd>{covered:,} of {scope['records']:,} "
        f"({'every offset' if covered == scope['records'] else 'see findings'})</dd>",
        f"<dt>Replay hash</dt><dd><code>{escape(report.replay_hash)}</code><br><span class='muted'>over the "
        "re-derived decisions; a second audit of the same range gives the same hash</span></dd>",
        f"<dt>Erasures</dt><dd>{report.erasures:,} ({report.retractions:,} retractions read)</dd>",
    ]
    if report.ledger is not None:
        parts.append(f"<dt>Ledger</dt><dd>{report.ledger['credited']:,} credits for "
                     f"{report.ledger['contributions']:,} contributions</dd>")
    parts.append("</dl>")
    parts.extend(f'<p class="muted">Note: {escape(n)}</p>' for n in report.notes)
    parts.append("<h3>Input offsets per partition</h3><table><tr><th>partition</th><th>first</th><th>end</th>"
                 "<th>records</th></tr>")
    for p, span in scope["partitions"].items():
        parts.append(_row(p, span["start"], span["end"], span["end"] - span["start"], numeric=(1, 2, 3)))
    parts.append("</table>")
    parts.append("<h2>Outcomes by purpose</h2>")
    parts.append(stacked_bars([(p, by_purpose[p]) for p in sorted(by_purpose)], results))
    parts.append(_pivot(report, results))
    parts.append(_findings(report))
    parts.append("<h2>Withdrawals over time</h2>")
    if report.withdrawals:
        buckets = [(_when(w["at"])[11:19], {"revoke": w["revoke"], "erase": w["erase"]}) for w in report.withdrawals]
        parts.append(time_bars(buckets, ["revoke", "erase"]))
        parts.append(f'<p class="muted">Revocations and erasures on consent.changes per '
                     f'{report.withdrawals[0]["width_ms"] / 1000:g} s.</p>')
    else:
        parts.append("<p>No revocation or erasure on consent.changes.</p>")
    parts.append("<h2>Per purpose</h2>")
    parts.extend(_purpose(p) for p in report.purposes)
    parts.append("<h2>Records read</h2><table><tr><th>topic</th><th>records</th></tr>")
    parts.extend(_row(t, n, numeric=(1,)) for t, n in report.records_read.items())
    parts.append("</table></body></html>\n")
    return "\n".join(parts)


def _range(start: int | None, end: int | None) -> str:
    if start is None and end is None:
        return "the whole topic, oldest record to the end committed when the audit ran"
    return f"{_when(start) if start is not None else 'the oldest record'} to " \
           f"{_when(end) if end is not None else 'the end committed when the audit ran'}"


def _pivot(report: AuditReport, results: list[str]) -> str:
    """Outcomes by category x purpose (rows) and result (columns)."""
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for row in report.counts:
        cells.setdefault((row["category"], row["purpose"]), {})[row["result"]] = row["n"]
    out = ["<h3>By category x purpose x result</h3><table class='pivot'><tr><th>category</th><th>purpose</th>"
           + "".join(f"<th>{escape(r.replace('_', ' '))}</th>" for r in results) + "</tr>"]
    for (category, purpose), counts in sorted(cells.items()):
        out.append(_row(category, purpose, *[counts.get(r, 0) for r in results],
                        numeric=tuple(range(2, 2 + len(results)))))
    out.append("</table>")
    return "".join(out)


def _findings(report: AuditReport) -> str:
    if report.clean:
        return "<h2>Findings</h2><p>None: every decision, dead letter, training record, contribution and erasure " \
               "in the range is as the consent rules require.</p>"
    out = ["<h2>Findings</h2><table><tr><th>kind</th><th>count</th></tr>"]
    out.extend(_row(k, n, numeric=(1,)) for k, n in report.findings_by_kind().items())
    out.append("</table><table><tr><th>kind</th><th>event</th><th>purpose</th><th>detail</th><th>where</th></tr>")
    out.extend(_row(f.kind, f.event_id or "-", f.purpose or "-", f.detail, f.where or "-")
               for f in report.findings[:FINDINGS_SHOWN])
    out.append("</table>")
    if len(report.findings) > FINDINGS_SHOWN:
        out.append(f"<p>{len(report.findings) - FINDINGS_SHOWN:,} more in the JSON report.</p>")
    return "".join(out)


def _purpose(p: PurposeSummary) -> str:
    categories = ", ".join(f"{escape(c)} ({escape(v['fideslang'])})" for c, v in p.categories.items())
    kept = "; ".join(f"{escape(c)}: {escape(', '.join(v['keep']))}" for c, v in p.categories.items())
    received = ", ".join(f"{escape(c)} {n:,}" for c, n in p.by_category.items()) or "none"
    return "".join([
        f"<h3>{escape(p.title)} <span class='muted'><code>{escape(p.purpose)}</code></span></h3>",
        "<p><b>Training-content summary</b> (EU AI Act Art 53(1)(d))</p><dl>",
        f"<dt>Content used</dt><dd>{escape(p.description.get('collected', ''))}</dd>",
        f"<dt>Records received in range</dt><dd>{p.training_records:,} ({received}) from {p.pseudonyms:,} "
        f"people (pseudonyms)</dd>",
        f"<dt>Activity period covered</dt><dd>{escape(_when(p.first_occurred_at))} to "
        f"{escape(_when(p.last_occurred_at))}</dd>",
        f"<dt>Fields kept</dt><dd>{kept}</dd>",
        f"<dt>Legal basis</dt><dd>consent for exactly this purpose and category, under terms version "
        f"{p.terms_version}; withdrawal stops further use</dd></dl>",
        "<p><b>Record of processing</b> (GDPR Art 30)</p><dl>",
        f"<dt>Purpose</dt><dd>{escape(p.description.get('use', ''))}</dd>",
        f"<dt>Categories of personal data</dt><dd>{categories}</dd>",
        "<dt>Categories of data subjects</dt><dd>platform users who granted this purpose</dd>",
        f"<dt>Recipients</dt><dd>{escape(p.description.get('who_sees', ''))}</dd>",
        f"<dt>Erasure time limit</dt><dd>{p.retention_days} days on <code>{escape(p.sink_topic)}</code>; "
        "an erasure publishes a retraction to every training sink</dd>",
        "<dt>Safeguards</dt><dd>keyed per-purpose pseudonyms and record ids (no raw user, event or receipt id); "
        "only the fields above are kept; every decision recorded for audit</dd>",
        f"<dt>Contributions metered</dt><dd>{p.contributions:,}</dd></dl>",
    ])
