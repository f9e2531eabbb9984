"""kill -9 of a running streaming job (its Python driver and Flink's JVM)
while ingest keeps landing: restarted, it resumes from the last checkpoint,
and the lake ends with every landed reading exactly once."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from citylake.config import load_config
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.schemas import DataLayout, table
from citylake_devstack import ManagedProcess
from citylake_devstack.process import CITYLAKE

pytestmark = pytest.mark.integration
T0 = 1_764_072_000_000


def lake_keys(data_dir: Path) -> Counter[tuple[str, int]]:
    files = [str(p) for p in (data_dir / "lake" / "readings").rglob("part-*")]
    if not files:
        return Counter()
    rows = ds.dataset(files, format="parquet").to_table(columns=["device_id", "ts"])
    ts = rows.column("ts").cast("int64").to_pylist()
    return Counter(zip(rows.column("device_id").to_pylist(), ts, strict=True))


def meter_reading(device: str, ts: int, n: int) -> dict[str, object]:
    return {
        "device_id": device, "ts": ts, "metric": "kwh", "value": float(n), "text": None, "unit": "kWh",
        "quality": 0, "source": "modbus", "site": "s", "ingest_ts": T0,
    }  # fmt: skip


def crash_twice_then_run(argv: list[str], data_dir: Path, logs: Path) -> ManagedProcess:
    """Start the job, kill -9 it at a random moment after it has committed to
    the lake, twice; the third start is left running."""
    rng = random.Random(11)
    for attempt in range(2):
        job = ManagedProcess(f"job-{attempt}", argv, logs / f"job-{attempt}.log").start()
        # Up long enough to checkpoint (every 1 s) and commit lake files.
        job.wait_until(lambda: sum(lake_keys(data_dir).values()) > 0, 90, "first lake commit")
        time.sleep(rng.uniform(2.0, 5.0))
        job.signal(signal.SIGKILL)
        assert job.proc is not None
        job.proc.wait(10)
    return ManagedProcess("job-2", argv, logs / "job-2.log").start()


def test_streaming_job_killed_and_restarted_loses_and_doubles_nothing(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = city_config()
    data_dir = load_config(config).config.data_dir
    writer = LandingWriter(DataLayout(data_dir))
    landed: list[tuple[str, int]] = []
    stop = threading.Event()

    def ingest() -> None:  # lands a small file every 0.25 s, as ingest would
        n = 0
        while not stop.is_set():
            batcher = ColumnBatcher(table("readings"))
            for _ in range(20):
                device, ts = f"meter-{n % 13}", T0 + n
                batcher.append(meter_reading(device, ts, n))
                landed.append((device, ts))
                n += 1
            writer.write(table("readings"), batcher.take()[0])
            time.sleep(0.25)

    argv = [*CITYLAKE, "pipeline", "run", "readings", "--mode", "streaming", "--config", str(config)]
    feeder = threading.Thread(target=ingest)
    feeder.start()
    job: ManagedProcess | None = None
    try:
        job = crash_twice_then_run(argv, data_dir, tmp_path)
        time.sleep(3)
        stop.set()
        feeder.join()
        expected = Counter(landed)
        deadline = time.monotonic() + 120
        got = lake_keys(data_dir)
        while sum(got.values()) < len(landed) and time.monotonic() < deadline:
            assert job.alive(), job.log_tail()
            time.sleep(1)
            got = lake_keys(data_dir)
        time.sleep(3)  # anything more would be a duplicate
        got = lake_keys(data_dir)
    finally:
        stop.set()
        feeder.join()
        if job is not None:
            job.stop()
    assert "resuming readings from checkpoint" in (tmp_path / "job-1.log").read_text()
    missing = expected - got
    doubled = {k: n for k, n in got.items() if n > 1}
    assert not missing, (
        f"{len(missing)} of {len(landed)} landed readings not in the lake, e.g. {list(missing)[:3]}"
    )
    assert not doubled, f"{len(doubled)} readings twice in the lake, e.g. {list(doubled.items())[:3]}"
    assert set(got) == set(expected)
