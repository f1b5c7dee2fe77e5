"""python -m bench.api: consent changes through the service against the CLI path, in one run.

50 people change their consent at the same time. Each change is timed from the moment it is
asked for until it is enforceable: the service answers only after the change is readable with
read_committed (the gate applies it before any activity it fetches afterwards), and so does the
CLI path. Both run on the same broker, with the same background population in consent.state.

Contenders:
- ``service``: ``consentgate serve`` (one warmed writer, group commit per partition), 50 HTTP clients.
- ``cli``: what ``consentgate consent grant|revoke`` runs for each change: a new ConsentWriter (which
  takes the user's partition, fencing any other writer, and re-reads it), one apply, close; 50 at once.
- ``cli-sequential``: the same, one change at a time (an operator's loop), the kindest case for the CLI.
Process start-up of the real CLI (~1 s of imports) is left out, in the CLI's favour.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from bench.common import Workbench, cores, load_consent, timed, workbench
from bench.latency import percentile
from consentgate.api import ApiSettings, issue_token
from consentgate.api.server import ServiceThread
from consentgate.streams.consent_writer import ConsentRequest, ConsentWriter

GEN = "train_ai_system.generative"
SECRET = "bench-api-signing-secret-0123456789abcdef"


def _change(step: int) -> tuple[str, str]:
    """Alternate grant and revoke of post x generative: every change moves the user's version."""
    return ("PUT", "grant") if step % 2 == 0 else ("DELETE", "revoke")


def run_clients(users: int, changes: int, one: Callable[[int, int], None]) -> tuple[float, list[float], int]:
    """``users`` threads, each making ``changes`` changes in turn; returns (seconds, latencies in ms, failed).

    A failed change is counted, not retried: the person would see an error and have to try again.
    """
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    start_gate = threading.Barrier(users + 1)

    def client(u: int) -> None:
        start_gate.wait()
        for step in range(changes):
            began = time.perf_counter()
            try:
                one(u, step)
            except Exception as exc:  # noqa: BLE001 - counted and reported after the run
                with lock:
                    errors.append(exc)
                continue
            with lock:
                latencies.append((time.perf_counter() - began) * 1000)

    threads = [threading.Thread(target=client, args=(u,)) for u in range(users)]
    for t in threads:
        t.start()
    start_gate.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        print(f"     {len(errors)} of {users * changes} changes failed; first: {str(errors[0])[:160]}", flush=True)
    return elapsed, latencies, len(errors)


def bench_service(bench: Workbench, users: int, changes: int) -> tuple[float, list[float], int]:
    config = ApiSettings(port=0, jwt_secret=SECRET, rate_burst=changes + 1, rate_per_minute=100_000)
    with ServiceThread(bench.settings, config, bench.catalog) as service:
        clients = [httpx.Client(base_url=service.url, timeout=120,
                                headers={"Authorization": f"Bearer {issue_token(config, f'api-user-{u}')}"})
                   for u in range(users)]
        try:
            def one(u: int, step: int) -> None:
                method, _ = _change(step)
                response = clients[u].request(method, f"/v1/users/api-user-{u}/grants/post/{GEN}")
                if response.status_code != 200:
                    raise RuntimeError(f"{response.status_code} {response.text}")

            return run_clients(users, changes, one)
        finally:
            for c in clients:
                c.close()


def bench_cli(bench: Workbench, users: int, changes: int, prefix: str) -> tuple[float, list[float], int]:
    def one(u: int, step: int) -> None:
        _, action = _change(step)
        with ConsentWriter(bench.settings, bench.catalog) as writer:
            writer.apply([ConsentRequest(action, f"{prefix}-{u}", "post", GEN)])

    return run_clients(users, changes, one)


def row(name: str, elapsed: float, lat: list[float], failed: int, base: dict[str, Any] | None) -> dict[str, Any]:
    n = len(lat)  # acknowledged changes
    rate = n / elapsed
    p50, p99 = percentile(lat, 0.50), percentile(lat, 0.99)

    def times(ours: float, theirs: float) -> str:  # how many times better than the baseline
        return f"{ours / theirs:.1f}x" if n and theirs and ours == ours and theirs == theirs else "n/a"

    return {"contender": name, "changes": n, "failed": failed, "seconds": elapsed, "per_s": rate, "p50_ms": p50,
            "p99_ms": p99, "x_rate": times(rate, base["per_s"]) if base else "1.0x",
            "x_p50": times(base["p50_ms"], p50) if base else "1.0x",
            "x_p99": times(base["p99_ms"], p99) if base else "1.0x"}


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50, help="people changing consent at once")
    parser.add_argument("--changes", type=int, default=20, help="changes per person through the service")
    parser.add_argument("--cli-changes", type=int, default=1, help="changes per person through the CLI path")
    parser.add_argument("--population", type=int, default=20_000, help="background users in consent.state")
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    bench = workbench(partitions=args.partitions)
    timed(f"loading {args.population} background users into consent.state")
    grants = load_consent(bench, args.population)
    timed("cli path, one change at a time")
    seq = bench_cli(bench, 1, 20, "cli-seq")
    timed(f"cli path, {args.users} at once")
    cli = bench_cli(bench, args.users, args.cli_changes, "cli-user")
    timed(f"service, {args.users} at once")
    api = bench_service(bench, args.users, args.changes)
    # The baseline is the CLI one change at a time: 50 CLI writers at once mostly fence each other out.
    base = row("cli, one at a time", *seq, None)
    rows = [base, row(f"cli, {args.users} at once", *cli, base), row(f"service, {args.users} at once", *api, base)]
    print(f"\nconsent changes, {args.users} concurrent users; consent.state holds {args.population} users "
          f"({grants} grants) on {args.partitions} partitions; {cores()} cores; change-until-enforceable latency\n")
    print("| contender | acknowledged | failed | acknowledged/s | p50 ms | p99 ms | rate vs baseline "
          "| p50 vs baseline | p99 vs baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['contender']} | {r['changes']} | {r['failed']} | {r['per_s']:.1f} | {_ms(r['p50_ms'])} | "
              f"{_ms(r['p99_ms'])} | {r['x_rate']} | {r['x_p50']} | {r['x_p99']} |")
    print("\n(vs baseline: how many times better than the CLI path one change at a time; latencies of "
          "acknowledged changes only; a failed change is one the person would have to make again)")


if __name__ == "__main__":
    main()
