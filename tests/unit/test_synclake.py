"""The test bench's edge part files: what the sync tests and benches count on."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from citylake.lake import Lake
from citylake.schemas import DataLayout
from tests.synclake import CHECK_SQL, expected_check, part_file


def test_part_files_number_each_reading_once_over_the_devices_asked(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path / "edge")
    first = part_file(layout, 0, "a", 0, 30, site="edge-x", devices=7)
    part_file(layout, 1, "b", 30, 20, site="edge-x", devices=7)
    rows = pq.read_table(first)
    assert rows.num_rows == 30 and len(set(rows["device_id"].to_pylist())) == 7
    assert first.parent.name == "date=2026-11-20" and not list(first.parent.glob(".*"))
    lake = Lake(layout)
    try:
        assert lake.cursor().execute(CHECK_SQL).fetchone() == expected_check(50)
    finally:
        lake.close()


@pytest.mark.parametrize(("n", "devices", "first"), [(0, 1, 0), (1, 0, 0), (1, 1, -1)])
def test_part_file_refuses_an_empty_or_negative_range(
    tmp_path: Path, n: int, devices: int, first: int
) -> None:
    with pytest.raises(ValueError, match="part_file"):
        part_file(DataLayout(tmp_path), 0, "x", first, n, devices=devices)
