"""The audit (SPEC §5, §8): re-derive every decision from the topics alone.

Written apart from the gate: nothing here imports the gate's decision code, its stream
processors or a compiled kernel (``tests/unit/test_audit_independence.py`` enforces it). It
reads ``consent.changes``, ``gate.decisions``, ``gate.dlq``, ``training.*``,
``training.retractions`` and ``metering.contributions`` through the connectors, decodes them
through the schemas, loads them into an embedded DuckDB database (on disk, memory-capped, so
the audit is bounded in memory) and checks them with SQL beside a pure reference of SPEC §3.
"""

from consentgate.audit.findings import Finding, Kind
from consentgate.audit.report import AuditReport

__all__ = ["AuditReport", "Finding", "Kind"]
