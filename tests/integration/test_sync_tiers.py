"""Three tiers as real processes: two edges `citylake sync push` to a region's
`citylake sync serve`, the region `citylake sync push`es its lake on to the
centre's `citylake sync serve`, all over HTTPS with per-site keys on
127.0.0.1 ports. The centre's lake must be the union of the edges' (count,
distinct keys, sums, per site through DuckDB), each reading once also when
one edge pushes to the centre directly as well and the region pushes again;
and the centre refuses a region's data of a site `sync.regions` does not give it.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi.testclient import TestClient

from citylake.config import ServiceConfig
from citylake.lake import Lake
from citylake.schemas import DataLayout
from citylake.schemas import table as table_spec
from citylake.services.query.app import QuerySettings, create_app
from citylake_devstack import free_port
from citylake_devstack.process import CITYLAKE, ManagedProcess
from tests.selfsigned import make_server_certificate
from tests.synclake import CHECK_SQL, part_file

pytestmark = pytest.mark.integration

KEYS = {site: f"{site}-key-0123456789abcdef" for site in ("edge-a", "edge-b", "edge-c", "region-s")}
PER_SITE_SQL = (
    "SELECT site, count(*), count(DISTINCT ts), sum(value) FROM readings GROUP BY site ORDER BY site"
)


@dataclass(frozen=True)
class Receiver:
    url: str
    ca: Path
    layout: DataLayout


def _write(path: Path, site: str, layout: DataLayout, sync: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump({"site": site, "data_dir": str(layout.data_dir), "sync": sync}))
    return path


def _serve(workdir: Path, site: str, sync: dict[str, object]) -> Iterator[Receiver]:
    tls = make_server_certificate(workdir / "tls")
    port = free_port()
    layout = DataLayout(workdir / "var")
    sync = {
        "host": "127.0.0.1",
        "port": port,
        "tls_cert_file": str(tls.cert),
        "tls_key_file": str(tls.key),
    } | sync
    config = _write(workdir / f"{site}.yaml", site, layout, sync)
    process = ManagedProcess(f"sync-serve-{site}", [*CITYLAKE, "sync", "serve", "--config", str(config)],
                             workdir / "serve.log").start()  # fmt: skip
    found = Receiver(f"https://127.0.0.1:{port}", tls.ca, layout)

    def healthy() -> bool:
        try:
            context = ssl.create_default_context(cafile=str(tls.ca))
            return httpx.get(f"{found.url}/healthz", verify=context, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        process.wait_until(healthy, 60, "https /healthz")
        yield found
    finally:
        process.stop()


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    workdir = tmp_path_factory.mktemp("region")
    keys = {site: [KEYS[site]] for site in ("edge-a", "edge-b", "edge-c")}
    yield from _serve(workdir, "region-s", {"site_keys": keys})


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    workdir = tmp_path_factory.mktemp("centre")
    keys = {site: [KEYS[site]] for site in ("region-s", "edge-a")}
    # edge-c pushes to region-s, but the centre gives region-s only edge-a and edge-b.
    yield from _serve(workdir, "centre", {"site_keys": keys, "regions": {"region-s": ["edge-a", "edge-b"]}})


def pushes(workdir: Path, to: Receiver, *senders: tuple[str, DataLayout]) -> list[tuple[int, str]]:
    """`citylake sync push` once from each sender, all at the same time; each
    one's exit code and what it printed."""
    # Wide enough that the report's table keeps "edge-a 3, edge-b 3" on one line.
    env = {**os.environ, "COLUMNS": "220"}
    running = []
    for site, layout in senders:
        sync = {
            "region_url": to.url,
            "api_key": KEYS[site],
            "region_ca_file": str(to.ca),
            "retry_window_s": 5,
        }
        config = _write(workdir / f"push-{site}-{to.layout.data_dir.parent.name}.yaml", site, layout, sync)
        argv = [*CITYLAKE, "sync", "push", "--config", str(config), "--give-up-after", "60"]
        running.append(
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        )
    found = []
    for process in running:
        out, _ = process.communicate(timeout=120)
        found.append((process.returncode, out))
    return found


def push(workdir: Path, site: str, layout: DataLayout, to: Receiver) -> tuple[int, str]:
    (done,) = pushes(workdir, to, (site, layout))
    return done


def rows(layout: DataLayout, sql: str) -> list[tuple[object, ...]]:
    lake = Lake(layout)
    try:
        return [tuple(r) for r in lake.cursor().execute(sql).fetchall()]
    finally:
        lake.close()


