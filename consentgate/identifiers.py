"""What an identifier from input may look like. Pure: no I/O.

User ids, event ids and categories arrive from the platform's producers. Bounding them at the
gate (and again in metering) keeps them inside what every store accepts (the ledger's
``VARCHAR(200)`` columns, Kafka keys, metric labels), so one odd record can never make a
downstream batch roll back and retry forever.
"""

from __future__ import annotations

import unicodedata

MAX_ID_LENGTH = 200
# Control, format, surrogate, private-use and unassigned code points, and line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def identifier_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable identifier, or None when it is."""
    if not value:
        return "is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"has {len(value)} characters (at most {MAX_ID_LENGTH})"
    if value.isascii() and value.isprintable():  # the common case, without a per-character walk
        return None
    for position, char in enumerate(value):
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            return f"has a control or unassigned character U+{ord(char):04X} at position {position}"
    return None
