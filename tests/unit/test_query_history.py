"""Readings and rollups of a device over a time range: ranges, paging, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pytest

from tests.query_lake import ARROW, MINUTES, build_lake, client

FROM = "2026-11-25T08:00:00Z"
TO = "2026-11-25T09:00:00Z"


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    build_lake(tmp_path)
    return tmp_path


def test_readings_in_range_are_ordered_and_half_open(lake: Path) -> None:
    with client(lake) as http:
        body = http.get(
            "/v1/devices/air-1/readings",
            params={"from": "2026-11-25T08:02:00Z", "to": "2026-11-25T08:04:00Z"},
        ).json()
        assert [(r["ts"], r["metric"]) for r in body["items"]] == [
            ("2026-11-25T08:02:00.000Z", "pm25"),
            ("2026-11-25T08:02:00.000Z", "temp"),
            ("2026-11-25T08:03:00.000Z", "pm25"),
            ("2026-11-25T08:03:00.000Z", "temp"),
        ]
        assert body["next_cursor"] is None
        # Offsets are instants too: 16:02+08:00 is 08:02Z.
        shifted = http.get(
            "/v1/devices/air-1/readings",
            params={"from": "2026-11-25T16:02:00+08:00", "to": "2026-11-25T16:04:00+08:00", "metric": "temp"},
        ).json()
        assert [r["value"] for r in shifted["items"]] == [20.2, 20.3]


def test_readings_page_through_every_row_exactly_once(lake: Path) -> None:
    with client(lake) as http:
        everything = http.get("/v1/devices/air-2/readings", params={"from": FROM, "to": TO}).json()["items"]
        assert len(everything) == 2 * MINUTES
        collected = []
        params: dict[str, object] = {"from": FROM, "to": TO, "limit": 3}
        while True:
            body = http.get("/v1/devices/air-2/readings", params=params).json()
            assert len(body["items"]) <= 3
            collected += body["items"]
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
        assert collected == everything


def test_readings_as_arrow(lake: Path) -> None:
    with client(lake) as http:
        response = http.get(
            "/v1/devices/air-1/readings",
            params={"from": FROM, "to": TO, "limit": 5},
            headers={"Accept": f"application/json;q=0.5, {ARROW}"},
        )
        assert response.headers["content-type"] == ARROW
        assert response.headers["vary"] == "Accept"
        table = pa.ipc.open_stream(response.content).read_all()
        assert table.num_rows == 5
        assert table.column_names == ["ts", "metric", "value", "text", "unit", "quality"]
        assert "X-Next-Cursor" in response.headers


def test_unknown_device_is_404_and_a_quiet_range_is_empty(lake: Path) -> None:
    with client(lake) as http:
        missing = http.get("/v1/devices/nope/readings", params={"from": FROM, "to": TO})
        assert missing.status_code == 404
        assert "nope" in missing.json()["detail"]
        quiet = http.get(
            "/v1/devices/air-1/readings",
            params={"from": "2026-11-26T00:00:00Z", "to": "2026-11-26T01:00:00Z"},
        )
        assert quiet.status_code == 200
        assert quiet.json()["items"] == []
        assert http.get("/v1/devices/nope/rollups/1m", params={"from": FROM, "to": TO}).status_code == 404


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"to": TO}, 422, "from"),
        ({"from": FROM}, 422, "to"),
        ({"from": "2026-11-25T08:00:00", "to": TO}, 422, "no time zone"),
        ({"from": "2026-11-25", "to": TO}, 422, "no time zone"),
        ({"from": "yesterday", "to": TO}, 422, "not an ISO 8601 instant"),
        ({"from": "1764057600", "to": TO}, 422, "not an ISO 8601 instant"),
        ({"from": "2026-13-45T08:00:00Z", "to": TO}, 422, "not an ISO 8601 instant"),
        ({"from": "0001-01-01T00:00:00+01:00", "to": TO}, 422, "out of the range"),
        ({"from": TO, "to": FROM}, 400, "must be after"),
        ({"from": FROM, "to": FROM}, 400, "must be after"),
        ({"from": "2026-01-01T00:00:00Z", "to": TO}, 400, "longer than 31 days"),
        ({"from": FROM, "to": TO, "limit": 10_001}, 422, "limit"),
        ({"from": FROM, "to": TO, "limit": 0}, 422, "limit"),
        ({"from": FROM, "to": TO, "limit": 10**30}, 422, "limit"),
        ({"from": FROM, "to": TO, "metric": ""}, 422, "metric"),
    ],
)
def test_bad_ranges_and_limits_say_what_is_wrong(
    lake: Path, params: dict[str, object], status: int, fragment: str
) -> None:
    with client(lake) as http:
        response = http.get("/v1/devices/air-1/readings", params=params)
        assert response.status_code == status, response.text
        assert fragment in response.text


def test_range_limit_is_named(lake: Path) -> None:
    with client(lake, readings_max_range_days=0.01) as http:
        body = http.get("/v1/devices/air-1/readings", params={"from": FROM, "to": TO}).json()
        assert body["limit"] == "readings_max_range_days"


def test_bad_cursor_tokens_are_400(lake: Path) -> None:
    url = "/v1/devices/air-1/readings"
    with client(lake) as http:
        token = http.get(url, params={"from": FROM, "to": TO, "limit": 2}).json()["next_cursor"]
        payload, mac = token.split(".")
        flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
        for bad in ["", "x", "a.b", "a.b.c", f"{flipped}.{mac}", f"{payload}.{mac[:-1]}", "☃.☃", "=" * 40]:
            response = http.get(url, params={"from": FROM, "to": TO, "limit": 2, "cursor": bad})
            assert response.status_code in (400, 422), bad  # "" is 422 (empty), the rest 400
            assert response.status_code != 500
        elsewhere = http.get(
            url, params={"from": FROM, "to": "2026-11-25T10:00:00Z", "limit": 2, "cursor": token}
        )
        assert elsewhere.status_code == 400
        assert "different query" in elsewhere.json()["detail"]
        too_long = http.get(url, params={"from": FROM, "to": TO, "cursor": "x" * 5000})
        assert too_long.status_code == 422


def test_rollups_by_grain(lake: Path) -> None:
    with client(lake) as http:
        body = http.get(
            "/v1/devices/air-1/rollups/1m", params={"from": FROM, "to": TO, "metric": "temp", "limit": 4}
        ).json()
        assert body["grain"] == "1m"
        assert [r["window_start"] for r in body["items"]] == [f"2026-11-25T08:0{m}:00.000Z" for m in range(4)]
        assert body["items"][0] == {
            "window_start": "2026-11-25T08:00:00.000Z",
            "metric": "temp",
            "count": 1,
            "min": 0.0,
            "max": 0.0,
            "avg": 0.0,
            "last": 0.0,
        }
        rest = http.get(
            "/v1/devices/air-1/rollups/1m",
            params={"from": FROM, "to": TO, "metric": "temp", "limit": 100, "cursor": body["next_cursor"]},
        ).json()
        assert len(rest["items"]) == MINUTES - 4
        assert rest["next_cursor"] is None
        hourly = http.get("/v1/devices/air-1/rollups/1h", params={"from": FROM, "to": TO})
        assert hourly.status_code == 200
        assert hourly.json()["items"] == []
        assert http.get("/v1/devices/air-1/rollups/5m", params={"from": FROM, "to": TO}).status_code == 422


def test_rollup_ranges_are_limited_per_grain(lake: Path) -> None:
    year = {"from": "2025-11-25T00:00:00Z", "to": "2026-11-25T00:00:00Z"}
    with client(lake) as http:
        minute = http.get("/v1/devices/air-1/rollups/1m", params=year)
        assert minute.status_code == 400
        assert minute.json()["limit"] == "rollups_1m_max_range_days"
        assert http.get("/v1/devices/air-1/rollups/1h", params=year).status_code == 200


def test_a_slow_lake_query_is_cancelled_with_408(lake: Path) -> None:
    with client(lake, query_timeout_s=0.000001) as http:
        response = http.get("/v1/devices/air-1/readings", params={"from": FROM, "to": TO})
        # The timer can lose the race to a query this small; it must never be a 500.
        assert response.status_code in (200, 408)
        if response.status_code == 408:
            assert response.json()["limit"] == "query_timeout_s"


def test_an_unreadable_lake_file_is_503_with_the_reason(lake: Path) -> None:
    with client(lake) as http:
        damaged = lake / "lake" / "readings" / "date=2026-11-25" / "part-damaged"
        damaged.write_bytes(b"not parquet at all")
        time.sleep(0.3)  # the lake trusts directory times only once they settle
        response = http.get("/v1/devices/air-1/readings", params={"from": FROM, "to": TO})
        assert response.status_code == 503, response.text
        assert "the lake cannot be read now" in response.json()["detail"]
        assert "part-damaged" in response.json()["detail"]
        time.sleep(0.3)  # views follow the lake at most every SERVICE_REFRESH_S
        assert http.post("/v1/sql", json={"sql": "SELECT 1"}).status_code == 503
        damaged.unlink()
        time.sleep(0.3)
        assert http.get("/v1/devices/air-1/readings", params={"from": FROM, "to": TO}).status_code == 200


def test_a_damaged_lake_at_start_does_not_stop_the_service(lake: Path) -> None:
    damaged = lake / "lake" / "readings" / "date=2026-11-25" / "part-damaged"
    damaged.write_bytes(b"PAR1 and then nothing")
    with client(lake) as http:
        health = http.get("/healthz")
        assert health.status_code == 503
        assert "part-damaged" in health.json()["checks"]["lake"]
        assert http.get("/v1/devices/air-1/latest").status_code == 503
        damaged.unlink()
        time.sleep(0.3)
        assert http.get("/healthz").status_code == 200
        assert http.get("/v1/devices/air-1/latest").status_code == 200
        assert http.post("/v1/sql", json={"sql": "SELECT * FROM read_csv('/etc/passwd')"}).status_code == 400
        status = http.post("/v1/sql", json={"sql": "SELECT * FROM read_parquet('/etc/passwd')"})
        assert "disabled by configuration" in status.json()["detail"]  # locked on the late open too
