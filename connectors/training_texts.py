"""The minimised texts of training records, by keyed record id, read from ``training.<purpose>``.

``metering value`` needs the text each contribution carried. It reads it where the training
side has it, minimised to what the purpose keeps and keyed by ``record_id``, never from the raw
activity topic. Each call reads the purpose's topic from the beginning to its last stable
offset (committed records only) and keeps the texts of the record ids asked for.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from confluent_kafka import TopicPartition

from consentgate.catalog import Catalog
from consentgate.connectors.kafka import admin, consumer
from consentgate.connectors.reader import partitions_of, read_until, stable_ends
from consentgate.connectors.topics import TopicNames
from consentgate.quality import TEXT_FIELD
from consentgate.schemas.codec import Codecs, registry_client
from consentgate.schemas.errors import RecordError
from consentgate.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class TrainingTexts:
    """A ``TextSource`` over the training topics; counts what it could not read."""

    settings: Settings
    catalog: Catalog
    read: int = 0
    unreadable: dict[str, int] = field(default_factory=dict)  # error class -> records

    def __call__(self, purpose: str, record_ids: set[str]) -> dict[str, str]:
        topic = TopicNames.of(self.settings, self.catalog).training[purpose]
        found: dict[str, str] = {}
        with registry_client(self.settings) as registry:
            decode = Codecs(registry)["TrainingRecord"].decode
            # A throwaway group: the read is assigned, never subscribed, and commits nothing.
            cons = consumer(self.settings, f"consentgate-value-{uuid.uuid4().hex[:12]}")
            try:
                partitions = partitions_of(cons, topic)
                ends = stable_ends(admin(self.settings), partitions)
                cons.assign([TopicPartition(tp.topic, tp.partition, -2) for tp in partitions])
                for msg in read_until(cons, ends):
                    self.read += 1
                    raw = msg.value()
                    try:
                        if not raw:
                            continue  # a tombstone holds no text
                        record = decode(raw, msg.topic(), msg.partition(), msg.offset())
                    except RecordError as exc:
                        name = type(exc).__name__
                        self.unreadable[name] = self.unreadable.get(name, 0) + 1
                        log.warning("training record at %s[%d]@%d unreadable, its contribution keeps "
                                    "multiplier 1: %s", msg.topic(), msg.partition(), msg.offset(), exc)
                        continue
                    if record["record_id"] in record_ids:
                        text = record["fields"].get(TEXT_FIELD.get(record["category"], ""))
                        if isinstance(text, str):
                            found[record["record_id"]] = text
            finally:
                cons.close()
        return found
