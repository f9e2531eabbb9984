"""The scale run's orchestration at a tiny scale, with every real part (mosquitto,
pymodbus gateways, SIPp, three ingest processes, the streaming readings job,
the query service beside daprd): every protocol's devices come online,
markers reach the lake, queries are answered, the report is written, and
nothing of the run is left running afterwards (checked in /proc, not only by
the run's own account)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from citylake_devstack.scale import ScalePlan, ScaleRun, split_devices
from citylake_devstack.scale.probes import processes_mentioning
from citylake_devstack.scalereport import build_report

pytestmark = pytest.mark.integration


def test_a_tiny_scale_run_measures_everything_and_leaves_nothing_running(tmp_path: Path) -> None:
    plan = ScalePlan(
        devices=split_devices(36, modbus=3, gb28181=3),
        minutes=0.25,
        mqtt_period_s=2.0,
        modbus_interval_s=1.0,
        gb28181_keepalive_s=2.0,
        gb28181_rate=50,
        jobs=("readings",),
        checkpoint_s=1.0,
        query_rate=10,
        marker_every_s=0.5,
        sample_s=3.0,
    )
    workdir = tmp_path / "run"
    started = time.monotonic()
    run = ScaleRun(plan, workdir)
    record = run.run()
    assert run.failure is None, run.failure
    wall = time.monotonic() - started

    assert record.info.stop_check["left_running"] == [], record.info.stop_check
    assert processes_mentioning(str(workdir)) == [], "a process of the run outlived it"

    last = record.samples[-1]
    assert record.samples[0].t < 1.0, "the first sample is the load's start"
    assert last.devices_online == {"mqtt": 30, "modbus": 3, "gb28181": 3}
    assert last.landed_rows["mqtt"] > 0 and last.landed_rows["modbus"] > 0
    assert last.landed_events["gb28181"] > 0
    assert last.lake_rows > 0
    assert {"ingest-mqtt", "ingest-modbus", "ingest-gb28181", "flink-readings", "query", "sipp"} <= set(
        last.processes
    )
    assert any(m.lag_s is not None for m in record.markers), "no marker reached the lake"
    assert record.queries and not [q for q in record.queries if q.error]

    report = build_report(record, tmp_path / "report")
    assert report.summary.devices_online["gb28181"] == 3
    assert report.html.exists() and (tmp_path / "report" / "freshness.png").exists()
    assert wall < 240, f"the tiny run took {wall:.0f} s (warm-up {record.info.warmup_s:.0f} s)"
