"""Regate: re-decide the activity log under today's consent into a new training generation.

``consentgate regate --purpose P [--from T] [--to T] --into NAME`` reads ``activity.events`` over a
range (from a time, or the beginning; to a time, or the end captured at start), decides every record
with the gate's own pure decision under the consent in force now, and writes the passing records to
``training.<P>.<NAME>``, exactly once: one Kafka transaction per batch holds the outputs and the
regate's progress (its consumer group's offsets), so a re-run resumes where the last one committed.
It then reports, by record id, what the old generation held that the new one drops, by reason.
"""

from consentgate.regate.diff import GenerationDiff, compare
from consentgate.regate.runner import Regate, RegateReport

__all__ = ["GenerationDiff", "Regate", "RegateReport", "compare"]
