"""Rollups across sites (issue 16): files from before rollups carried ``site``
stay readable everywhere, and the aggregate route answers per site, region and
district without counting a window two sites rolled up twice."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from citylake.lake import Lake
from citylake.lake.catalog import all_views_sql
from citylake.lake.compaction import write_sorted
from citylake.lake.sites import write_site_regions
from citylake.schemas import DataLayout, table
from citylake.sync.upload_check import InvalidUpload, check_lake_file
from tests.lakedata import T0, device, write_lake_table
from tests.query_lake import client

# The rollup columns of schema version 2, before `site`.
OLD_SCHEMA = pa.schema(
    [
        (f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
        for f in table("readings_1h").schema
    ]
).remove(table("readings_1h").schema.get_field_index("site"))


def rollup(device_id: str, hour: int, count: int, avg: float, site: str | None = None) -> dict[str, object]:
    row: dict[str, object] = {
        "device_id": device_id, "metric": "pm25", "window_start": T0 + timedelta(hours=hour), "count": count,
        "min": avg - 1, "max": avg + 1, "avg": avg, "last": avg,
    }  # fmt: skip
    if site is not None:
        row["site"] = site
    return row


def write_old(data_dir: Path, name: str, rows: list[dict[str, object]]) -> Path:
    directory = DataLayout(data_dir).lake(table("readings_1h")) / f"date={T0.date().isoformat()}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    pq.write_table(pa.Table.from_pylist(rows, schema=OLD_SCHEMA), path)
    return path


def test_old_rollup_files_read_with_a_null_site_alone_and_beside_new_ones(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    old = write_old(tmp_path, "part-old", [rollup("air-1", 0, 6, 20.0), rollup("air-2", 0, 4, 10.0)])
    lake = Lake(layout)
    try:
        rows = lake.cursor().execute("SELECT device_id, site, count FROM readings_1h ORDER BY 1").fetchall()
        assert rows == [("air-1", None, 6), ("air-2", None, 4)], "no file has site yet: NULL, not an error"
    finally:
        lake.close()
    cli = duckdb.connect()
    cli.execute(all_views_sql(layout))  # the DuckDB CLI's live views
    assert cli.execute("SELECT count(*), count(site) FROM readings_1h").fetchone() == (2, 0)
    # A new file of edge-a restating air-1's hour: the rule keeps edge-a's row
    # (a null site lowest), air-2 stays the old file's.
    write_lake_table(tmp_path, "readings_1h", [rollup("air-1", 0, 6, 20.0, "edge-a")], name="part-new")
    lake = Lake(layout)
    try:
        rows = lake.cursor().execute("SELECT device_id, site, count FROM readings_1h ORDER BY 1").fetchall()
        assert rows == [("air-1", "edge-a", 6), ("air-2", None, 4)]
        assert lake.cursor().execute("SELECT count(*) FROM _raw_readings_1h").fetchone() == (3,)
    finally:
        lake.close()
    # Compaction of old files alone writes the current contract, site NULL.
    target = tmp_path / "compacted.parquet"
    write_sorted(table("readings_1h"), [str(old)], str(target))
    written = pq.read_table(target)
    assert "site" in written.column_names and written.column("site").null_count == 2
    # A site's old files still ship: no site column to hold them to.
    assert check_lake_file(old, table("readings_1h"), "edge-a") == 2


def test_a_new_rollup_file_of_another_site_is_refused_at_upload(tmp_path: Path) -> None:
    path = write_lake_table(tmp_path, "readings_1h", [rollup("air-1", 0, 6, 20.0, "edge-b")])[0]
    with pytest.raises(InvalidUpload, match="edge-b"):
        check_lake_file(path, table("readings_1h"), "edge-a")


URL = "/v1/metrics/pm25/aggregate"
RANGE = {"from": "2026-11-25T08:00:00Z", "to": "2026-11-25T10:00:00Z"}


@pytest.fixture
def centre(tmp_path: Path) -> Path:
    """A centre's lake: region-n has edge-a and edge-b, region-s edge-c.
    air-1 was heard by edge-a and edge-b (the same 6 readings, both rolled it
    up), air-2 by edge-b, air-3 by edge-c; air-3 is in district Gulou."""
    write_site_regions(
        DataLayout(tmp_path), {"edge-a": "region-n", "edge-b": "region-n", "edge-c": "region-s"}
    )
    write_lake_table(tmp_path, "readings_1h", [rollup("air-1", 0, 6, 20.0, "edge-a")], name="part-a")
    write_lake_table(
        tmp_path,
        "readings_1h",
        [rollup("air-1", 0, 6, 20.0, "edge-b"), rollup("air-2", 0, 4, 10.0, "edge-b")],
        name="part-b",
    )
    write_lake_table(tmp_path, "readings_1h", [rollup("air-3", 0, 10, 40.0, "edge-c")], name="part-c")
    write_lake_table(
        tmp_path, "devices", [device("air-3", district="Gulou"), device("air-1", district="Xuanwu")]
    )
    return tmp_path


def hour(http: object, **params: str) -> tuple[int, int] | None:
    response = http.get(URL, params={**RANGE, **params})  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    return (items[0]["devices"], items[0]["count"]) if items else None


def test_the_city_counts_a_window_two_sites_rolled_up_once_and_sites_add_up(centre: Path) -> None:
    with client(centre) as http:
        # 6 + 4 + 10 distinct readings, not 26.
        assert hour(http) == (3, 20)
        body = http.get(URL, params=RANGE).json()
        assert body["items"][0]["avg"] == pytest.approx((6 * 20 + 4 * 10 + 10 * 40) / 20)
        # air-1's hour belongs to edge-b (equal counts: the larger site name).
        assert hour(http, site="edge-b") == (2, 10)
        assert hour(http, site="edge-a") is None
        assert hour(http, site="edge-c") == (1, 10)
        assert hour(http, region="region-n") == (2, 10)
        assert hour(http, region="region-s") == (1, 10)
        assert hour(http, region="region-x") is None, "an unknown region is an empty list"
        assert hour(http, district="gulou") == (1, 10)
        assert hour(http, district="gulou", region="region-n") is None
        body = http.get(URL, params={**RANGE, "site": "edge-c", "region": "region-s"}).json()
        assert (body["site"], body["region"], body["district"]) == ("edge-c", "region-s", None)


@pytest.mark.parametrize(
    ("params", "name"),
    [({"site": "Edge A"}, "site"), ({"region": "x" * 70}, "region"), ({"district": "'; drop"}, "district")],
)
def test_bad_filters_are_422_naming_the_parameter(centre: Path, params: dict[str, str], name: str) -> None:
    with client(centre) as http:
        response = http.get(URL, params={**RANGE, **params})
    assert response.status_code == 422, response.text
    assert [d["loc"] for d in response.json()["detail"]] == [["query", name]]


def test_the_filters_are_in_the_openapi(centre: Path) -> None:
    with client(centre) as http:
        operation = http.get("/openapi.json").json()["paths"]["/v1/metrics/{metric}/aggregate"]["get"]
    documented = {p["name"]: p for p in operation["parameters"]}
    assert {"site", "region", "district"} <= set(documented)
    assert documented["site"]["schema"]["anyOf"][0]["pattern"]


def test_the_serving_store_answers_as_the_lake(centre: Path) -> None:
    asked = [{}, {"site": "edge-b"}, {"region": "region-n"}, {"region": "region-x"}]
    with client(centre) as stored, client(centre, serving_days=0) as lake:
        for params in asked:
            a = stored.get(URL, params={**RANGE, **params})
            b = lake.get(URL, params={**RANGE, **params})
            assert (a.headers["X-Served-From"], b.headers["X-Served-From"]) == ("store", "lake")
            assert a.json() == b.json()
