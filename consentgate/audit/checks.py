"""The audit's checks as SQL over the loaded tables; each query yields findings of one kind.

Parameters: ``$activity`` (the input topic), ``$allowance`` and ``$res`` (consent first, ms),
``$skew_ms``, ``$ipad``/``$opad`` (the pseudonym secret's HMAC pads), ``$key_id``, and
``$from_ms``/``$to_ms`` (the range, for erasures).
"""

from __future__ import annotations

import time
from typing import Any

import duckdb

from consentgate.audit.findings import Finding, Kind
from consentgate.audit.rules import ACCEPTABLE_SQL


def _hmac(message: str) -> str:
    """SQL for the first 32 hex digits of HMAC-SHA256(secret, message), as consentgate.pseudonyms computes it."""
    return f"left(sha256($opad || unhex(sha256($ipad || encode({message})))), 32)"



PREPARE = [
    # decisions whose input lies in the audited range
    """CREATE TABLE d AS SELECT row_number() OVER () AS rid, x.* EXCLUDE (record_ids, pseudonyms)
       FROM decisions x JOIN scope s
       ON x.in_topic = $activity AND x.in_partition = s.p AND x.in_offset >= s.start_offset
       AND x.in_offset < s.end_offset""",
    # consent first: the newest version whose change was appended (plus the allowance) before the input
    """CREATE TABLE vprobe AS SELECT user_id, version, action,
       ((appended_at + $allowance + $res - 1) // $res) * $res AS t FROM versions""",
    """CREATE TABLE floors AS SELECT d.rid, max(v.version) AS floor, arg_max(v.action, v.version) AS floor_action
       FROM d JOIN vprobe v ON v.user_id = d.user_id JOIN bounds b ON b.p = d.in_partition AND b.t = v.t
       WHERE b.boundary <= d.in_offset GROUP BY d.rid""",
    """CREATE TABLE erase_seen AS SELECT d.rid, max(v.version) AS erase_version FROM d JOIN versions v
       ON v.user_id = d.user_id AND v.action = 'erase' AND v.appended_at <= d.decided_at GROUP BY d.rid""",
    # the states the gate may have held: no record (or a compacted erasure), erased, or the named version
    """CREATE TABLE st2 AS SELECT *,
       CASE WHEN consent_version IS NULL THEN stale OR floor = 0 OR coalesce(floor_action = 'erase', false)
            ELSE NOT version_exists END AS may_none,
       CASE WHEN consent_version IS NULL THEN stale OR coalesce(erase_version >= floor, false)
            ELSE version_erased END AS may_erased,
       consent_version IS NOT NULL AND version_exists AND NOT version_erased AS may_present
       FROM (SELECT *, CASE WHEN consent_version IS NULL
            THEN NOT (floor = 0 OR coalesce(floor_action = 'erase', false) OR coalesce(erase_version >= floor, false))
            ELSE consent_version < floor END AS stale FROM (
         SELECT d.rid, d.event_id, d.user_id, d.category, d.decided_at, d.consent_version, d.in_partition,
                d.in_offset, coalesce(f.floor, 0) AS floor, f.floor_action, e.erase_version,
                vv.version IS NOT NULL AS version_exists, coalesce(vv.erased, false) AS version_erased,
                d.category IN (SELECT category FROM categories) AS category_known
         FROM d LEFT JOIN floors f USING (rid) LEFT JOIN erase_seen e USING (rid)
         LEFT JOIN versions vv ON vv.user_id = d.user_id AND vv.version = d.consent_version))""",
    """CREATE TABLE oc AS SELECT rid, u.purpose AS purpose, u.passed AS passed, u.reason AS reason,
       count(*) OVER (PARTITION BY rid, u.purpose) AS copies FROM (SELECT rid, unnest(outcomes) AS u FROM d)""",
    """CREATE TABLE ex AS SELECT st2.rid, u.purpose FROM st2 JOIN uses u ON u.category = st2.category
       UNION ALL SELECT st2.rid, p.purpose FROM st2 JOIN purposes p ON NOT st2.category_known""",
    # every passing outcome of every decision read (in range or not), with the keyed hashes it owes
    # (computed as the decisions were loaded: keyed.py)
    """CREATE TABLE passes AS
       SELECT x.event_id, x.user_id, x.category, x.consent_version, x.in_partition, x.in_offset, x.u.purpose AS purpose,
              s.p IS NOT NULL AS in_scope, x.record_id, x.pseudonym
       FROM (SELECT event_id, user_id, category, consent_version, in_topic, in_partition, in_offset,
                    unnest(outcomes) AS u, unnest(record_ids) AS record_id, unnest(pseudonyms) AS pseudonym
             FROM decisions) x
       LEFT JOIN scope s ON x.in_topic = $activity AND x.in_partition = s.p AND x.in_offset >= s.start_offset
                        AND x.in_offset < s.end_offset
       WHERE x.u.passed""",
    """CREATE TABLE by_record AS SELECT purpose, record_id, any_value(event_id) AS event_id,
       any_value(user_id) AS user_id, any_value(pseudonym) AS pseudonym, any_value(category) AS category,
       any_value(consent_version) AS consent_version, bool_or(in_scope) AS in_scope,
       count(DISTINCT hash(in_partition, in_offset)) AS inputs FROM passes GROUP BY purpose, record_id""",
    """CREATE TABLE by_event AS SELECT event_id, purpose, any_value(record_id) AS record_id,
       any_value(user_id) AS user_id, any_value(category) AS category,
       any_value(consent_version) AS consent_version, bool_or(in_scope) AS in_scope,
       count(DISTINCT hash(in_partition, in_offset)) AS inputs FROM passes GROUP BY event_id, purpose""",
    """CREATE TABLE occ AS SELECT event_id, purpose, min(occurred_at) AS occurred_at FROM (
       SELECT event_id, purpose, occurred_at FROM contributions
       UNION ALL SELECT b.event_id, t.purpose, t.occurred_at FROM training t
       JOIN by_record b ON b.purpose = t.purpose AND b.record_id = t.record_id) GROUP BY event_id, purpose""",
    f"""CREATE TABLE judged AS SELECT *, {ACCEPTABLE_SQL} AS acceptable FROM (
       SELECT oc.rid, oc.purpose, oc.passed, oc.reason, st2.event_id, st2.user_id, st2.category, st2.consent_version,
              st2.decided_at, st2.in_partition, st2.in_offset, st2.stale, st2.floor, st2.category_known,
              st2.may_none, st2.may_erased, st2.may_present, g.granted_at IS NOT NULL AS has_grant,
              g.granted_at, g.expires_at, g.terms_version AS g_terms, p.terms_current, o.occurred_at,
              CASE WHEN oc.passed THEN 'pass' ELSE coalesce(oc.reason, '(no reason)') END AS actual
       FROM oc JOIN st2 USING (rid) JOIN purposes p ON p.purpose = oc.purpose
       SEMI JOIN ex ON ex.rid = oc.rid AND ex.purpose = oc.purpose
       LEFT JOIN grants g ON g.user_id = st2.user_id AND g.category = st2.category AND g.purpose = oc.purpose
            AND g.from_version <= st2.consent_version AND (g.to_version IS NULL OR st2.consent_version < g.to_version)
       LEFT JOIN occ o ON oc.passed AND o.event_id = st2.event_id AND o.purpose = oc.purpose)""",
]