def union(*layouts: DataLayout) -> tuple[list[tuple[object, ...]], tuple[object, ...]]:
    per_site = sorted(r for layout in layouts for r in rows(layout, PER_SITE_SQL))
    count = sum(int(str(r[1])) for r in per_site)
    total = sum(float(str(r[3])) for r in per_site)
    return per_site, (count, count, total, count)


def test_edge_region_centre_makes_the_union_with_each_reading_once(
    region: Receiver, centre: Receiver, tmp_path: Path
) -> None:
    a, b = DataLayout(tmp_path / "a"), DataLayout(tmp_path / "b")
    for i in range(3):
        part_file(a, 0, f"{i}", i * 100, 100, site="edge-a")
        part_file(b, i % 2, f"{i}", 10_000 + i * 100, 100, site="edge-b")
    for site, (code, said) in zip(
        ("edge-a", "edge-b"), pushes(tmp_path, region, ("edge-a", a), ("edge-b", b)), strict=True
    ):
        assert code == 0 and site in said, said
    per_site, totals = union(a, b)

    code, said = push(tmp_path, "region-s", region.layout, centre)
    assert code == 0 and "region-s" in said, said
    assert "edge-a 3, edge-b 3" in said, "the push names the sites whose files it ships"
    assert tuple(rows(centre.layout, CHECK_SQL)[0]) == totals
    assert rows(centre.layout, PER_SITE_SQL) == per_site

    # edge-a also pushes straight to the centre while the region pushes again
    # (a retry of the whole round): the centre still holds each reading once.
    for code, said in pushes(tmp_path, centre, ("edge-a", a), ("region-s", region.layout)):
        assert code == 0, said
    assert tuple(rows(centre.layout, CHECK_SQL)[0]) == totals
    assert rows(centre.layout, PER_SITE_SQL) == per_site


def test_the_centre_refuses_a_regions_data_of_a_site_not_its_own(
    region: Receiver, centre: Receiver, tmp_path: Path
) -> None:
    c = DataLayout(tmp_path / "c")
    part_file(c, 0, "0", 50_000, 100, site="edge-c")
    assert push(tmp_path, "edge-c", c, region)[0] == 0
    before = rows(centre.layout, PER_SITE_SQL)
    code, said = push(tmp_path, "region-s", region.layout, centre)
    assert code == 1 and "403" in said and "data of site 'edge-c'" in said, said
    assert rows(centre.layout, PER_SITE_SQL) == before, (
        "nothing of the refused commit is in the centre's lake"
    )


# --- the conflict rule and the sites' regions, at every tier ---------------------

CONFLICT_T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
CONFLICT_SQL = (
    "SELECT device_id, epoch_ms(ts) - epoch_ms(TIMESTAMPTZ '2026-11-20 08:00:00+00'), site, value "
    "FROM readings WHERE metric = 'flow' ORDER BY ALL"
)
DEVICE_SQL = "SELECT device_id, district, name FROM devices WHERE device_id = 'meter-moved'"


def flow_file(layout: DataLayout, name: str, site: str, rows: list[tuple[str, int, int, float]]) -> None:
    """Readings of metric flow as (device, ms after 08:00, ingest ms after 08:00, value)."""
    at = [CONFLICT_T0 + timedelta(milliseconds=ms) for _, ms, _, _ in rows]
    table = pa.table(
        {
            "device_id": [d for d, _, _, _ in rows],
            "ts": pa.array(at, pa.timestamp("ms", tz="UTC")),
            "metric": ["flow"] * len(rows),
            "value": [v for _, _, _, v in rows],
            "text": pa.array([None] * len(rows), pa.string()),
            "unit": ["m3/h"] * len(rows),
            "quality": pa.array([0] * len(rows), pa.uint8()),
            "source": ["mqtt"] * len(rows),
            "site": [site] * len(rows),
            "ingest_ts": pa.array(
                [CONFLICT_T0 + timedelta(milliseconds=i) for _, _, i, _ in rows], pa.timestamp("ms", tz="UTC")
            ),
        }
    )
    path = layout.lake(table_spec("readings")) / "date=2026-11-20" / f"part-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path.with_name(f".{path.name}.tmp"), compression="zstd")
    os.rename(path.with_name(f".{path.name}.tmp"), path)


def device_file(layout: DataLayout, name: str, district: str, last_seen_ms: int) -> None:
    """A devices row as the devices job writes it: what one site said of the meter."""
    spec = table_spec("devices")
    seen = CONFLICT_T0 + timedelta(milliseconds=last_seen_ms)
    row = dict.fromkeys(spec.schema.names) | {
        "device_id": "meter-moved", "district": district, "name": f"meter at {district}",
        "first_seen": seen, "last_seen": seen,
    }  # fmt: skip
    path = layout.lake(spec) / f"part-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([row], schema=spec.schema), path)


