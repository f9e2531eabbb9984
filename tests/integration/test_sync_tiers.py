"""Three tiers as real processes: two edges `citylake sync push` to a region's
`citylake sync serve`, the region `citylake sync push`es its lake on to the
centre's `citylake sync serve`, all over HTTPS with per-site keys on
127.0.0.1 ports. The centre's lake must be the union of the edges' (count,
distinct keys, sums, per site through DuckDB), each reading once also when
one edge pushes to the centre directly as well and the region pushes again;
and the centre refuses a region's data of a site `sync.regions` does not give it.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from citylake.lake import Lake
from citylake.schemas import DataLayout
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
