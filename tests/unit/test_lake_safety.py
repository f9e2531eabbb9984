"""Issue 13's lake data-safety cases on real files: retention under a wrong
clock, and compaction's rename made durable before the log names its output."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from citylake.lake import Lake, compaction
from citylake.lake.compaction import compact_table
from citylake.lake.manifest import TableLog
from citylake.lake.retention import ClockAhead, retain_table, vacuum_table
from citylake.schemas import DataLayout
from tests.unit.test_lake_table import READINGS, flink_file, values


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    return DataLayout(tmp_path / "data")


def test_retention_under_a_clock_in_2100_is_refused_and_moves_nothing(layout: DataLayout) -> None:
    flink_file(layout, "2026-11-24", "a-0", 0, 5)
    flink_file(layout, "2026-11-25", "b-0", 10, 5)
    lake = Lake(layout)
    with pytest.raises(ClockAhead, match="Check the system clock"):
        retain_table(layout, READINGS, keep_days=2, today=date(2100, 1, 1))
    assert TableLog(layout, READINGS).current().retained_from is None
    # A late file of the newest day arrives; vacuum after a grace of 0 keeps it.
    late = flink_file(layout, "2026-11-25", "late-0", 20, 5)
    os.utime(late, (time.time() - 60, time.time() - 60))
    assert vacuum_table(layout, READINGS, grace=timedelta(0)).files_deleted == 0
    assert len(values(lake)) == 15
    # The clock comes back: retention goes on from the data, not from 2100.
    result = retain_table(layout, READINGS, keep_days=1, today=date(2026, 11, 25))
    assert (result.retained_from, result.files_removed) == (date(2026, 11, 25), 1)
    lake.close()


def test_retention_of_an_empty_table_does_not_move_retained_from(layout: DataLayout) -> None:
    retain_table(layout, READINGS, keep_days=1, today=date(2100, 1, 1))
    assert TableLog(layout, READINGS).current().retained_from is None
    flink_file(layout, "2026-11-25", "a-0", 0, 5)
    lake = Lake(layout)
    assert len(values(lake)) == 5
    lake.close()


def test_compaction_fsyncs_the_directory_of_its_output_before_the_log_commit(
    layout: DataLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        flink_file(layout, "2026-11-25", f"a-{i}", i * 10, 10)
    events: list[str] = []
    real_fsync_dir = compaction._fsync_dir
    real_commit = TableLog.commit

    def fsync_dir(path: Path) -> None:
        events.append(f"fsync {path.name}")
        real_fsync_dir(path)

    def commit(self: TableLog, base: object, operation: str, **changes: object) -> object:
        events.append(f"commit {operation}")
        return real_commit(self, base, operation, **changes)  # type: ignore[arg-type]

    monkeypatch.setattr(compaction, "_fsync_dir", fsync_dir)
    monkeypatch.setattr(compaction, "READER_SETTLE_S", 0.0)
    monkeypatch.setattr(TableLog, "commit", commit)
    result = compact_table(layout, READINGS, min_files=2)
    assert result.files_out == 1
    assert events == ["fsync date=2026-11-25", "commit compact"]
