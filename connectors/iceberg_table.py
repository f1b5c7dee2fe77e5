"""The Iceberg table a training topic is written to: catalog, schema, partitioning, resume offsets.

One table per training topic (``training.<purpose>`` or a regated generation of it), in a SQL catalog
(SQLite in the data directory by default, PostgreSQL in production), partitioned by the month of
``occurred_at`` (the period metering and statements use). The Kafka offsets the table holds data up to
are written into the summary of every snapshot the sink commits, in the same catalog commit as the
data, so the table itself says where to resume: never the consumer group.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog as IcebergCatalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import MonthTransform
from pyiceberg.types import (
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    NestedField,
    StringType,
    TimestamptzType,
)

from consentgate.errors import SinkError
from consentgate.settings import Settings

OFFSETS_PROPERTY = "consentgate.offsets"  # snapshot summary: {"topic": {"partition": next offset}}
SOURCE_PROPERTY = "consentgate.source-topic"  # table property: the training topic it mirrors
CATALOG_NAME = "consentgate"

SCHEMA = Schema(
    NestedField(1, "pseudonym", StringType(), required=True, doc="keyed HMAC of the user, per purpose"),
    NestedField(2, "record_id", StringType(), required=True, doc="keyed hash of (purpose, event id)"),
    NestedField(3, "key_id", StringType(), required=True, doc="fingerprint of the key of both hashes"),
    NestedField(4, "purpose", StringType(), required=True),
    NestedField(5, "category", StringType(), required=True),
    NestedField(6, "occurred_at", TimestamptzType(), required=True),
    NestedField(7, "fields", MapType(12, StringType(), 13, StringType(), value_required=True), required=True,
                doc="text fields the purpose keeps"),
    NestedField(8, "numeric_fields", MapType(14, StringType(), 15, DoubleType(), value_required=True),
                required=True, doc="numeric fields the purpose keeps"),
    NestedField(9, "consent_version", LongType(), required=True),
    NestedField(10, "source_partition", IntegerType(), required=True, doc="training topic partition"),
    NestedField(11, "source_offset", LongType(), required=True, doc="training topic offset"),
)
SPEC = PartitionSpec(PartitionField(source_id=6, field_id=1000, transform=MonthTransform(), name="occurred_month"))
ARROW_SCHEMA: pa.Schema = schema_to_pyarrow(SCHEMA)

NO_COMMIT_RETRY = {
    # pyiceberg retries a commit that lost a race by rebasing it onto the winner's snapshot. For the
    # sink that would append a batch the winner may already hold, under stale offsets: a duplicate.
    # A lost race must fail, so the sink resumes from the offsets the winner committed.
    "commit.retry.num-retries": "0",
}
TABLE_PROPERTIES = {
    **NO_COMMIT_RETRY,
    # Old metadata files only point at snapshots; keep a bounded history of them.
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    "format-version": "2",
}

Offsets = dict[str, dict[int, int]]  # topic -> partition -> next offset to read


def table_name(topic: str) -> str:
    """The table's name for a training topic: its name with every non-word character as ``_``."""
    return re.sub(r"\W", "_", topic)


def open_catalog(settings: Settings) -> IcebergCatalog:
    """The SQL catalog the settings name; its SQLite file's folder is created when needed."""
    url = settings.iceberg_catalog()
    if url.startswith("sqlite:///"):
        settings.data_dir.joinpath("iceberg").mkdir(parents=True, exist_ok=True)
    try:
        return SqlCatalog(CATALOG_NAME, uri=url, warehouse=settings.iceberg_location())
    except Exception as exc:  # SQLAlchemy raises many kinds; all mean the catalog cannot be used
        raise SinkError(f"cannot open the Iceberg catalog at {_redacted(url)}: {exc}") from exc


def _redacted(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def identifier(settings: Settings, topic: str) -> str:
    return f"{settings.iceberg_namespace}.{table_name(topic)}"


def load_or_create(catalog: IcebergCatalog, settings: Settings, topic: str) -> Table:
    """The table of ``topic``, created on first use (concurrent creators agree on one)."""
    name = identifier(settings, topic)
    try:
        table = catalog.load_table(name)
    except NoSuchTableError:
        catalog.create_namespace_if_not_exists(settings.iceberg_namespace)
        try:
            table = catalog.create_table(name, SCHEMA, partition_spec=SPEC,
                                         properties={**TABLE_PROPERTIES, SOURCE_PROPERTY: topic})
        except TableAlreadyExistsError:
            table = catalog.load_table(name)
    if any(table.properties.get(k) != v for k, v in NO_COMMIT_RETRY.items()):  # changed by someone else
        with table.transaction() as tx:
            tx.set_properties(NO_COMMIT_RETRY)
        table = table.refresh()
    return table


def load_existing(catalog: IcebergCatalog, settings: Settings, topic: str) -> Table:
    name = identifier(settings, topic)
    try:
        return catalog.load_table(name)
    except NoSuchTableError as exc:
        raise SinkError(f"no Iceberg table {name}: run `consentgate sink iceberg` first") from exc


def committed_offsets(table: Table) -> Offsets:
    """The offsets recorded by the newest snapshot that carries them (the current one, unless another
    engine committed after the sink); empty for a table the sink never wrote."""
    metadata = table.metadata
    snapshot = table.current_snapshot()
    while snapshot is not None:
        props: dict[str, Any] = snapshot.summary.additional_properties if snapshot.summary else {}
        if OFFSETS_PROPERTY in props:
            return decode_offsets(props[OFFSETS_PROPERTY])
        parent = snapshot.parent_snapshot_id
        snapshot = metadata.snapshot_by_id(parent) if parent is not None else None
    current = table.current_snapshot()
    if current is not None and current.summary is not None:
        records = int(current.summary.additional_properties.get("total-records", "0"))
        if records:
            raise SinkError(f"table {'.'.join(table.name())} holds {records} records but no snapshot records "
                            "the offsets they came from; refusing to guess where to resume")
    return {}


def encode_offsets(offsets: Offsets) -> str:
    return json.dumps({t: {str(p): o for p, o in sorted(ps.items())} for t, ps in sorted(offsets.items())},
                      separators=(",", ":"))


def decode_offsets(text: str) -> Offsets:
    try:
        raw = json.loads(text)
        return {str(t): {int(p): int(o) for p, o in ps.items()} for t, ps in raw.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise SinkError(f"snapshot property {OFFSETS_PROPERTY} is not valid: {text[:200]!r}") from exc
