"""``consentgate top``: the live, read-only view of the whole pipeline from the workers' metrics."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from consentgate.cli.options import flag, settings_from
from consentgate.errors import ConfigurationError
from consentgate.ops.endpoints import discover
from consentgate.ops.scrape import Page, scrape_all
from consentgate.ops.snapshot import build
from consentgate.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("top", help="live view of the funnel, lag and revocation latency from the workers' metrics")
    p.add_argument("--metrics", action="append", metavar="URL", default=[],
                   help="a worker's metrics endpoint, e.g. http://127.0.0.1:9464/metrics (repeatable; "
                        "default: every worker registered in the data dir)")
    flag(p, "data-dir", "where workers register their metrics endpoints (<data dir>/metrics/*.json)")
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--json", action="store_true", help="with --once: the snapshot as JSON (SPEC §10)")
    p.add_argument("--interval", type=float, default=1.5, metavar="SECONDS", help="refresh period (default 1.5)")
    p.set_defaults(run=run_top)


def _targets(args: argparse.Namespace, settings: Settings) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The endpoints to read now, and notes about registrations that were skipped."""
    if args.metrics:
        bad = [u for u in args.metrics if not u.startswith(("http://", "https://"))]
        if bad:
            raise ConfigurationError(f"--metrics takes http(s) URLs, not {bad[0]!r}")
        return [(u, "", "") for u in args.metrics], []
    found = discover(settings.data_dir)
    notes = [f"ignored {path.name}: {why}" for path, why in found.ignored]
    return [(r.url, r.kind, r.worker) for r in found.endpoints], notes


def snapshot_once(args: argparse.Namespace, settings: Settings) -> tuple[dict[str, Any], list[str]]:
    targets, notes = _targets(args, settings)
    if not targets:
        raise ConfigurationError(
            f"no metrics endpoints: none registered under {settings.data_dir / 'metrics'} "
            "(run workers with --metrics-port) and no --metrics URL given")
    pages: list[Page] = scrape_all(targets)
    return build(pages, time.time()), notes


def run_top(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise ConfigurationError("--interval must be positive")
    if args.json and not args.once:
        raise ConfigurationError("--json prints one snapshot: use it with --once")
    settings = settings_from(args)
    from consentgate.ops.screen import render  # rich is only needed for the screen

    if args.once:
        snap, notes = snapshot_once(args, settings)
        if args.json:
            print(json.dumps(snap, indent=2))
        else:
            from rich.console import Console

            Console().print(render(snap, notes=notes))
        return 0 if any(w["up"] for w in snap["workers"]) else 1
    from rich.console import Console
    from rich.live import Live

    console = Console()
    try:
        with Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                try:
                    snap, notes = snapshot_once(args, settings)
                    live.update(render(snap, args.interval, notes), refresh=True)
                except ConfigurationError as exc:  # workers not started yet: keep waiting for them
                    live.update(f"consentgate top: {exc}; waiting…", refresh=True)
                time.sleep(args.interval)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 0
