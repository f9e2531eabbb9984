"""The scale run's orchestration at a tiny scale, with every real part (mosquitto,
pymodbus gateways, SIPp, three ingest processes, the streaming readings job,
the query service beside daprd): every protocol's devices come online,
markers reach the lake, queries are answered, the report is written, and
nothing of the run is left running afterwards (checked in /proc, not only by
the run's own account)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from citylake_devstack.scale import ScalePlan, ScaleRun, edgebox, split_devices
from citylake_devstack.scale.edge_settings import EDGE_OVERLAY, edge_settings
from citylake_devstack.scale.probes import processes_mentioning
from citylake_devstack.scalereport import build_report
from citylake_devstack.scalereport.record import RunRecord
from citylake_devstack.scalereport.summary import missed_goals, summarize

pytestmark = pytest.mark.integration


def tiny_plan() -> ScalePlan:
    """36 devices of every protocol for 15 s: the whole run in about a minute."""
    return ScalePlan(
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


def report_missed(record: RunRecord) -> list[str]:
    return missed_goals(summarize(record))


def assert_the_run_measured_everything(record: RunRecord, workdir: Path) -> None:
    """Nothing left running; every protocol online, rows landed and in the
    lake, markers seen, queries answered."""
    assert processes_mentioning(str(workdir)) == [], "a process of the run outlived it"

    final = record.samples[-1]
    assert record.samples[0].t < 1.0, "the first sample is the load's start"
    assert final.devices_online == {"mqtt": 30, "modbus": 3, "gb28181": 3}
    assert final.landed_rows["mqtt"] > 0 and final.landed_rows["modbus"] > 0
    assert final.landed_events["gb28181"] > 0
    assert final.lake_rows > 0
    assert any(m.lag_s is not None for m in record.markers), "no marker reached the lake"
    assert record.queries and not [q for q in record.queries if q.error]
    assert record.info.drain and record.info.drain["in_lake"] > 0


def test_a_tiny_edge_box_run_measures_everything_and_leaves_nothing_running(tmp_path: Path) -> None:
    """The whole run at 36 devices, with --edge-box (one run for both, to keep
    make test short): every protocol online, rows landed and in the lake,
    markers seen, queries answered, nothing left running; mosquitto, both
    daprd, every ingest, the Flink job and the query service run in the box's
    cgroup (their pids in its cgroup.procs at every sample), the simulators and
    the orchestrator do not; the box is sampled into the report and removed
    afterwards."""
    try:
        edgebox.preflight()
    except edgebox.EdgeBoxUnavailable as exc:
        pytest.fail(f"the edge box cannot run here: {exc}")
    plan = replace(tiny_plan(), edge_box=True, edge_box_cpus=2.0, edge_box_memory_mb=4096)
    workdir = tmp_path / "run"
    started = time.monotonic()
    run = ScaleRun(plan, workdir)
    record = run.run()
    assert run.failure is None, run.failure
    wall = time.monotonic() - started
    assert record.info.stop_check["left_running"] == [], record.info.stop_check
    assert_the_run_measured_everything(record, workdir)

    edge = {"mosquitto", "daprd-ingest", "ingest-mqtt", "ingest-modbus", "ingest-gb28181"}
    edge |= {"flink-readings", "daprd-query", "query"}
    outside = {"orchestrator", "modbus-gateways", "sipp", "mqtt-fleet", "query-load"}
    assert set(record.info.box["inside"]) == edge
    boxed = [s for s in record.samples if s.box]
    assert len(boxed) == len(record.samples) >= 3
    for sample in boxed:
        assert edge <= set(sample.box_members), sample.box_members
        assert not outside & set(sample.box_members), sample.box_members
    assert outside <= set(record.samples[-1].processes), "the simulators ran (outside the box)"
    # The query load ran as its own process and sent what was planned (open loop).
    assert record.samples[-1].processes["query-load"].cpu_percent > 0
    assert record.samples[-1].counters["queries: sent"] > 0
    achieved = len(record.queries) / record.info.duration_s
    assert achieved >= 0.9 * plan.query_rate, f"{achieved:.1f} of {plan.query_rate:g} queries/s"
    assert not any("query load short" in m for m in report_missed(record))
    # The Flink JVM under its Python driver inherited the box: it dominates the box's memory.
    last = boxed[-1].box
    assert last["processes"] > len(edge) and last["rss_mb"] > 300, last
    assert last["oom_kills"] == 0 and last["memory_peak_mb"] < 4096
    assert boxed[-1].box["cpu_percent"] > 0 or boxed[-2].box["cpu_percent"] > 0
    # The edge overlay's settings were the run's (deploy/overlays/edge).
    config = YAML(typ="safe").load((workdir / "city.yaml").read_text())
    settings = edge_settings()
    assert (
        settings.query["memory_limit_mb"]
        == YAML(typ="safe").load((EDGE_OVERLAY / "city.yaml").read_text())["services"]["query"][
            "memory_limit_mb"
        ]
    )
    assert {k: config["services"]["query"].get(k) for k in settings.query} == settings.query, config
    assert {k: config["pipelines"]["flink"].get(k) for k in settings.flink} == settings.flink, config
    assert "max_queued_bytes 33554432" in (workdir / "mosquitto" / "mosquitto.conf").read_text()

    report = build_report(record, tmp_path / "report")
    box = report.summary.box
    assert box is not None and box.memory_peak_mb == max(s.box["memory_peak_mb"] for s in boxed)
    assert box.memory_limit_mb == 4096 and box.cpus == 2.0 and box.oom_kills == 0
    assert not report.summary.missed or all("box" not in m for m in report.summary.missed)
    assert report.summary.devices_online["gb28181"] == 3
    assert (tmp_path / "report" / "edge_box.png").exists()
    assert (tmp_path / "report" / "freshness.png").exists()
    html = report.html.read_text()
    assert "edge box memory peak" in html and "edge box (cgroup v1) limits" in html
    # Removed at the end.
    assert not any(Path(d).exists() for d in record.info.box["dirs"].values())
    assert wall < 240, f"the tiny run took {wall:.0f} s (warm-up {record.info.warmup_s:.0f} s)"
