"""The landing collector beside real streaming jobs: small files land all the
time, the real ``readings`` and ``rollups`` jobs read them, ``citylake lake
gc-landing`` runs over and over and is killed -9 mid-run again and again, and
the ``readings`` job is killed -9 and restarted once. Landing stays far under
its bound, and the lake ends with every landed reading exactly once and every
closed rollup window exactly what the landed readings make."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from citylake.config import load_config
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake.manifest import TableLog
from citylake.schemas import DataLayout, table
from citylake_devstack import ManagedProcess
from citylake_devstack.process import CITYLAKE
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
T0 = 1_764_072_000_000
STEP_MS = 10_000  # event time runs 10 s per reading, so hourly windows close within the test
PER_FILE = 20
# Some 4 KiB a file, two files a second: landing holds about 110 KiB while
# the collector keeps up, and everything landed passes the bound within the
# 55 s of load below.
LANDING_BOUND = 224 * 1024


def reading(n: int) -> dict[str, Any]:
    return {
        "device_id": f"meter-{n % 13}", "ts": T0 + n * STEP_MS, "metric": "kwh", "value": float(n),
        "text": None, "unit": "kWh", "quality": 0, "source": "modbus", "site": "s", "ingest_ts": T0,
    }  # fmt: skip


def lake_rows(layout: DataLayout, name: str, columns: list[str]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for path in TableLog(layout, table(name)).snapshot().paths:
        t = pq.read_table(path, columns=columns)
        cols = [
            t.column(c).cast("int64").to_pylist() if c in ("ts", "window_start") else t.column(c).to_pylist()
            for c in columns
        ]
        out.extend(zip(*cols, strict=True))
    return out


def landing_usage(layout: DataLayout) -> int:
    total = 0
    for path in layout.landing_root.rglob("*.parquet"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


class Site:
    """Ingest landing a small file every 0.5 s; the collector run in a loop,
    every other run killed -9 at a random moment."""

    def __init__(self, layout: DataLayout, config: Path, logs: Path) -> None:
        self.layout, self.config, self.logs = layout, config, logs
        self.writer = LandingWriter(layout)
        self.stop_ingest = threading.Event()
        self.stop_collector = threading.Event()
        self.landed = 0
        self.landed_bytes = 0
        self.max_usage = 0
        self.track_usage = True
        self.kills = 0
        self.kills_that_removed = 0
        self.runs = 0
        self.failures: list[str] = []

    def ingest(self) -> None:
        while not self.stop_ingest.is_set():
            batcher = ColumnBatcher(table("readings"))
            for n in range(self.landed, self.landed + PER_FILE):
                batcher.append(reading(n))
            files = self.writer.write(table("readings"), batcher.take()[0])
            self.landed += PER_FILE
            self.landed_bytes += sum(f.bytes for f in files)
            if self.track_usage:
                self.max_usage = max(self.max_usage, landing_usage(self.layout))
            time.sleep(0.5)

    def collect(self) -> None:
        rng = random.Random(7)
        duration = 2.0  # of the last run left alone
        argv = [*CITYLAKE, "lake", "gc-landing", "--config", str(self.config)]
        while not self.stop_collector.is_set():
            log = (self.logs / f"gc-{self.runs}.log").open("w")
            before = set(self.layout.landing_root.rglob("*.parquet"))
            started = time.monotonic()
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            if self.runs % 4 == 1:
                # Killed at a random moment late in a run.
                self.kill(proc, before, rng.uniform(0.6, 1.0) * duration)
            elif self.runs % 4 == 3:
                # Killed the moment its first unlink shows, so the kill lands
                # among the unlinks however long this machine takes to start
                # Python and prove the files consumed.
                self.kill_at_first_unlink(proc, before, 3 * duration + 10)
            elif proc.wait(120) != 0:
                self.failures.append(f"gc-landing exited {proc.returncode}: see gc-{self.runs}.log")
            else:
                duration = time.monotonic() - started
            log.close()
            self.runs += 1

    def kill(self, proc: subprocess.Popen[bytes], before: set[Path], after_s: float) -> None:
        try:
            proc.wait(after_s)
        except subprocess.TimeoutExpired:
            self.kill_now(proc, before)

    def kill_at_first_unlink(self, proc: subprocess.Popen[bytes], before: set[Path], limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while proc.poll() is None and time.monotonic() < deadline:
            if any(not path.exists() for path in before):
                self.kill_now(proc, before)
                return
            time.sleep(0.002)
        if proc.poll() is None:
            self.kill_now(proc, before)

    def kill_now(self, proc: subprocess.Popen[bytes], before: set[Path]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.kills += 1
        # Ingest only adds files: any gone were removed by the killed run.
        gone = before - set(self.layout.landing_root.rglob("*.parquet"))
        self.kills_that_removed += bool(gone)


def expected_windows(landed: int, size_ms: int) -> dict[tuple[str, int], tuple[int, float]]:
    windows: dict[tuple[str, int], list[float]] = defaultdict(list)
    for n in range(landed):
        r = reading(n)
        ts = int(r["ts"])
        windows[(str(r["device_id"]), ts - ts % size_ms)].append(float(n))
    return {k: (len(v), sum(v)) for k, v in windows.items()}


def check_rollups(layout: DataLayout, name: str, landed: int, size_ms: int) -> int:
    rows = lake_rows(layout, name, ["device_id", "window_start", "count", "avg"])
    keys = Counter((str(d), int(w)) for d, w, _, _ in rows)
    doubled = [k for k, n in keys.items() if n > 1]
    assert not doubled, f"{name}: windows written twice, e.g. {doubled[:3]}"
    expected = expected_windows(landed, size_ms)
    for device, start, count, avg in rows:
        want = expected.get((str(device), int(start)))
        assert want is not None, f"{name}: a window no landed reading makes: {device} {start}"
        assert (count, round(float(avg) * count, 3)) == (want[0], round(want[1], 3)), (
            f"{name} {device} {start}: {count} readings, avg {avg}; landed {want}"
        )
    # Every window that closed well before the last reading is there.
    last_ts = T0 + (landed - 1) * STEP_MS
    closed = {k for k in expected if k[1] + 2 * size_ms + 99_000 < last_ts}
    missing = closed - set(keys)
    assert not missing, f"{name}: {len(missing)} closed windows missing, e.g. {sorted(missing)[:3]}"
    return len(rows)


def test_collector_killed_and_job_killed_lose_and_double_nothing_and_landing_stays_bounded(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = city_config(
        pipelines={
            "jobs": ["readings", "rollups"],
            "flink": {
                "parallelism": 1,
                "checkpoint_interval_s": 1,
                "monitor_interval_s": 0.5,
                # Flink's file source reads the files of one scan in no set
                # order; one file lands per scan and the lateness covers about
                # a file's event time, so a window missing is a reading lost.
                # (Flink refuses INTERVAL '100' SECOND and more: SECOND(2).)
                "allowed_lateness_s": 99,
            },
        },
        ingest={"landing_max_bytes": LANDING_BOUND},
        landing={"replay_window_h": 3 / 3600},
    )
    data_dir = load_config(config).config.data_dir
    layout = DataLayout(data_dir)
    site = Site(layout, config, tmp_path)
    argv = {name: [*CITYLAKE, "pipeline", "run", name, "--mode", "streaming", "--config", str(config)]
            for name in ("readings", "rollups")}  # fmt: skip
    jobs = {name: ManagedProcess(name, a, tmp_path / f"{name}.log").start() for name, a in argv.items()}
    threads = [threading.Thread(target=site.ingest), threading.Thread(target=site.collect)]
    try:
        # Both jobs up and committing before the clock of the bound starts:
        # a job starting (or restarting) lets landing grow, which is what
        # ingest's bound is there for.
        batcher = ColumnBatcher(table("readings"))
        for n in range(5 * PER_FILE):  # 1000 s of event time: rollups' first minutes close
            batcher.append(reading(n))
        site.writer.write(table("readings"), batcher.take()[0])
        site.landed = 5 * PER_FILE
        wait_for(lambda: len(lake_rows(layout, "readings", ["ts"])) > 0, 420, "first readings commit")
        wait_for(lambda: len(lake_rows(layout, "readings_1m", ["count"])) > 0, 420, "first rollups commit")
        for thread in threads:
            thread.start()
        time.sleep(40)
        site.track_usage = False
        jobs["readings"].signal(signal.SIGKILL)
        assert jobs["readings"].proc is not None
        jobs["readings"].proc.wait(10)
        jobs["readings"] = ManagedProcess("readings-2", argv["readings"], tmp_path / "readings-2.log").start()
        time.sleep(15)
        site.stop_ingest.set()
        threads[0].join(30)
        landed = site.landed
        wait_for(
            lambda: len(lake_rows(layout, "readings", ["ts"])) >= landed or not jobs["readings"].alive(),
            240,
            f"all {landed} landed readings in the lake",
        )
        time.sleep(5)  # collector runs after the last commit; a duplicate would show now
        site.stop_collector.set()
        threads[1].join(150)
        for name, job in jobs.items():
            assert job.alive(), f"{name}: {job.log_tail()}"
    finally:
        site.stop_ingest.set()
        site.stop_collector.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join(150)
        for job in jobs.values():
            job.stop()
    assert "resuming readings from checkpoint" in (tmp_path / "readings-2.log").read_text()
    assert not site.failures, site.failures[:3]
    got = Counter((str(d), int(t)) for d, t in lake_rows(layout, "readings", ["device_id", "ts"]))
    expected = Counter((str(reading(n)["device_id"]), int(reading(n)["ts"])) for n in range(landed))
    assert not expected - got, f"{sum((expected - got).values())} of {landed} landed readings not in the lake"
    assert not got - expected, f"{sum((got - expected).values())} readings in the lake twice or never landed"
    check_rollups(layout, "readings_1m", landed, 60_000)
    check_rollups(layout, "readings_1h", landed, 3_600_000)
    left = len(list(layout.landing_root.rglob("*.parquet")))
    files = landed // PER_FILE
    # The bound held while far more than it was landed...
    assert site.max_usage < LANDING_BOUND < site.landed_bytes, (site.max_usage, site.landed_bytes)
    # ...because the collector removed most files, some of them in runs killed mid-way.
    assert left < files / 3, f"{left} of {files} landing files left"
    assert site.kills >= 3 and site.kills_that_removed >= 1, (site.kills, site.kills_that_removed, site.runs)
