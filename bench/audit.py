"""The audit's speed and memory, as a ratio to reading the same topics without checking.

    python -m bench.audit [--decisions N[,N...]] [--users N] [--memory-limit 1GB]

For each size: real consent for a synthetic population (through the consent writer, so
consent.changes is real), N activity records, and what a correct gate writes for them
(decisions by the gate's own ``decide``, training records and contributions for every pass),
produced straight to the topics (running the gate itself would measure the gate). Then, in
the same run: (1) read every topic the audit reads, to its end, touching each value but not
decoding it (the baseline), and (2) the full audit. The audit must find nothing.
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import datetime, timedelta, timezone

from consentgate.connectors.kafka import admin, produce, producer
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.streams.consent_rules import with_grant
from consentgate.streams.outputs import Keyed, contribution_record, decision_record, training_record

from bench.common import Workbench, load_consent, timed, workbench
from consentgate.audit.run import AuditOptions, run_audit
from consentgate.audit.sources import read_chunks
from consentgate.catalog import Catalog
from consentgate.decision import decide
from consentgate.model import ConsentLookup, Grant
from consentgate.pseudonyms import key_id, pseudonym, record_id
from consentgate.quality import assess
from consentgate.synthetic import activity, consent_population


def states_of(catalog: Catalog, users: int, granted_at: datetime) -> dict[str, ConsentLookup]:
    """The consent ``load_consent`` committed (same population, one version per request)."""
    states: dict[str, ConsentLookup] = {}
    versions: dict[str, int] = {}
    expiring = datetime.fromtimestamp(granted_at.timestamp() + 30 * 86400, timezone.utc)
    for r in consent_population(catalog, users, expiring_at=expiring):
        assert r.category and r.purpose
        versions[r.user_id] = versions.get(r.user_id, 0) + 1
        grant = Grant(r.category, r.purpose, granted_at, r.expires_at,
                      r.terms_version or catalog.purposes[r.purpose].terms_version, "r")
        states[r.user_id] = with_grant(states.get(r.user_id), r.user_id, grant, versions[r.user_id], granted_at,
                                       r.tier, r.plan)
    return states


def write_gate_outputs(bench: Workbench, users: int, count: int) -> int:
    """N activity records (their content is never read by the audit) and a correct gate's outputs."""
    s, topics, catalog = bench.settings, bench.topics, bench.catalog
    secret = s.require_secret()
    kid = key_id(secret)
    now = datetime.now(timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    states = states_of(catalog, users, datetime.fromtimestamp(now.timestamp() - 60, timezone.utc))
    out = producer(s, **{"linger.ms": 50, "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
                         "compression.type": "lz4"})
    written = 0
    with registry_client(s) as registry:
        codecs = Codecs(registry)
        enc_decision = codecs["Decision"].writer_for(topics.decisions)
        enc_contribution = codecs["Contribution"].writer_for(topics.contributions)
        enc_training = {p: codecs["TrainingRecord"].writer_for(t) for p, t in topics.training.items()}
        nyms: dict[tuple[str, str], str] = {}
        parts = s.partitions
        for n, event in enumerate(activity(users, count, now, spacing=timedelta(0))):
            partition, offset = n % parts, n // parts
            produce(out, topics.activity, b"x", partition=partition)
            consent = states.get(event.user_id)
            decision = decide(event, consent, catalog, now)
            produce(out, topics.decisions, enc_decision(decision_record(decision, now_ms, topics.activity, partition,
                                                                        offset)), event.user_id.encode())
            written += 1
            for outcome in decision.outcomes:
                if outcome.passed:
                    key = (outcome.purpose, event.user_id)
                    nym = nyms.get(key) or nyms.setdefault(key, pseudonym(secret, outcome.purpose, event.user_id))
                    keyed = Keyed(nym, record_id(secret, outcome.purpose, event.event_id), kid)
                    produce(out, topics.training[outcome.purpose], enc_training[outcome.purpose](training_record(
                        event, outcome, catalog, keyed, decision.consent_version or 0)), nym.encode())
                    produce(out, topics.contributions, enc_contribution(contribution_record(
                        event, outcome, consent, assess(event.category, event.payload), keyed)),
                        event.user_id.encode())
                    written += 2
            if n % 10_000 == 0:
                out.poll(0)
        assert out.flush(300) == 0
    return written


def read_only(bench: Workbench) -> tuple[int, int, float]:
    """Read every topic the audit reads to its end, touching each value: (records, bytes, seconds)."""
    s, topics = bench.settings, bench.topics
    adm = admin(s)
    started = time.monotonic()
    records = size = 0
    for topic in [topics.consent_changes, topics.decisions, topics.dlq, topics.contributions, topics.retractions,
                  *topics.training.values()]:
        for chunk in read_chunks(s, adm, topic, None):
            records += len(chunk)
            size += sum(len(m.value() or b"") for m in chunk)
    return records, size, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", default="200000,1000000", help="comma-separated sizes")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--memory-limit", default="1GB")
    args = parser.parse_args()
    rows = []
    for size in [int(x) for x in args.decisions.split(",")]:
        bench = workbench(partitions=3)
        print(f"     topic prefix {bench.settings.topic_prefix}", flush=True)
        t = timed(f"{size:,} decisions: consent for {args.users:,} users")
        load_consent(bench, args.users)
        timed(f"writing {size:,} inputs and a correct gate's outputs")
        outputs = write_gate_outputs(bench, args.users, size)
        print(f"     {outputs:,} gate records in {time.monotonic() - t:.0f}s", flush=True)
        timed("baseline: read the same topics without checking")
        records, size_bytes, read_s = read_only(bench)
        timed("audit")
        started = time.monotonic()
        report = run_audit(bench.settings, bench.catalog, AuditOptions(memory_limit=args.memory_limit))
        audit_s = time.monotonic() - started
        assert report.decisions == size and report.findings == [], report.findings[:5]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append((size, records, size_bytes, read_s, audit_s, rss))
    print()
    print("| decisions | records read | MiB read | read only (s) | audit (s) | audit / read | decisions/s | "
          "peak RSS (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, records, size_bytes, read_s, audit_s, rss in rows:
        print(f"| {size:,} | {records:,} | {size_bytes / 2**20:,.0f} | {read_s:.1f} | {audit_s:.1f} | "
              f"{audit_s / read_s:.1f}x | {size / audit_s:,.0f} | {rss:,.0f} |")
    size, _, _, _, audit_s, _ = rows[-1]
    print(f"\nextrapolated, linear in decisions from the largest size measured: 10,000,000 decisions in "
          f"{audit_s * 10_000_000 / size:,.0f} s (not measured)")


if __name__ == "__main__":
    main()