def test_conflicts_resolve_by_one_rule_at_every_tier_and_sites_carry_their_region(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The same reading key from two edges, a key replayed at one edge, a
    device that moved from edge-a to edge-b: the edges' lakes hold every copy,
    the region and the centre hold the same files, and every tier's views
    give the rule's one row per key (the later ingest_ts, then the larger
    site) and the moved device's later state. The centre's query service
    filters by site and region."""
    region_keys_ = {site: [KEYS[site]] for site in ("edge-a", "edge-b")}
    serving = contextlib.contextmanager(_serve)
    with (
        serving(tmp_path_factory.mktemp("region2"), "region-s", {"site_keys": region_keys_}) as region,
        serving(
            tmp_path_factory.mktemp("centre2"),
            "centre",
            {"site_keys": {"region-s": [KEYS["region-s"]]}, "regions": {"region-s": ["edge-a", "edge-b"]}},
        ) as centre,
    ):
        a, b = DataLayout(tmp_path / "a"), DataLayout(tmp_path / "b")
        # meter-moved at 0 s: heard by both edges, edge-b's copy ingested later.
        # meter-moved at 60 s: both edges at the same ingest time: the larger site, edge-b.
        # meter-a at 0 s: replayed at edge-a past the job's window: the replay's copy.
        flow_file(a, "0", "edge-a", [("meter-moved", 0, 100, 1.0), ("meter-moved", 60_000, 60_100, 2.0),
                                     ("meter-a", 0, 100, 5.0)])  # fmt: skip
        flow_file(a, "1", "edge-a", [("meter-a", 0, 3_600_000, 5.5)])
        flow_file(b, "0", "edge-b", [("meter-moved", 0, 200, 1.5), ("meter-moved", 60_000, 60_100, 0.5),
                                     ("meter-moved", 120_000, 120_100, 3.0)])  # fmt: skip
        device_file(a, "0", "north", 60_000)
        device_file(b, "0", "east", 120_000)
        expected = [
            ("meter-a", 0, "edge-a", 5.5),
            ("meter-moved", 0, "edge-b", 1.5),
            ("meter-moved", 60_000, "edge-b", 0.5),
            ("meter-moved", 120_000, "edge-b", 3.0),
        ]
        for code, said in pushes(tmp_path, region, ("edge-a", a), ("edge-b", b)):
            assert code == 0, said
        code, said = push(tmp_path, "region-s", region.layout, centre)
        assert code == 0, said

        # Each edge applies the rule to what it holds (edge-a: its replay).
        assert rows(a, CONFLICT_SQL) == [
            ("meter-a", 0, "edge-a", 5.5),
            ("meter-moved", 0, "edge-a", 1.0),
            ("meter-moved", 60_000, "edge-a", 2.0),
        ]
        raw = "SELECT count(*) FROM _raw_readings WHERE metric = 'flow'"
        for tier in (region.layout, centre.layout):
            assert rows(tier, raw) == [(7,)], "every copy reached the tier"
            assert rows(tier, CONFLICT_SQL) == expected
            assert rows(tier, DEVICE_SQL) == [("meter-moved", "east", "meter at east")]
        assert rows(region.layout, "SELECT site, region FROM sites ORDER BY site") == [
            ("edge-a", "region-s"), ("edge-b", "region-s"), ("region-s", "region-s"),
        ]  # fmt: skip
        assert rows(centre.layout, "SELECT site, region FROM sites ORDER BY site") == [
            ("edge-a", "region-s"), ("edge-b", "region-s"), ("region-s", "region-s"),
        ]  # fmt: skip

        with TestClient(create_app(QuerySettings(centre.layout.data_dir, ServiceConfig()))) as http:

            def latest(**params: str) -> list[tuple[str, str, str | None, float]]:
                answer = http.get("/v1/metrics/flow/latest", params=params)
                assert answer.status_code == 200, answer.text
                items = answer.json()["items"]
                return [(i["device_id"], i["site"], i["region"], i["value"]) for i in items]

            everywhere = [("meter-a", "edge-a", "region-s", 5.5), ("meter-moved", "edge-b", "region-s", 3.0)]
            assert latest() == everywhere
            assert latest(region="region-s") == everywhere
            assert latest(site="edge-a") == [("meter-a", "edge-a", "region-s", 5.5)]
            assert latest(region="region-x") == []
            assert http.get("/v1/metrics/flow/latest", params={"site": "Edge A"}).status_code == 422
