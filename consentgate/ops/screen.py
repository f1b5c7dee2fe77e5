"""The ``consentgate top`` screen: one snapshot rendered with rich (read-only)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

INVARIANT_STYLE = {"holding": "bold green", "broken": "bold white on red", "unchecked": "yellow"}


def _n(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else ""


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:,.0f} ms" if value < 10 else f"{value:,.1f} s"


def funnel(s: dict[str, Any]) -> Table:
    """in → passed / dropped by reason / dead-lettered → training records → contributions → credited."""
    t = Table(title="funnel (committed)", title_justify="left", expand=True, box=None, pad_edge=False)
    t.add_column("stage")
    t.add_column("count", justify="right")
    t.add_column("share", justify="right")
    records_in, outcomes = s["records_in"], s["passed"] + sum(s["dropped"].values())
    t.add_row("records in", _n(records_in), "")
    t.add_row("  dead-lettered", _n(s["dead_letters"]), _share(s["dead_letters"], records_in), style="magenta")
    for cls, n in s["dead_letters_by_class"].items():
        t.add_row(f"    {cls}", _n(n), "", style="magenta")
    t.add_row("  decided", _n(s["decided"]), _share(s["decided"], records_in))
    t.add_row("outcomes (record × purpose)", _n(outcomes), "")
    t.add_row("  passed", _n(s["passed"]), _share(s["passed"], outcomes), style="green")
    for reason, n in s["dropped"].items():
        t.add_row(f"  dropped: {reason}", _n(n), _share(n, outcomes), style="red")
    t.add_row("training records", _n(s["passed"]), "")
    for purpose, n in s["training_records"].items():
        t.add_row(f"  {purpose}", _n(n), "")
    t.add_row("contributions read by metering", _n(s["contributions"]), "")
    t.add_row("credited in the ledger", _n(s["credited"]), "")
    return t


def invariant(s: dict[str, Any]) -> Text:
    inv = s["invariant"]
    state = inv["state"]
    text = Text("passed outcomes = contributions: ", style="bold")
    text.append(state.upper(), style=INVARIANT_STYLE[state])
    if state == "unchecked":
        text.append(f"  ({inv['detail']})")
    else:
        text.append(f"  passed {inv['passed']:,} = read {inv['contributions_read']:,} + pending "
                    f"{inv['contributions_pending']:,};  read = credited {inv['credited']:,} + redelivered "
                    f"{inv['redelivered']:,} + DLQ {inv['dead_lettered']:,}")
    return text


def matrix(s: dict[str, Any]) -> Table:
    purposes = sorted({p for row in s["matrix"].values() for p in row})
    t = Table(title="passed / decided, category × purpose", title_justify="left", expand=True, box=None)
    t.add_column("category")
    for p in purposes:
        t.add_column(p.removeprefix("train_ai_system."), justify="right")
    for category, row in s["matrix"].items():
        cells = [f"{row[p]['passed']:,}/{row[p]['decided']:,}" if p in row else "" for p in purposes]
        t.add_row(category, *cells)
    return t


def health(s: dict[str, Any]) -> Table:
    t = Table(title="lag and latency", title_justify="left", expand=True, box=None)
    t.add_column("what")
    t.add_column("value", justify="right")
    lag = s["lag"]
    t.add_row("consumer lag, total", _n(sum(lag.values())) if lag else "not reported")
    for partition, n in lag.items():
        t.add_row(f"  partition {partition}", _n(n))
    view = s["consent_view"]
    t.add_row("consent view age", _seconds(view["age_seconds"]))
    t.add_row("consent view lag", _n(view["lag"]))
    t.add_row("consent view users", _n(view["users"]))
    if view["corrupt_records"]:
        t.add_row("corrupt consent records", _n(view["corrupt_records"]), style="red")
    rev = s["revocation_enforcement"]
    t.add_row(f"revocation → enforcement ({rev['count']:,})",
              f"p50 {_seconds(rev['p50_seconds'])}  p99 {_seconds(rev['p99_seconds'])}")
    aborts = s["aborts"]
    t.add_row("transaction aborts", ", ".join(f"{c} {n:,}" for c, n in aborts.items()) or "none")
    if "metering" in s:
        met = s["metering"]
        t.add_row("metering lag", _n(met["lag"]))
        t.add_row("metering DB commit p99", _seconds(met["db_commit_p99_seconds"]))
    for purpose, sink in s.get("sinks", {}).items():
        t.add_row(f"sink {purpose.removeprefix('train_ai_system.')}",
                  f"+{sink['rows_written']:,} −{sink['rows_deleted']:,}, snapshot {_seconds(sink['snapshot_age_seconds'])}")
    if "audit" in s:
        found = s["audit"]["findings"]
        t.add_row("last audit findings", ", ".join(f"{k} {n}" for k, n in found.items()) or "none",
                  style="red" if found else "green")
    return t


def workers(s: dict[str, Any]) -> Table:
    t = Table(title="workers", title_justify="left", expand=True, box=None)
    for col in ("kind", "worker", "endpoint", "state"):
        t.add_column(col)
    for w in s["workers"]:
        t.add_row(w["kind"], w["worker"] or "", w["url"],
                  Text("up", style="green") if w["up"] else Text(f"down: {w['error']}", style="red"))
    return t


def render(s: dict[str, Any], interval: float | None = None, notes: list[str] | None = None) -> RenderableType:
    down = sum(not w["up"] for w in s["workers"])
    title = (f"consentgate top  {s['at']}  {len(s['workers'])} endpoint(s), {down} down"
             + (f"  refresh {interval:g}s, Ctrl-C quits" if interval else ""))
    grid = Table.grid(expand=True, padding=(0, 2))
    grid.add_column(ratio=1)
    grid.add_column(ratio=1)
    grid.add_row(funnel(s), Group(health(s), Text(""), matrix(s)))
    parts: list[RenderableType] = [invariant(s), Text(""), grid, Text(""), workers(s)]
    parts += [Text(note, style="dim") for note in notes or []]
    return Panel(Group(*parts), title=title, title_align="left")
