"""``consentgate audit``: re-derive every decision of a range from the topics and report findings."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from consentgate.audit.html import to_html
from consentgate.audit.report import to_json, to_text
from consentgate.audit.run import AuditOptions, run_audit
from consentgate.cli.options import add_connection, catalog_of, flag, settings_from
from consentgate.connectors.jsonl import JsonLineError, parse_time


def _time(text: str) -> int:
    """ISO-8601 with an offset, or epoch milliseconds, as epoch milliseconds."""
    try:
        value: int | str = int(text) if text.lstrip("-").isdigit() else text
        moment = parse_time(value, "time")
    except JsonLineError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return int((moment - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds() * 1000)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="re-derive every decision of a range from the topics; exit 1 on findings",
                       description="Checks gate.decisions, gate.dlq, training.*, training.retractions and "
                       "metering.contributions against consent.changes with the audit's own implementation of "
                       "SPEC §3. Exit 0: no findings; 1: findings; 2: the audit could not run. Needs the "
                       "pseudonym secret [env: CONSENTGATE_PSEUDONYM_SECRET] to recompute keyed hashes.")
    p.add_argument("--from", dest="from_ms", type=_time, metavar="T",
                   help="first input time (ISO-8601 with offset, or epoch ms); default: the oldest input")
    p.add_argument("--to", dest="to_ms", type=_time, metavar="T",
                   help="end of the input range (exclusive); default: the input's end now")
    p.add_argument("--format", default="text", choices=["text", "json", "html"])
    p.add_argument("--report", type=Path, metavar="FILE", help="write the report here (default: standard output)")
    p.add_argument("--allowance-ms", type=int, default=1000, metavar="MS",
                   help="a consent change counts as committed this long after it was appended (default 1000)")
    p.add_argument("--memory-limit", default="1GB", help="memory the audit's working database may use (default 1GB)")
    p.add_argument("--metrics-file", type=Path, metavar="FILE",
                   help="also write the run's figures (findings by kind, decisions, when) as Prometheus text, "
                        "for node_exporter's textfile collector")
    add_connection(p)
    flag(p, "ledger-url", "also check contributions against this payout ledger's credits")
    p.set_defaults(run=run_audit_cmd)


def run_audit_cmd(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    options = AuditOptions(from_ms=args.from_ms, to_ms=args.to_ms, allowance_ms=args.allowance_ms,
                           memory_limit=args.memory_limit, ledger_url=args.ledger_url)
    report = run_audit(settings, catalog_of(settings), options)
    if args.metrics_file is not None:
        # Only when asked: the audit itself loads nothing of the stream processors (a test holds it to
        # that); the metrics module holds metric definitions, no decision code.
        from consentgate.streams.metrics import AuditMetrics

        metrics = AuditMetrics()
        metrics.record_run(report.decisions, (finding.kind for finding in report.findings))
        metrics.write_textfile(args.metrics_file)
    text = {"text": to_text, "json": to_json, "html": to_html}[args.format](report)
    if args.report is not None:
        args.report.write_text(text)
        print(f"audit report written to {args.report}: "
              f"{'no findings' if report.clean else f'{len(report.findings)} findings'}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0 if report.clean else 1
