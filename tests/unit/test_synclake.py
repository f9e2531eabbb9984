"""The test bench's edge part files: what the sync tests and benches count on."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from citylake.lake import Lake
from citylake.schemas import DataLayout
from citylake_devstack.synclake import SITE_COUNTS_SQL, ReadingNumbers, edge_sites, range_check
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


def test_edges_of_one_region_number_their_readings_apart_so_the_union_is_each_once(tmp_path: Path) -> None:
    numbers = ReadingNumbers()
    sites = edge_sites(3)
    assert sites == ["edge-north", "edge-2", "edge-3"]
    union = DataLayout(tmp_path / "region")
    ranges: dict[str, list[tuple[int, int]]] = {site: [] for site in sites}

    def write(site: str) -> None:
        for i in range(4):
            first = numbers.take(25)
            ranges[site].append((first, 25))
            part_file(DataLayout(tmp_path / site), 0, f"{i}", first, 25, site=site)
            part_file(union, 0, f"{site}-{i}", first, 25, site=site)

    threads = [threading.Thread(target=write, args=(site,)) for site in sites]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert numbers.taken == 300
    for site in sites:  # each edge's lake: its own readings, each once
        lake = Lake(DataLayout(tmp_path / site))
        try:
            assert lake.cursor().execute(CHECK_SQL).fetchone() == range_check(ranges[site])
        finally:
            lake.close()
    lake = Lake(union)  # the region's: all of them, none merged by the conflict rule
    try:
        assert lake.cursor().execute(CHECK_SQL).fetchone() == expected_check(300)
        assert lake.cursor().execute(SITE_COUNTS_SQL).fetchall() == [
            ("edge-2", 100),
            ("edge-3", 100),
            ("edge-north", 100),
        ]
    finally:
        lake.close()


def test_range_check_is_expected_check_of_one_range_from_zero() -> None:
    assert range_check([(0, 10)]) == expected_check(10)
    assert range_check([(0, 4), (4, 6)]) == expected_check(10)
    assert range_check([(10, 2), (3, 1)]) == (3, 3, 24.0, 3)


def test_numbering_and_edge_names_refuse_nothing_to_number() -> None:
    with pytest.raises(ValueError, match="edge_sites"):
        edge_sites(0)
    with pytest.raises(ValueError, match=r"ReadingNumbers\.take"):
        ReadingNumbers().take(0)
