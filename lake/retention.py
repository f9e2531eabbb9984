"""Retention and vacuum: partitions leave a table by a log commit first, and
leave the disk a grace period later, so no running query loses a file.

Retention takes its "today" from the clock, and ``retained_from`` only moves
forward while vacuum deletes late files dated before it: one run under a clock
set to 2100 would empty the table for good. So the clock is checked against
the table's own newest partition (ingest rejects event times ahead of its
clock, so the data is a lower bound of the real date): a clock more than
``max_clock_lead_days`` ahead of it is refused with ``ClockAhead`` and nothing
moves; a table with no dated files is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from citylake.lake.manifest import (
    COMPACTED_PREFIX,
    FLINK_PART_PREFIX,
    SYNCED_PREFIX,
    Removed,
    TableLog,
    partition_date,
)
from citylake.schemas import PARTITION_COLUMN, DataLayout, TableSpec

log = logging.getLogger(__name__)

DEFAULT_GRACE = timedelta(minutes=10)
# A table whose newest partition is older than this (in days) before the
# clock's today is taken as a wrong clock, not as a source that went quiet.
DEFAULT_MAX_CLOCK_LEAD_DAYS = 30


class ClockAhead(ValueError):
    """Retention refused: the clock is far ahead of the table's newest data."""


@dataclass(frozen=True)
class RetentionResult:
    table: str
    retained_from: date
    files_removed: int


@dataclass(frozen=True)
class VacuumResult:
    table: str
    files_deleted: int
    bytes_deleted: int


def retain_table(
    layout: DataLayout,
    spec: TableSpec,
    keep_days: int,
    today: date | None = None,
    max_clock_lead_days: int | None = DEFAULT_MAX_CLOCK_LEAD_DAYS,
) -> RetentionResult:
    """Keep the last ``keep_days`` date partitions (today included); raises
    ``ClockAhead`` when ``today`` leads the newest partition by more than
    ``max_clock_lead_days`` (None: no check)."""
    if spec.time_column is None:
        raise ValueError(
            f"table {spec.name!r} has no date partitions; retention applies to dated tables only"
        )
    if keep_days < 1:
        raise ValueError(f"keep_days must be at least 1, got {keep_days}")
    today = today or datetime.now(UTC).date()
    cutoff = today - timedelta(days=keep_days - 1)
    table_log = TableLog(layout, spec)
    with table_log.writer():
        snap = table_log.snapshot()
        manifest = snap.manifest
        dates = [d for f in snap.files if (d := partition_date(f)) is not None]
        if not dates:
            # Nothing to retire; a retained_from set now (from a clock that may
            # be wrong) would only hide and delete data that arrives later.
            return RetentionResult(spec.name, manifest.retained_from or cutoff, 0)
        newest = max(dates)
        if max_clock_lead_days is not None and (today - newest).days > max_clock_lead_days:
            raise ClockAhead(
                f"{spec.name}: retention refused: the clock's date {today} is {(today - newest).days} days "
                f"after the newest partition {newest} (more than {max_clock_lead_days}); a wrong clock "
                "would retire every partition for good. Check the system clock; if the data really "
                "stopped, run `citylake lake retain` with --today set on purpose"
            )
        if manifest.retained_from is not None and manifest.retained_from >= cutoff:
            return RetentionResult(spec.name, manifest.retained_from, 0)
        dropped = [f for f in snap.files if (d := partition_date(f)) is not None and d < cutoff]
        now = datetime.now(UTC)
        table_log.commit(
            manifest,
            "retain",
            retained_from=cutoff,
            added=manifest.added - set(dropped),
            removed=manifest.removed + tuple(Removed(f, now) for f in dropped),
        )
    log.info("%s: partitions before %s retired (%d files)", spec.name, cutoff, len(dropped))
    return RetentionResult(spec.name, cutoff, len(dropped))


def _old(path: str, before: float) -> bool:
    try:
        return os.stat(path).st_mtime < before
    except FileNotFoundError:
        return False


def vacuum_table(layout: DataLayout, spec: TableSpec, grace: timedelta = DEFAULT_GRACE) -> VacuumResult:
    """Delete files that left the table more than ``grace`` ago, leftovers of
    interrupted compactions and syncs, and late files in retired partitions."""
    table_log = TableLog(layout, spec)
    deleted = size = 0

    def delete(path: str) -> None:
        nonlocal deleted, size
        with contextlib.suppress(FileNotFoundError):
            size += os.stat(path).st_size
            os.unlink(path)
            deleted += 1

    with table_log.writer():
        manifest = table_log.current()
        now = datetime.now(UTC)
        expired = [r for r in manifest.removed if now - r.at >= grace]
        for removed in expired:
            delete(str(table_log.root / removed.path))
        # A deleted file stays named in the log for one more grace: the DuckDB
        # CLI's live views list the directory when a query is planned and read
        # the log when it runs, and a file listed just before its delete must
        # still read as removed then, not as a Flink file to open.
        keep = tuple(r for r in manifest.removed if now - r.at < 2 * grace)
        if len(keep) != len(manifest.removed):
            manifest = table_log.commit(manifest, "vacuum", removed=keep)
        before = now.timestamp() - grace.total_seconds()
        known = manifest.added | manifest.removed_paths
        if table_log.root.exists():
            for dirpath, _, names in os.walk(table_log.root):
                relative_dir = os.path.relpath(dirpath, table_log.root)
                for name in names:
                    relative = name if relative_dir == "." else f"{relative_dir}/{name}"
                    path = os.path.join(dirpath, name)
                    # Compaction output or a synced file whose commit never
                    # happened (a crash between moving it in and the log write).
                    leftover = name.startswith(f".{COMPACTED_PREFIX}") or (
                        name.startswith((COMPACTED_PREFIX, SYNCED_PREFIX)) and relative not in known
                    )
                    day = partition_date(relative)
                    retired = (
                        name.startswith(FLINK_PART_PREFIX)
                        and manifest.retained_from is not None
                        and day is not None
                        and day < manifest.retained_from
                        and relative not in known
                    )
                    if (leftover or retired) and _old(path, before):
                        delete(path)
                if (
                    relative_dir.startswith(f"{PARTITION_COLUMN}=")
                    and manifest.retained_from is not None
                    and (day := partition_date(relative_dir)) is not None
                    and day < manifest.retained_from
                ):
                    with contextlib.suppress(OSError):
                        os.rmdir(dirpath)  # only once empty
        table_log.prune_versions()
    return VacuumResult(spec.name, deleted, size)