_WHERE_D = "'gate.decisions[' || part || ']@' || off"
_WHERE_T = "topic || '[' || part || ']@' || off"
_WHERE_C = "'metering.contributions[' || part || ']@' || off"

# (kind, SQL giving event_id, purpose, detail, where)
FINDINGS: list[tuple[Kind, str]] = [
    (Kind.WRONG_OUTCOME, """SELECT event_id, purpose,
        CASE WHEN passed THEN 'passed' ELSE 'dropped as ' || actual END || ', expected '
        || replace(array_to_string(acceptable, ' or '), 'pass', 'a pass') || ' (consent '
        || coalesce('v' || consent_version, 'none') || ')', 'input ' || in_partition || '@' || in_offset
        FROM judged WHERE NOT list_contains(acceptable, actual)"""),
    (Kind.WRONG_OUTCOME, """SELECT st2.event_id, oc.purpose, 'an outcome for a purpose that does not use category '
        || st2.category, 'input ' || in_partition || '@' || in_offset FROM oc JOIN st2 USING (rid)
        ANTI JOIN ex ON ex.rid = oc.rid AND ex.purpose = oc.purpose"""),
    (Kind.WRONG_OUTCOME, """SELECT event_id, NULL, 'consent v' || consent_version || ' of ' || user_id
        || ' does not exist on consent.changes', 'input ' || in_partition || '@' || in_offset
        FROM st2 WHERE consent_version IS NOT NULL AND NOT version_exists"""),
    (Kind.MISSING_OUTCOME, """SELECT st2.event_id, ex.purpose, 'no outcome for a purpose that uses category '
        || st2.category, 'input ' || in_partition || '@' || in_offset FROM ex JOIN st2 USING (rid)
        ANTI JOIN oc ON ex.rid = oc.rid AND ex.purpose = oc.purpose"""),
    (Kind.DUPLICATE, """SELECT DISTINCT st2.event_id, oc.purpose, 'the decision lists this purpose '
        || oc.copies || ' times', 'input ' || in_partition || '@' || in_offset FROM oc JOIN st2 USING (rid)
        WHERE oc.copies > 1"""),
    (Kind.STALE_CONSENT, """SELECT event_id, NULL, 'decided with consent ' || coalesce('v' || consent_version, 'none')
        || ' although v' || floor || ' was committed before the input was appended',
        'input ' || in_partition || '@' || in_offset FROM st2 WHERE stale"""),
    (Kind.DUPLICATE, """SELECT any_value(event_id), NULL, count(*) || ' decisions and dead letters for one input',
        'input ' || p || '@' || o FROM (
          SELECT in_partition AS p, in_offset AS o, event_id FROM d
          UNION ALL SELECT x.in_partition, x.in_offset, NULL FROM dead_letters x JOIN scope s
            ON x.in_topic = $activity AND x.in_partition = s.p AND x.in_offset >= s.start_offset
            AND x.in_offset < s.end_offset) GROUP BY p, o HAVING count(*) > 1"""),
    (Kind.OFFSET_GAP, """WITH seen AS (
          SELECT DISTINCT in_partition AS p, in_offset AS o FROM d
          UNION SELECT x.in_partition, x.in_offset FROM dead_letters x JOIN scope s
            ON x.in_topic = $activity AND x.in_partition = s.p AND x.in_offset >= s.start_offset
            AND x.in_offset < s.end_offset),
        edges AS (SELECT p, start_offset - 1 AS o FROM scope UNION ALL SELECT p, end_offset FROM scope
                  UNION ALL SELECT p, o FROM seen),
        gaps AS (SELECT p, lag(o) OVER (PARTITION BY p ORDER BY o) + 1 AS first, o - 1 AS last FROM edges)
        SELECT NULL, NULL, CASE WHEN first = last THEN 'no decision or dead letter for input offset ' || first
          ELSE 'no decision or dead letter for input offsets ' || first || '..' || last
          || ' (' || (last - first + 1) || ')' END, 'input ' || p || '@' || first
        FROM gaps WHERE first IS NOT NULL AND last >= first"""),
    # training records
    (Kind.UNJUSTIFIED_OUTPUT, f"""SELECT NULL, t.purpose,
        'a training record (record_id ' || coalesce(t.record_id, 'none')
        || ') without a passing decision', {_WHERE_T} FROM training t
        ANTI JOIN by_record b ON b.purpose = t.purpose AND b.record_id = t.record_id"""),
    (Kind.UNKEPT_FIELD, f"""SELECT b.event_id, t.purpose, 'training record holds field ' || t.name || ', which '
        || t.purpose || ' does not keep of ' || t.category, {_WHERE_T}
        FROM (SELECT *, unnest(field_names) AS name FROM training) t
        LEFT JOIN uses u ON u.purpose = t.purpose AND u.category = t.category
        LEFT JOIN by_record b ON b.purpose = t.purpose AND b.record_id = t.record_id
        WHERE NOT coalesce(list_contains(u.keep, t.name), false)"""),
    (Kind.RAW_ID, f"""SELECT b.event_id, t.purpose, 'training record carries the raw ' ||
        CASE WHEN len(t.raw_fields) > 0 THEN array_to_string(t.raw_fields, ', ')
             WHEN list_contains(t.field_values, b.event_id) THEN 'event id in a field'
             ELSE 'user id in a field' END, {_WHERE_T}
        FROM training t LEFT JOIN by_record b ON b.purpose = t.purpose AND b.record_id = t.record_id
        WHERE len(t.raw_fields) > 0 OR coalesce(list_contains(t.field_values, b.event_id), false)
           OR coalesce(list_contains(t.field_values, b.user_id), false)"""),
    (Kind.KEY_MISMATCH, f"""SELECT b.event_id, t.purpose, CASE WHEN t.key_id IS DISTINCT FROM $key_id
          THEN 'training record key_id ' || coalesce(t.key_id, 'none') || ' is not the secret''s key id ' || $key_id
          ELSE 'training record pseudonym is not the keyed hash of its decision''s user' END, {_WHERE_T}
        FROM training t LEFT JOIN by_record b ON b.purpose = t.purpose AND b.record_id = t.record_id
        WHERE t.key_id IS DISTINCT FROM $key_id OR (b.pseudonym IS NOT NULL AND t.pseudonym <> b.pseudonym)"""),
    (Kind.OUTPUT_MISMATCH, f"""SELECT b.event_id, t.purpose, 'training record says ' || t.category || ' v'
        || t.consent_version || ', its decision ' || b.category || ' v' || b.consent_version, {_WHERE_T}
        FROM training t JOIN by_record b ON b.purpose = t.purpose AND b.record_id = t.record_id
        WHERE t.category <> b.category OR t.consent_version IS DISTINCT FROM b.consent_version"""),
    (Kind.DUPLICATE, """SELECT b.event_id, b.purpose, n || ' training records for ' || b.inputs || ' passing input(s)',
        NULL FROM by_record b JOIN (SELECT purpose, record_id, count(*) AS n FROM training GROUP BY ALL) t
        USING (purpose, record_id) WHERE b.in_scope AND n > b.inputs"""),
    (Kind.MISSING_OUTPUT, """SELECT b.event_id, b.purpose, 'passed, but no training record (record_id '
        || b.record_id || ')', NULL FROM by_record b WHERE b.in_scope
        AND NOT EXISTS (SELECT 1 FROM training t WHERE t.purpose = b.purpose AND t.record_id = b.record_id)"""),
    # contributions
    (Kind.UNJUSTIFIED_OUTPUT, f"""SELECT c.event_id, c.purpose, 'a contribution without a passing decision',
        {_WHERE_C} FROM contributions c ANTI JOIN by_event b ON b.event_id = c.event_id AND b.purpose = c.purpose"""),
    (Kind.OUTPUT_MISMATCH, f"""SELECT c.event_id, c.purpose, 'contribution says ' || c.user_id || ' ' || c.category
        || ' v' || c.consent_version || ', its decision ' || b.user_id || ' ' || b.category || ' v'
        || b.consent_version, {_WHERE_C} FROM contributions c JOIN by_event b USING (event_id, purpose)
        WHERE c.user_id <> b.user_id OR c.category <> b.category
           OR c.consent_version IS DISTINCT FROM b.consent_version"""),
    (Kind.KEY_MISMATCH, f"""SELECT c.event_id, c.purpose, 'contribution record_id or key_id is not the secret''s',
        {_WHERE_C} FROM contributions c JOIN by_event b USING (event_id, purpose)
        WHERE (c.record_id IS NOT NULL AND c.record_id <> b.record_id)
           OR (c.key_id IS NOT NULL AND c.key_id <> $key_id)"""),
    (Kind.DUPLICATE, """SELECT b.event_id, b.purpose, n || ' contributions for ' || b.inputs || ' passing input(s)',
        NULL FROM by_event b JOIN (SELECT event_id, purpose, count(*) AS n FROM contributions GROUP BY ALL) c
        USING (event_id, purpose) WHERE b.in_scope AND n > b.inputs"""),
    (Kind.MISSING_OUTPUT, """SELECT b.event_id, b.purpose, 'passed, but no contribution', NULL FROM by_event b
        WHERE b.in_scope AND NOT EXISTS (SELECT 1 FROM contributions c WHERE c.event_id = b.event_id
        AND c.purpose = b.purpose)"""),
    # erasures
    (Kind.MISSING_RETRACTION, f"""SELECT NULL, e.purpose, 'erasure of ' || e.user_id || ' (consent v' || e.version
        || ') has no retraction for this purpose', 'consent.changes ' || e.receipt_id FROM (
          SELECT v.user_id, v.version, v.receipt_id, p.purpose, {_hmac("p.purpose || chr(0) || v.user_id")} AS pseudonym
          FROM versions v CROSS JOIN purposes p WHERE v.action = 'erase'
            AND ($from_ms IS NULL OR v.appended_at >= $from_ms) AND ($to_ms IS NULL OR v.appended_at < $to_ms)) e
        ANTI JOIN retractions r ON r.purpose = e.purpose AND r.pseudonym = e.pseudonym
          AND (r.consent_version = e.version OR (r.consent_version IS NULL AND r.receipt_id = e.receipt_id))"""),
    (Kind.KEY_MISMATCH, """SELECT NULL, purpose, 'retraction key_id ' || key_id || ' is not the secret''s key id',
        'training.retractions[' || part || ']@' || off FROM retractions
        WHERE key_id IS NOT NULL AND key_id <> $key_id"""),
]


def prepare(db: duckdb.DuckDBPyConnection, params: dict[str, Any], timings: dict[str, float] | None = None) -> None:
    for statement in PREPARE:
        started = time.monotonic()
        db.execute(statement, _used(statement, params))
        if timings is not None:
            timings[statement.split()[2]] = time.monotonic() - started


def findings(db: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    for kind, query in FINDINGS:
        for event_id, purpose, detail, where in db.execute(query, _used(query, params)).fetchall():
            out.append(Finding(kind.value, event_id, purpose, detail, where))
    return sorted(out, key=lambda f: (f.kind, f.event_id or "", f.purpose or "", f.where or "", f.detail))


def _used(statement: str, params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if f"${k}" in statement}
