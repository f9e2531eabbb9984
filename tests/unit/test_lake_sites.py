"""The lake's `sites` view: each site's region from the receiving tier's
sync config, seen by every reader of the lake."""

from __future__ import annotations

from pathlib import Path

import duckdb

from citylake.lake import Lake
from citylake.lake.catalog import all_views_sql
from citylake.lake.sites import load_site_regions, site_regions, write_site_regions
from citylake.schemas import DataLayout


def test_the_centre_maps_each_regions_sites_and_a_region_its_own() -> None:
    centre = site_regions("centre", {"region-s": ["edge-a", "edge-b"], "region-n": ["edge-c"]}, ["x"])
    assert centre == {
        "region-s": "region-s", "edge-a": "region-s", "edge-b": "region-s",
        "region-n": "region-n", "edge-c": "region-n",
    }  # fmt: skip
    assert site_regions("region-s", {}, ["edge-a", "edge-b"]) == {
        "edge-a": "region-s", "edge-b": "region-s", "region-s": "region-s",
    }  # fmt: skip


def test_every_reader_sees_the_sites_view_and_its_changes(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    lake = Lake(layout)
    try:
        assert lake.cursor().execute("SELECT * FROM sites").fetchall() == [], "an edge knows no regions"
        write_site_regions(layout, {"edge-a": "region-s", "o'brien": "region-'q"})
        rows = lake.cursor().execute("SELECT site, region FROM sites ORDER BY site").fetchall()
        assert rows == [("edge-a", "region-s"), ("o'brien", "region-'q")]
    finally:
        lake.close()
    assert load_site_regions(layout) == {"edge-a": "region-s", "o'brien": "region-'q"}
    cli = duckdb.connect()
    cli.execute(all_views_sql(layout))  # what `citylake lake views` gives the DuckDB CLI
    assert cli.execute("SELECT count(*) FROM sites WHERE region = 'region-s'").fetchone() == (1,)
