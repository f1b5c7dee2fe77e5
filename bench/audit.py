"""The audit's speed and memory, as a ratio to reading the same topics without checking.

    python -m bench.audit [--decisions N[,N...]] [--users N] [--memory-limit 1GB] [--keep]

For each size: real consent for a synthetic population (through the consent writer, so
consent.changes is real), N activity records, and what a correct gate writes for them
(decisions by the gate's own ``decide``, training records and contributions for every pass),
produced straight to the topics (running the gate itself would measure the gate). Then, in
the same run and each in a fresh process of its own (so its peak RSS is its own): (1) read
every topic the audit reads, to its end, touching each value but not decoding it (the
baseline), and (2) the full audit, which must find nothing. The bench's topics are deleted
afterwards unless ``--keep``; ``--reuse PREFIX`` measures (then deletes) topics an earlier
``--keep`` run left, with ``--decisions`` its size.

Generation is not what is measured, but at 10M it must not take an hour: every input is one
of the (user, category) pairs of the population, all occurring at one instant, so the gate's
outputs for a pair are the same but for the event id, the input's coordinates and the record
id. Each pair's records are built once by the gate's own code (``decide``, the output records,
the registry's encoder) and then copied with those fields spliced into the Avro bytes (event
id and record id are leading fields, the input's coordinates trailing ones).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import resource
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from consentgate.connectors.kafka import admin, producer
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.streams.consent_rules import with_grant
from consentgate.streams.outputs import Keyed, contribution_record, decision_record, training_record

from bench.common import Workbench, load_consent, timed, workbench
from consentgate.catalog import Catalog
from consentgate.decision import decide
from consentgate.model import ActivityEvent, ConsentLookup, Grant
from consentgate.pseudonyms import key_id, pseudonym, record_id
from consentgate.quality import assess
from consentgate.synthetic import CATEGORY_MIX, _payload, consent_population, user_id

BLOCK = 64


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


def _avro_string(text: str) -> bytes:
    data = text.encode()
    return _varint(len(data)) + data


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


class _RecordIds:
    """``consentgate.pseudonyms.record_id`` with the HMAC's keyed states computed once (same values)."""

    def __init__(self, secret: bytes) -> None:
        key = (hashlib.sha256(secret).digest() if len(secret) > BLOCK else secret).ljust(BLOCK, b"\0")
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __call__(self, purpose: str, event_id: str) -> bytes:
        h = self.inner.copy()
        h.update(f"record\x00{purpose}\x00{event_id}".encode())
        o = self.outer.copy()
        o.update(h.digest())
        return o.hexdigest()[:32].encode()


