"""A purpose's reference set: JSON lines ``{"text", "topic"?}`` showing what its model needs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from consentgate.errors import CatalogError

MAX_REFERENCE_TEXTS = 100_000
MAX_TOPIC = 60


@dataclass(frozen=True)
class ReferenceSet:
    texts: tuple[str, ...]
    topics: tuple[str | None, ...]
    digest: str  # SHA-256 of the file, so the ledger can say which set a value came from

    def __len__(self) -> int:
        return len(self.texts)


def parse_reference(data: bytes, where: str) -> ReferenceSet:
    """Parse a reference set; errors name the file and line."""
    texts: list[str] = []
    topics: list[str | None] = []
    for number, line in enumerate(_text(data, where).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CatalogError(f"{where}:{number}: not JSON: {exc.msg}") from exc
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise CatalogError(f"{where}:{number}: expected {{\"text\": \"...\"}} with a non-empty text")
        topic = item.get("topic")
        if topic is not None and (not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC):
            raise CatalogError(f"{where}:{number}: topic must be a string of 1..{MAX_TOPIC} characters")
        texts.append(item["text"])
        topics.append(topic)
        if len(texts) > MAX_REFERENCE_TEXTS:
            raise CatalogError(f"{where}: more than {MAX_REFERENCE_TEXTS} reference texts")
    if not texts:
        raise CatalogError(f"{where}: no reference texts")
    return ReferenceSet(tuple(texts), tuple(topics), hashlib.sha256(data).hexdigest())


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{where}: not UTF-8: {exc.reason} at byte {exc.start}") from exc
