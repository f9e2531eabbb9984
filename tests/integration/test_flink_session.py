"""`citylake pipeline submit` against Flink's own session cluster, started from
the apache-flink package's bin/start-cluster.sh, with `flink run --python`."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from citylake.config import load_config
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake import Lake
from citylake.schemas import DataLayout, table
from citylake_devstack.flink import FlinkSessionCluster
from citylake_devstack.process import CITYLAKE
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
T0 = 1_764_072_000_000


def land_readings(layout: DataLayout, count: int) -> float:
    batcher = ColumnBatcher(table("readings"))
    total = 0.0
    for i in range(count):
        value = i * 0.5
        total += value
        batcher.append(
            {
                "device_id": f"pump-{i % 7}",
                "ts": T0 + i * 1000,
                "metric": "pressure",
                "value": value,
                "text": None,
                "unit": "kPa",
                "quality": 0,
                "source": "modbus",
                "site": "s",
                "ingest_ts": T0,
            }
        )
    LandingWriter(layout).write(table("readings"), batcher.take()[0])
    return total


def test_submit_batch_job_with_flink_run(
    flink_session_cluster: FlinkSessionCluster, city_config: Callable[..., Path]
) -> None:
    config = city_config()
    layout = DataLayout(load_config(config).config.data_dir)
    total = land_readings(layout, 500)

    submitted = subprocess.run(
        [
            *CITYLAKE,
            "pipeline",
            "submit",
            "readings",
            "--mode",
            "batch",
            "--config",
            str(config),
            "--rest-url",
            flink_session_cluster.rest_url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    job_id = submitted.stdout.strip().splitlines()[-1]
    assert len(job_id) == 32, submitted.stdout

    deadline = time.monotonic() + 120
    state = None
    while time.monotonic() < deadline:
        state = next((j["state"] for j in flink_session_cluster.jobs() if j["jid"] == job_id), None)
        if state in ("FINISHED", "FAILED", "CANCELED"):
            break
        time.sleep(1)
    assert state == "FINISHED", f"job {job_id} ended {state}"

    listed = subprocess.run(
        [
            *CITYLAKE,
            "pipeline",
            "list",
            "--config",
            str(config),
            "--rest-url",
            flink_session_cluster.rest_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert job_id in listed.stdout and "FINISHED" in listed.stdout

    lake = Lake(layout)
    row = (
        lake.cursor()
        .execute("SELECT count(*), sum(value), count(DISTINCT device_id) FROM readings")
        .fetchone()
    )
    assert row is not None
    count, value_sum, devices = row
    lake.close()
    assert (count, devices) == (500, 7)
    assert value_sum == pytest.approx(total)


def test_submit_a_batch_backfill_of_a_range(
    flink_session_cluster: FlinkSessionCluster, city_config: Callable[..., Path]
) -> None:
    """`pipeline submit --mode batch --from --to`: the session cluster processes
    the readings of [from, to) and no others."""
    config = city_config()
    layout = DataLayout(load_config(config).config.data_dir)
    land_readings(layout, 500)  # T0 + 0 s ... T0 + 499 s, value i * 0.5
    start, end = (
        datetime.fromtimestamp((T0 + 100_000) / 1000, UTC),
        datetime.fromtimestamp((T0 + 200_000) / 1000, UTC),
    )
    submitted = subprocess.run(
        [
            *CITYLAKE, "pipeline", "submit", "readings", "--mode", "batch", "--config", str(config),
            "--rest-url", flink_session_cluster.rest_url,
            "--from", start.isoformat().replace("+00:00", "Z"), "--to", end.isoformat(),
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    job_id = submitted.stdout.strip().splitlines()[-1]
    wait_for(
        lambda: any(
            j["jid"] == job_id and j["state"] in ("FINISHED", "FAILED") for j in flink_session_cluster.jobs()
        ),
        180,
        "the backfill to end",
    )
    assert next(j["state"] for j in flink_session_cluster.jobs() if j["jid"] == job_id) == "FINISHED"
    lake = Lake(layout)
    try:
        row = lake.cursor().execute("SELECT count(*), sum(value), min(ts), max(ts) FROM readings").fetchone()
    finally:
        lake.close()
    assert row is not None
    count, value_sum, first, last = row
    assert count == 100
    assert value_sum == pytest.approx(sum(i * 0.5 for i in range(100, 200)))
    assert (first.replace(tzinfo=UTC), last.replace(tzinfo=UTC)) == (start, end - timedelta(seconds=1))


def test_submit_refuses_a_range_for_a_streaming_job(city_config: Callable[..., Path]) -> None:
    done = subprocess.run(
        [*CITYLAKE, "pipeline", "submit", "readings", "--config", str(city_config()),
         "--rest-url", "http://127.0.0.1:9", "--from", "2026-11-25T00:00:00Z", "--to", "2026-11-26T00:00Z"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "use them with --mode batch" in done.stderr, done.stdout + done.stderr


def test_stop_with_savepoint_and_resume_without_duplicates_or_gaps(
    flink_session_cluster: FlinkSessionCluster, city_config: Callable[..., Path]
) -> None:
    """A streaming job stopped with a savepoint and resumed from it continues
    where it stopped: files read before are not read again, new ones are."""
    config = city_config()
    layout = DataLayout(load_config(config).config.data_dir)
    cli = [*CITYLAKE, "pipeline"]
    rest = ["--config", str(config), "--rest-url", flink_session_cluster.rest_url]

    def lake_count() -> int:
        lake = Lake(layout)
        try:
            row = (
                lake.cursor()
                .execute("SELECT count(*), count(DISTINCT (device_id, ts)) FROM readings")
                .fetchone()
            )
        finally:
            lake.close()
        assert row is not None and row[0] == row[1], f"duplicates in the lake: {row}"
        return int(row[0])

    def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(1)

    def submit(*extra: str) -> str:
        done = subprocess.run(
            [*cli, "submit", "readings", "--mode", "streaming", *rest, *extra],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + done.stdout
        return done.stdout.strip().splitlines()[-1]

    first = submit()
    wait_for(
        lambda: any(j["jid"] == first and j["state"] == "RUNNING" for j in flink_session_cluster.jobs()),
        "RUNNING",
    )
    land_readings(layout, 100)
    wait_for(lambda: lake_count() == 100, "the first 100 readings")

    stopped = subprocess.run(
        [*cli, "cancel", first, "--savepoint", *rest],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert stopped.returncode == 0, stopped.stderr + stopped.stdout
    savepoint = stopped.stdout.strip().splitlines()[-1]
    assert (Path(savepoint.removeprefix("file:")) / "_metadata").exists(), savepoint
    wait_for(
        lambda: any(j["jid"] == first and j["state"] == "FINISHED" for j in flink_session_cluster.jobs()),
        "stop",
    )

    batcher = ColumnBatcher(table("readings"))  # landed while no job ran
    for i in range(50):
        batcher.append({
            "device_id": "late-pump", "ts": T0 + 10_000_000 + i, "metric": "pressure", "value": 1.0,
            "text": None, "unit": "kPa", "quality": 0, "source": "modbus", "site": "s", "ingest_ts": T0,
        })  # fmt: skip
    LandingWriter(layout).write(table("readings"), batcher.take()[0])

    second = submit("--from-savepoint", savepoint)
    wait_for(lambda: lake_count() == 150, "the 50 readings landed while stopped")
    time.sleep(3)  # a re-read of the first file would show up as duplicates now
    assert lake_count() == 150
    cancelled = subprocess.run(
        [*cli, "cancel", second, *rest], capture_output=True, text=True, timeout=60, check=False
    )
    assert cancelled.returncode == 0, cancelled.stderr
