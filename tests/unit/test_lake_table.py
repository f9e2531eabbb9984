"""The lake's table log: compaction, retention and vacuum as readers see them."""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from citylake.cli import app
from citylake.lake import Lake
from citylake.lake.catalog import all_views_sql
from citylake.lake.compaction import compact_table, sort_keys
from citylake.lake.manifest import ConcurrentCommit, TableLog
from citylake.lake.retention import retain_table, vacuum_table
from citylake.lake.stats import table_stats
from citylake.schemas import DataLayout, table

READINGS = table("readings")
T0 = int(datetime(2026, 11, 24, 23, 0, tzinfo=UTC).timestamp() * 1000)


def flink_file(layout: DataLayout, day: str, name: str, first: int, n: int) -> Path:
    """A part file as Flink's sink commits it: written hidden, then renamed;
    naive INT64 millisecond timestamps, plain strings."""
    path = layout.lake(READINGS) / f"date={day}" / f"part-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = pa.table(
        {
            "device_id": [f"dev-{(first + i) % 3}" for i in range(n)],
            "ts": pa.array([T0 + (first + i) * 1000 for i in range(n)], pa.timestamp("ms")),
            "metric": ["level"] * n,
            "value": [float(first + i) for i in range(n)],
            "text": pa.array([None] * n, pa.string()),
            "unit": ["m"] * n,
            "quality": pa.array([0] * n, pa.int32()),
            "source": ["s"] * n,
            "site": ["x"] * n,
            "ingest_ts": pa.array([T0] * n, pa.timestamp("ms")),
        }
    )
    hidden = path.with_name(f".{path.name}.inprogress")
    pq.write_table(rows, hidden, compression="zstd")
    os.rename(hidden, path)
    return path


def values(lake: Lake) -> list[float]:
    return [v for (v,) in lake.cursor().execute("SELECT value FROM readings ORDER BY value").fetchall()]


@pytest.fixture
def layout(tmp_path: Path) -> DataLayout:
    return DataLayout(tmp_path / "data")


def test_compaction_keeps_every_row_once_sorted_zstd_with_schema_metadata(layout: DataLayout) -> None:
    for i in range(5):
        flink_file(layout, "2026-11-25", f"a-{i}", i * 10, 10)
    flink_file(layout, "2026-11-24", "b-0", 100, 4)
    lake = Lake(layout)
    before = values(lake)
    result = compact_table(layout, READINGS, min_files=2)
    assert (result.files_in, result.files_out, result.rows, result.partitions) == (5, 1, 50, 1)
    assert values(lake) == before == [float(v) for v in [*range(50), *range(100, 104)]]
    snap = lake.snapshot("readings")
    assert len(snap.files) == 2 and snap.manifest.version == 1
    merged = next(p for p in snap.paths if p.name.startswith("compacted-"))
    meta = pq.ParquetFile(merged)
    assert meta.metadata.row_group(0).column(0).compression == "ZSTD"
    assert meta.schema_arrow.metadata[b"citylake.table"] == b"readings"
    got = meta.read().to_pylist()
    keys = [tuple(r[k] for k in sort_keys(READINGS)) for r in got]
    assert keys == sorted(keys), "compacted rows are sorted by device, metric, time"
    # Old files stay on disk for queries planned before the commit.
    assert len(list((layout.lake(READINGS) / "date=2026-11-25").glob("part-*"))) == 5
    lake.close()


def test_compaction_is_idempotent_and_leaves_partitions_below_min_files(layout: DataLayout) -> None:
    for i in range(3):
        flink_file(layout, "2026-11-25", f"a-{i}", i * 10, 10)
    assert compact_table(layout, READINGS, min_files=4).files_in == 0
    assert compact_table(layout, READINGS, min_files=2).files_out == 1
    again = compact_table(layout, READINGS, min_files=2)
    assert (again.files_in, again.files_out) == (0, 0), "a repeated compaction adds nothing"
    flink_file(layout, "2026-11-25", "a-3", 30, 10)
    # The compacted file and the new part file merge again, replacing both.
    assert compact_table(layout, READINGS, min_files=2).files_in == 2
    lake = Lake(layout)
    assert values(lake) == [float(v) for v in range(40)]
    assert len(lake.snapshot("readings").files) == 1
    lake.close()


def test_two_writers_cannot_commit_the_same_version(layout: DataLayout) -> None:
    log = TableLog(layout, READINGS)
    base = log.current()
    log.commit(base, "compact")
    with pytest.raises(ConcurrentCommit, match="version 1 was committed by another writer"):
        log.commit(base, "compact")


def test_hidden_and_uncommitted_files_are_never_read(layout: DataLayout) -> None:
    flink_file(layout, "2026-11-25", "a-0", 0, 5)
    partition = layout.lake(READINGS) / "date=2026-11-25"
    (partition / ".part-x.inprogress").write_bytes(b"PAR1 half written")
    (partition / ".compacted-y.parquet.tmp").write_bytes(b"half")
    # A compacted file whose commit never happened (crash before the log write).
    pq.write_table(pq.read_table(partition / "part-a-0"), partition / "compacted-orphan.parquet")
    lake = Lake(layout)
    assert values(lake) == [0.0, 1.0, 2.0, 3.0, 4.0]
    old = time.time() - 3600
    for name in (".part-x.inprogress", ".compacted-y.parquet.tmp", "compacted-orphan.parquet"):
        os.utime(partition / name, (old, old))
    deleted = vacuum_table(layout, READINGS, grace=timedelta(minutes=10))
    assert deleted.files_deleted == 2  # leftovers only; Flink's in-progress file is Flink's
    assert sorted(p.name for p in partition.iterdir()) == [".part-x.inprogress", "part-a-0"]
    lake.close()


