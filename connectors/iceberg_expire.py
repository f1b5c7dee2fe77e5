"""``consentgate sink expire``: make deletions physical, and record when.

A delete in Iceberg writes a new snapshot without the rows; older snapshots (time travel) still
reference the files that hold them. Expiring a table here:

1. expires every snapshot older than ``snapshot_max_age_s`` (the current one always stays);
2. deletes the data files, manifests and manifest lists that only expired snapshots referenced
   (what pyiceberg's own expiry leaves on storage);
3. deletes orphans: files under the table's location that no retained snapshot or metadata file
   references and that are older than ``orphan_min_age_s`` (written by a writer that crashed before
   its commit; the age keeps a running writer's not-yet-committed files safe);
4. marks every applied erasure whose rows no retained snapshot can reach any more as purged, now.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import urlparse

from pyarrow import fs as pafs
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from consentgate.connectors import iceberg_state as state
from consentgate.connectors.iceberg_table import load_existing, open_catalog, table_name
from consentgate.errors import SinkError
from consentgate.settings import Settings

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class ExpireReport:
    table: str
    at: datetime
    snapshots_expired: int
    snapshots_kept: int
    files_deleted: int
    orphans_deleted: int
    erasures_purged: int  # erasures made physical by this run
    erasures_pending: int  # applied, but a retained snapshot still reaches the rows


def reachable(table: Table, snapshots: Iterable[Snapshot]) -> set[str]:
    """Every manifest list, manifest and live data file the given snapshots reference."""
    io = table.io
    files: set[str] = set()
    seen_manifests: set[str] = set()
    for snapshot in snapshots:
        files.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            files.add(manifest.manifest_path)
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                files.add(entry.data_file.file_path)
    return files


def _path(uri: str) -> str:
    """A location as the filesystem pyarrow resolves for it names it (no scheme)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return parsed.path
    return f"{parsed.netloc}{parsed.path}"


def expire(settings: Settings, topic: str, clock: Clock = lambda: datetime.now(timezone.utc)) -> ExpireReport:
    catalog = open_catalog(settings)
    engine = catalog.engine  # type: ignore[attr-defined]
    try:
        state.ensure(engine)
        table = load_existing(catalog, settings, topic)
        name = table_name(topic)
        now = clock()
        cutoff = now - timedelta(seconds=settings.snapshot_max_age_s)
        for attempt in range(10):  # a sink committing meanwhile wins; expire again on its snapshot
            table = table.refresh()
            before = list(table.snapshots())
            old_files = reachable(table, before)
            try:
                table.maintenance.expire_snapshots().older_than(cutoff).commit()
                break
            except CommitFailedException:
                if attempt == 9:
                    raise SinkError(f"table {name} changed under every one of 10 expiry attempts") from None
        table = table.refresh()
        kept = list(table.snapshots())
        kept_files = reachable(table, kept)
        gone = old_files - kept_files
        for uri in sorted(gone):
            table.io.delete(uri)
        orphans = _delete_orphans(table, kept_files | gone, now - timedelta(seconds=settings.orphan_min_age_s))
        oldest_kept = min((s.timestamp_ms for s in kept), default=None)
        purged, pending = [], 0
        for nym, requested_at, before_ms in state.pending_purge(engine, name):
            if before_ms is None or oldest_kept is None or oldest_kept > before_ms:
                purged.append((nym, requested_at))
            else:
                pending += 1
        state.record_purged(engine, name, purged, now)
        return ExpireReport(name, now, len(before) - len(kept), len(kept), len(gone), orphans, len(purged),
                            pending)
    finally:
        engine.dispose()


def _delete_orphans(table: Table, referenced: set[str], older_than: datetime) -> int:
    """Delete files under the table's location that nothing references and that are old enough."""
    metadata = table.metadata
    keep = {_path(u) for u in referenced}
    keep.add(_path(table.metadata_location))
    keep.update(_path(entry.metadata_file) for entry in metadata.metadata_log)
    filesystem, root = pafs.FileSystem.from_uri(table.location())
    try:
        listing = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise SinkError(f"cannot list {table.location()}: {exc}") from exc
    deleted = 0
    for info in listing:
        if info.type != pafs.FileType.File or info.path in keep:
            continue
        mtime = info.mtime
        if mtime is not None and mtime.replace(tzinfo=mtime.tzinfo or timezone.utc) > older_than:
            continue
        filesystem.delete_file(info.path)
        deleted += 1
    return deleted