def write_gate_outputs(bench: Workbench, users: int, count: int, seed: int = 11) -> int:
    """N activity records (their content is never read by the audit) and a correct gate's outputs."""
    s, topics, catalog = bench.settings, bench.topics, bench.catalog
    secret = s.require_secret()
    kid = key_id(secret)
    fast_record_id = _RecordIds(secret)
    now = datetime.now(timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    states = states_of(catalog, users, datetime.fromtimestamp(now.timestamp() - 60, timezone.utc))
    out = producer(s, **{"linger.ms": 100, "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
                         "queue.buffering.max.kbytes": 1_048_576, "compression.type": "lz4"})
    rng = random.Random(seed)
    weights = [1.0 / (i + 1) ** 1.1 for i in range(users)]
    cum = list(itertools.accumulate(weights))
    order = list(range(users))
    rng.shuffle(order)
    categories = list(CATEGORY_MIX)
    cat_cum = list(itertools.accumulate(CATEGORY_MIX.values()))
    # per (user, category): the decision's bytes around the event id and input coordinates, and per pass
    # the training record's and contribution's bytes around the event id and record id
    templates: dict[tuple[int, str], tuple[bytes, bytes, list[tuple[str, str, bytes, bytes, bytes, bytes, bytes]]]] = {}
    parts = s.partitions
    written = 0
    with registry_client(s) as registry:
        codecs = Codecs(registry)
        enc_decision = codecs["Decision"].writer_for(topics.decisions)
        enc_contribution = codecs["Contribution"].writer_for(topics.contributions)
        enc_training = {p: codecs["TrainingRecord"].writer_for(t) for p, t in topics.training.items()}

        def template(who: int, category: str, k: int) -> tuple[bytes, bytes, list[Any]]:
            event = ActivityEvent(f"ev-{seed}-{k}", user_id(who), category, now, "synthetic",
                                  _payload(rng, category, k))
            consent = states.get(event.user_id)
            decision = decide(event, consent, catalog, now)
            value = enc_decision(decision_record(decision, now_ms, topics.activity, 0, 0))
            head = 5 + len(_avro_string(event.event_id))
            assert value[-2:] == b"\0\0"
            passes = []
            for outcome in decision.outcomes:
                if not outcome.passed:
                    continue
                rid = record_id(secret, outcome.purpose, event.event_id)
                assert fast_record_id(outcome.purpose, event.event_id).decode() == rid
                keyed = Keyed(pseudonym(secret, outcome.purpose, event.user_id), rid, kid)
                t = enc_training[outcome.purpose](training_record(event, outcome, catalog, keyed,
                                                                  decision.consent_version or 0))
                c = enc_contribution(contribution_record(event, outcome, consent,
                                                         assess(event.category, event.payload), keyed))
                t_at = 5 + 1 + 32
                assert t[t_at:t_at + 33] == b"\x40" + rid.encode()
                c_at = head + len(_avro_string(outcome.purpose))
                assert c[c_at:c_at + 33] == b"\x40" + rid.encode()
                passes.append((outcome.purpose, topics.training[outcome.purpose], t[:t_at + 1], t[t_at + 33:],
                               c[:5], c[head:c_at + 1], c[c_at + 33:]))
            return value[:5], value[head:-2], passes

        activity_topic, decisions_topic, contributions_topic = topics.activity, topics.decisions, topics.contributions
        x = b"x"
        for base in range(0, count, 10_000):
            n = min(10_000, count - base)
            who = rng.choices(order, cum_weights=cum, k=n)
            what = rng.choices(categories, cum_weights=cat_cum, k=n)
            for j in range(n):
                k = base + j
                key = (who[j], what[j])
                found = templates.get(key)
                if found is None:
                    found = templates[key] = template(who[j], what[j], k)
                header, middle, passes = found
                event_id = f"ev-{seed}-{k}"
                eid = _avro_string(event_id)
                partition, offset = k % parts, k // parts
                user_key = user_id(who[j]).encode()
                while True:
                    try:
                        out.produce(activity_topic, x, partition=partition)
                        out.produce(decisions_topic, header + eid + middle + _varint(partition) + _varint(offset),
                                    user_key)
                        break
                    except BufferError:
                        out.poll(0.05)
                written += 1
                for purpose, training_topic, t_head, t_tail, c_header, c_head, c_tail in passes:
                    rid = fast_record_id(purpose, event_id)
                    t_value = t_head + rid + t_tail
                    c_value = c_header + eid + c_head + rid + c_tail
                    while True:
                        try:
                            out.produce(training_topic, t_value, t_value[6:38])
                            out.produce(contributions_topic, c_value, user_key)
                            break
                        except BufferError:
                            out.poll(0.05)
                    written += 2
            out.poll(0)
        assert out.flush(600) == 0
    return written


def read_only(bench: Workbench) -> dict[str, Any]:
    """Read every topic the audit reads to its end, touching each value (the baseline)."""
    from consentgate.audit.sources import read_chunks

    s, topics = bench.settings, bench.topics
    adm = admin(s)
    started = time.monotonic()
    records = size = 0
    for topic in [topics.consent_changes, topics.decisions, topics.dlq, topics.contributions, topics.retractions,
                  *topics.training.values()]:
        for chunk in read_chunks(s, adm, topic, None):
            records += len(chunk)
            size += sum(len(m.value() or b"") for m in chunk)
    return {"records": records, "bytes": size, "seconds": time.monotonic() - started}


def audit_only(bench: Workbench, memory_limit: str) -> dict[str, Any]:
    from consentgate.audit.run import AuditOptions, run_audit

    started = time.monotonic()
    phases: dict[str, float] = {}
    report = run_audit(bench.settings, bench.catalog, AuditOptions(memory_limit=memory_limit), phases)
    seconds = time.monotonic() - started
    return {"seconds": seconds, "decisions": report.decisions, "findings": [f.__dict__ for f in report.findings[:5]],
            "found": len(report.findings), "replay_hash": report.replay_hash, "phases": phases}


def measured(what: str, prefix: str, memory_limit: str) -> dict[str, Any]:
    """``what`` (read or audit) in a fresh process: its result, with that process's peak RSS."""
    line = subprocess.run([sys.executable, "-m", "bench.audit", "--measure", what, "--reuse", prefix,
                           "--memory-limit", memory_limit], check=True, capture_output=True, text=True).stdout
    return json.loads(line.strip().splitlines()[-1])  # type: ignore[no-any-return]


def delete_topics(bench: Workbench) -> None:
    client = admin(bench.settings)
    mine = [t for t in client.list_topics(timeout=30).topics if t.startswith(bench.settings.topic_prefix)]
    for future in client.delete_topics(mine, operation_timeout=60).values() if mine else ():
        future.result(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", default="200000,1000000", help="comma-separated sizes")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--keep", action="store_true", help="keep the bench's topics (for --reuse)")
    parser.add_argument("--reuse", metavar="PREFIX", help="measure topics an earlier --keep run left")
    parser.add_argument("--measure", choices=("read", "audit"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        bench = workbench(partitions=3, topic_prefix=args.reuse)
        result = read_only(bench) if args.measure == "read" else audit_only(bench, args.memory_limit)
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    rows = []
    for size in [int(x) for x in args.decisions.split(",")]:
        bench = workbench(partitions=3, **({"topic_prefix": args.reuse} if args.reuse else {}))
        print(f"     topic prefix {bench.settings.topic_prefix}", flush=True)
        try:
            if not args.reuse:
                t = timed(f"{size:,} decisions: consent for {args.users:,} users")
                load_consent(bench, args.users)
                timed(f"writing {size:,} inputs and a correct gate's outputs")
                outputs = write_gate_outputs(bench, args.users, size)
                print(f"     {outputs:,} gate records in {time.monotonic() - t:.0f}s", flush=True)
            timed("baseline: read the same topics without checking (own process)")
            read = measured("read", bench.settings.topic_prefix, args.memory_limit)
            timed("audit (own process)")
            audit = measured("audit", bench.settings.topic_prefix, args.memory_limit)
            print(f"     {json.dumps(audit)}", flush=True)
            assert audit["found"] == 0, audit["findings"]
            if not args.reuse:
                assert audit["decisions"] == size, audit
            rows.append((audit["decisions"], read, audit))
        finally:
            if not args.keep:
                delete_topics(bench)
    print()
    print("| decisions | records read | MiB read | read only (s) | audit (s) | audit / read | decisions/s "
          "audited | records/s audited | peak RSS read only (MiB) | peak RSS audit (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, read, audit in rows:
        print(f"| {size:,} | {read['records']:,} | {read['bytes'] / 2**20:,.0f} | {read['seconds']:.1f} | "
              f"{audit['seconds']:.1f} | {audit['seconds'] / read['seconds']:.2f}x | {size / audit['seconds']:,.0f} | "
              f"{read['records'] / audit['seconds']:,.0f} | {read['peak_rss_mib']:,.0f} | "
              f"{audit['peak_rss_mib']:,.0f} |")
    size, read, audit = rows[-1]
    print(f"\nWhere the audit of {size:,} decisions spent its time (seconds, share of the audit):\n")
    print("| phase | s | share |")
    print("|---|---:|---:|")
    phases = sorted(audit["phases"].items(), key=lambda kv: -kv[1])
    for phase, seconds in phases:
        print(f"| {phase} | {seconds:.1f} | {seconds / audit['seconds']:.0%} |")
    rest = audit["seconds"] - sum(s for _, s in phases)
    print(f"| (other: offsets, registry, setup) | {rest:.1f} | {rest / audit['seconds']:.0%} |")


if __name__ == "__main__":
    main()