def test_retention_hides_old_partitions_at_once_and_vacuum_deletes_after_grace(layout: DataLayout) -> None:
    flink_file(layout, "2026-11-20", "old-0", 0, 5)
    flink_file(layout, "2026-11-24", "mid-0", 10, 5)
    flink_file(layout, "2026-11-25", "new-0", 20, 5)
    lake = Lake(layout)
    result = retain_table(layout, READINGS, keep_days=2, today=date(2026, 11, 25))
    assert (result.retained_from, result.files_removed) == (date(2026, 11, 24), 1)
    assert values(lake) == [float(v) for v in [*range(10, 15), *range(20, 25)]]
    # A late Flink file in a retired partition stays invisible.
    flink_file(layout, "2026-11-19", "late-0", 50, 5)
    assert min(values(lake)) == 10.0
    assert vacuum_table(layout, READINGS, grace=timedelta(minutes=10)).files_deleted == 0
    assert (layout.lake(READINGS) / "date=2026-11-20" / "part-old-0").exists()
    late = layout.lake(READINGS) / "date=2026-11-19" / "part-late-0"
    os.utime(late, (time.time() - 60, time.time() - 60))
    assert vacuum_table(layout, READINGS, grace=timedelta(0)).files_deleted == 2
    assert not (layout.lake(READINGS) / "date=2026-11-20").exists() and not late.exists()
    assert retain_table(layout, READINGS, keep_days=3, today=date(2026, 11, 25)).files_removed == 0
    lake.close()


def test_retention_refuses_undated_tables_and_zero_days(layout: DataLayout) -> None:
    with pytest.raises(ValueError, match="'devices' has no date partitions"):
        retain_table(layout, table("devices"), keep_days=3)
    with pytest.raises(ValueError, match="keep_days must be at least 1"):
        retain_table(layout, READINGS, keep_days=0)


def test_views_follow_new_flink_commits_and_pyarrow_reads_the_same_snapshot(layout: DataLayout) -> None:
    lake = Lake(layout)
    assert values(lake) == []
    flink_file(layout, "2026-11-25", "a-0", 0, 3)
    assert values(lake) == [0.0, 1.0, 2.0]
    flink_file(layout, "2026-11-25", "a-1", 3, 3)
    flink_file(layout, "2026-11-26", "a-2", 6, 3)
    assert len(values(lake)) == 9
    compact_table(layout, READINGS, min_files=2)
    snap = lake.snapshot("readings")
    files = [pq.read_table(p, partitioning=None) for p in snap.paths]
    assert sum(f.num_rows for f in files) == 9
    assert files[0].schema.field("ts").type == pa.timestamp("us", tz="UTC"), "compacted: UTC instants"
    lake.close()


def test_stats_report_the_snapshot(layout: DataLayout) -> None:
    for i in range(4):
        flink_file(layout, "2026-11-25", f"a-{i}", i * 5, 5)
    compact_table(layout, READINGS, min_files=2)
    stats = {s.table: s for s in table_stats(layout)}
    readings = stats["readings"]
    assert (readings.version, readings.files, readings.rows) == (1, 1, 20)
    assert readings.first == datetime.fromtimestamp(T0 / 1000, UTC)
    assert readings.last == datetime.fromtimestamp((T0 + 19_000) / 1000, UTC)
    assert stats["alerts"].files == 0 and stats["alerts"].first is None


def test_views_sql_opens_in_a_plain_duckdb(layout: DataLayout) -> None:
    import duckdb

    flink_file(layout, "2026-11-25", "a-0", 0, 4)
    conn = duckdb.connect()
    conn.execute(all_views_sql(layout))
    assert conn.execute("SELECT count(*) FROM readings").fetchone() == (4,)
    assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (0,)


def test_lake_commands(layout: DataLayout, tmp_path: Path) -> None:
    config = tmp_path / "city.yaml"
    config.write_text(f"site: x\ndata_dir: {layout.data_dir}\nlake:\n  retention_days: {{readings: 1}}\n")
    for i in range(4):
        flink_file(layout, "2026-11-25", f"a-{i}", i * 5, 5)
    runner = CliRunner()
    done = runner.invoke(app, ["lake", "compact", "-c", str(config), "--min-files", "2", "-t", "readings"])
    assert done.exit_code == 0, done.output
    assert "readings" in done.output and "4" in done.output
    done = runner.invoke(app, ["lake", "stats", "-c", str(config)])
    assert done.exit_code == 0 and "20" in done.output, done.output
    done = runner.invoke(app, ["lake", "compact", "-c", str(config), "-t", "nonsense"])
    assert done.exit_code != 0 and "unknown table nonsense" in done.output
    done = runner.invoke(app, ["lake", "retain", "-c", str(config), "-t", "devices", "--days", "2"])
    assert done.exit_code != 0 and "no date partitions" in done.output
    done = runner.invoke(app, ["lake", "retain", "-c", str(config)])
    assert done.exit_code == 0 and "readings" in done.output, done.output
    done = runner.invoke(app, ["lake", "views", "-c", str(config)])
    assert done.exit_code == 0 and 'CREATE OR REPLACE VIEW "readings"' in done.output
