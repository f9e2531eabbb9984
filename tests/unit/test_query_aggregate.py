"""City-wide hourly aggregates of a metric from readings_1h."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from tests.lakedata import T0, write_lake_table
from tests.query_lake import ARROW, client

URL = "/v1/metrics/pm25/aggregate"
FROM = "2026-11-25T08:00:00Z"
TO = "2026-11-25T10:00:00Z"


def rollup(
    device: str, metric: str, hour: int, count: int, low: float, high: float, avg: float
) -> dict[str, object]:
    return {
        "device_id": device,
        "metric": metric,
        "window_start": T0 + timedelta(hours=hour),
        "count": count,
        "min": low,
        "max": high,
        "avg": avg,
        "last": high,
    }


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    # T0 is 08:00Z. Hour 0: three devices with unequal counts; hour 1: one
    # device; hour 2 lies outside [FROM, TO); temp must not mix into pm25.
    write_lake_table(
        tmp_path,
        "readings_1h",
        [
            rollup("air-1", "pm25", 0, 60, 10.0, 30.0, 20.0),
            rollup("air-2", "pm25", 0, 30, 35.0, 50.0, 40.0),
            rollup("air-3", "pm25", 0, 10, 5.0, 15.0, 10.0),
            rollup("air-1", "temp", 0, 60, -5.0, 99.0, 50.0),
            rollup("air-1", "pm25", 1, 6, 7.0, 9.0, 8.0),
            rollup("air-1", "pm25", 2, 6, 1.0, 1.0, 1.0),
        ],
    )
    return tmp_path


def test_each_hour_is_the_mean_of_every_reading_weighted_by_counts(lake: Path) -> None:
    with client(lake) as http:
        body = http.get(URL, params={"from": FROM, "to": TO}).json()
    assert body["metric"] == "pm25"
    assert body["grain"] == "1h"
    first, second = body["items"]
    assert first["window_start"] == "2026-11-25T08:00:00.000Z"
    assert (first["devices"], first["count"], first["min"], first["max"]) == (3, 100, 5.0, 50.0)
    # (60 x 20 + 30 x 40 + 10 x 10) / 100, not the plain mean of the three averages (23.3).
    assert first["avg"] == pytest.approx(25.0)
    assert second == {
        "window_start": "2026-11-25T09:00:00.000Z",
        "devices": 1,
        "count": 6,
        "min": 7.0,
        "max": 9.0,
        "avg": 8.0,
    }


def test_range_is_half_open_and_hours_without_data_have_no_item(lake: Path) -> None:
    with client(lake) as http:
        one = http.get(URL, params={"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T10:00:00Z"}).json()
        assert [i["window_start"] for i in one["items"]] == ["2026-11-25T09:00:00.000Z"]
        # 17:00+08:00 is 09:00Z.
        shifted = http.get(
            URL, params={"from": "2026-11-25T17:00:00+08:00", "to": "2026-11-25T18:00:00+08:00"}
        )
        assert shifted.json()["items"] == one["items"]
        quiet = http.get(URL, params={"from": "2026-11-26T00:00:00Z", "to": "2026-11-26T05:00:00Z"})
        assert quiet.status_code == 200
        assert quiet.json()["items"] == []
        unknown = http.get("/v1/metrics/nope/aggregate", params={"from": FROM, "to": TO})
        assert unknown.status_code == 200
        assert unknown.json()["items"] == []


def test_aggregate_as_arrow(lake: Path) -> None:
    with client(lake) as http:
        response = http.get(URL, params={"from": FROM, "to": TO}, headers={"Accept": ARROW})
    assert response.headers["content-type"] == ARROW
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.column_names == ["window_start", "devices", "count", "min", "max", "avg"]
    assert table.schema.field("window_start").type == pa.timestamp("ms", tz="UTC")
    assert table.column("count").to_pylist() == [100, 6]


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"to": TO}, 422, "from"),
        ({"from": "2026-11-25T08:00:00", "to": TO}, 422, "no time zone"),
        ({"from": TO, "to": FROM}, 400, "must be after"),
        ({"from": "2000-01-01T00:00:00Z", "to": TO}, 400, "rollups_1h_max_range_days"),
    ],
)
def test_bad_ranges_say_what_is_wrong(
    lake: Path, params: dict[str, object], status: int, fragment: str
) -> None:
    with client(lake) as http:
        response = http.get(URL, params=params)
    assert response.status_code == status, response.text
    assert fragment in response.text


def test_the_route_is_documented_and_guarded(lake: Path) -> None:
    with client(lake, api_keys=["k"]) as http:
        assert http.get(URL, params={"from": FROM, "to": TO}).status_code == 401
        assert http.get(URL, params={"from": FROM, "to": TO}, headers={"X-API-Key": "k"}).status_code == 200
        paths = http.get("/openapi.json", headers={"X-API-Key": "k"}).json()["paths"]
    assert "/v1/metrics/{metric}/aggregate" in paths
