"""`citylake pipeline submit` against Flink's own session cluster, started from
the apache-flink package's bin/start-cluster.sh, with `flink run --python`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from citylake.config import load_config
from citylake.devstack.flink import FlinkSessionCluster
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake import Lake
from citylake.schemas import DataLayout, table

pytestmark = pytest.mark.integration
CITYLAKE = [sys.executable, "-m", "citylake"]
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
