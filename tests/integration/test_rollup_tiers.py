"""Rollups across the three tiers (issue 16), from the real producers: two
edges' real Flink jobs (readings and rollups, one batch run each) over the
readings their ingest landed, shipped by `citylake sync push` to a region's
`citylake sync serve` and on to the centre's. A device both edges heard and
readings only one heard count once in the centre's readings_1m, readings_1h
and the aggregate route: the union's distinct readings, not the sum of the
edges' rollups. A device that moved sites mid-window keeps, in that window,
the row of the site that saw more of it (lake/README.md, "Conflict rule"),
while the centre's readings view keeps every one of its readings."""

from __future__ import annotations

import contextlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from citylake.config import CityConfig, FlinkConfig, PipelinesConfig, ServiceConfig, SourceConfig
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.pipelines import runner
from citylake.pipelines.jobs import JobSet
from citylake.schemas import DataLayout, table
from citylake.services.query.app import QuerySettings, create_app
from tests.integration.test_sync_tiers import KEYS, _serve, push, pushes, rows

pytestmark = pytest.mark.integration

METRIC = "pm25_tiers"
# Two hours back, on a minute boundary: every window is closed and inside any retention.
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
BASE_MS = int((NOW - timedelta(hours=2)).timestamp() * 1000)
MINUTE_MS = 60_000


def reading(site: str, device: str, offset_s: int, value: float) -> dict[str, object]:
    ts = BASE_MS + offset_s * 1000
    return {
        "device_id": device, "ts": ts, "metric": METRIC, "value": value, "text": None, "unit": "ug/m3",
        "quality": 0, "source": "sensors", "site": site, "ingest_ts": ts + 500,
    }  # fmt: skip


def edge_readings(site: str) -> list[dict[str, object]]:
    """air-both: the same 6 readings of minute 0 at both edges (two gateways
    heard it). air-b: only edge-b. air-moved: edge-a's 4 readings of minute 0,
    then moved to edge-b, which has its last 2 of minute 0 and 3 of minute 1."""
    both = [reading(site, "air-both", s, 10.0 + s) for s in range(0, 60, 10)]
    if site == "edge-a":
        return both + [reading(site, "air-moved", s, 100.0 + s) for s in (0, 10, 20, 30)]
    only_b = [reading(site, "air-b", s, 20.0 + s) for s in range(0, 60, 10)]
    moved = [reading(site, "air-moved", s, 100.0 + s) for s in (40, 50, 60, 70, 80)]
    return both + only_b + moved


def produce(layout: DataLayout, site: str) -> None:
    """What an edge does: ingest lands the readings, its Flink jobs (readings
    and rollups, one batch Flink job) write the lake."""
    batcher = ColumnBatcher(table("readings"))
    for row in edge_readings(site):
        batcher.append(row)
    batch, bad = batcher.take()
    assert not bad, bad
    LandingWriter(layout).commit([(table("readings"), batch)])
    config = CityConfig(
        site=site,
        data_dir=layout.data_dir,
        sources=[SourceConfig(name="sensors", type="mqtt", url="mqtt://127.0.0.1:1883")],
        pipelines=PipelinesConfig(flink=FlinkConfig(allowed_lateness_s=60)),
    )
    runner.start(config, JobSet(("readings", "rollups")), "batch").wait()


ROLLUP_SQL = (
    "SELECT device_id, (epoch_ms(window_start) - {base}) // 1000 AS at_s, site, count FROM {table} "
    f"WHERE metric = '{METRIC}' ORDER BY 1, 2"
)


def rollups(layout: DataLayout, name: str) -> list[tuple[object, ...]]:
    return rows(layout, ROLLUP_SQL.format(base=BASE_MS, table=name))


def test_the_centre_counts_each_reading_of_two_edges_rollups_once(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    a, b = DataLayout(tmp_path / "a"), DataLayout(tmp_path / "b")
    produce(a, "edge-a")
    produce(b, "edge-b")
    # The edges' own rollups: each of its own readings (air-both rolled up at both).
    assert rollups(a, "readings_1m") == [("air-both", 0, "edge-a", 6), ("air-moved", 0, "edge-a", 4)]
    assert rollups(b, "readings_1m") == [
        ("air-b", 0, "edge-b", 6), ("air-both", 0, "edge-b", 6),
        ("air-moved", 0, "edge-b", 2), ("air-moved", 60, "edge-b", 3),
    ]  # fmt: skip

    serving = contextlib.contextmanager(_serve)
    with (
        serving(
            tmp_path_factory.mktemp("region"),
            "region-s",
            {"site_keys": {s: [KEYS[s]] for s in ("edge-a", "edge-b")}},
        ) as region,  # fmt: skip
        serving(
            tmp_path_factory.mktemp("centre"),
            "centre",
            {"site_keys": {"region-s": [KEYS["region-s"]]}, "regions": {"region-s": ["edge-a", "edge-b"]}},
        ) as centre,
    ):
        for code, said in pushes(tmp_path, region, ("edge-a", a), ("edge-b", b)):
            assert code == 0, said
        code, said = push(tmp_path, "region-s", region.layout, centre)
        assert code == 0, said

        # The union's distinct readings, by (device, minute) and by (device, hour).
        distinct = {(r["device_id"], r["ts"]) for s in ("edge-a", "edge-b") for r in edge_readings(s)}
        per_minute = Counter((d, (int(str(ts)) - BASE_MS) // MINUTE_MS * 60) for d, ts in distinct)
        assert sum(per_minute.values()) == 6 + 6 + 9
        raw = f"SELECT count(*) FROM _raw_readings_1m WHERE metric = '{METRIC}'"
        for tier in (region.layout, centre.layout):
            assert rows(tier, raw) == [(6,)], "every edge's rollup row reached the tier"
            assert rows(tier, f"SELECT count(*) FROM readings WHERE metric = '{METRIC}'") == [(21,)]
            got = rollups(tier, "readings_1m")
            assert got == [
                ("air-b", 0, "edge-b", 6),
                ("air-both", 0, "edge-b", 6),  # equal counts: the larger site name
                ("air-moved", 0, "edge-a", 4),  # moved mid-minute: the site that saw more of it
                ("air-moved", 60, "edge-b", 3),
            ]
            for device, at_s, _, count in got:
                if device != "air-moved" or at_s != 0:
                    assert count == per_minute[(device, int(str(at_s)))], (
                        "a duplicated window counts its readings once"
                    )
            # The hour: air-moved's edge-b row (5 readings) against edge-a's (4).
            assert rollups(tier, "readings_1h") == [
                ("air-b", 0, "edge-b", 6), ("air-both", 0, "edge-b", 6), ("air-moved", 0, "edge-b", 5),
            ]  # fmt: skip

        start = datetime.fromtimestamp(BASE_MS / 1000, UTC)
        params = {"from": start.isoformat(), "to": (start + timedelta(hours=1)).isoformat()}
        with TestClient(create_app(QuerySettings(centre.layout.data_dir, ServiceConfig()))) as http:

            def hour(**filters: str) -> tuple[int, int] | None:
                answer = http.get(f"/v1/metrics/{METRIC}/aggregate", params={**params, **filters})
                assert answer.status_code == 200, answer.text
                items = answer.json()["items"]
                return (items[0]["devices"], items[0]["count"]) if items else None

            # 6 + 6 + 5: air-both once, not 6 + 6 + 6 + 4 + 5 summed over the edges' rows.
            assert hour() == (3, 17)
            assert hour(region="region-s") == (3, 17)
            assert hour(site="edge-b") == (3, 17)
            assert hour(site="edge-a") is None
            assert hour(region="region-x") is None
