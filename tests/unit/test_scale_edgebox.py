"""The edge box's pure parts: cgroup v1 mounts and memberships parsed, the
shell prefix that enters the box (run for real, on plain files), counter
deltas, the edge overlay's Flink memory folded into one mini-cluster JVM,
and the box's figures in the report (an OOM kill fails the run)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from citylake_devstack.scale.edge_settings import (
    EDGE_OVERLAY,
    broker_bounds,
    edge_settings,
    megabytes,
    mini_cluster_memory,
)
from citylake_devstack.scale.edgebox import (
    BoxLimits,
    BoxReading,
    EdgeBox,
    EdgeBoxUnavailable,
    enter_prefix,
    key_values,
    members,
    own_cgroups,
    preflight,
    v1_mounts,
)
from citylake_devstack.scale.plan import ScalePlan, split_devices, write_scale_config
from citylake_devstack.scalereport import RunInfo, RunRecord, Sample, build_report, summarize

MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
proc /proc proc rw 0 0
"""


def test_v1_mounts_serve_co_mounted_controllers_and_ignore_v2() -> None:
    found = v1_mounts(MOUNTS)
    assert found == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "cpuacct": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
    }
    assert v1_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n") == {}


def test_own_cgroups_reads_every_controller_of_a_line() -> None:
    text = "4:memory:/process_api/abc\n2:cpu,cpuacct:/\n1:name=systemd:/\n0::/\n"
    assert own_cgroups(text) == {
        "memory": "/process_api/abc",
        "cpu": "/",
        "cpuacct": "/",
        "name=systemd": "/",
    }


def test_key_values_skips_lines_that_are_not_a_name_and_an_integer() -> None:
    text = "nr_periods 23\nnr_throttled 4\nthrottled_time 372522925\nodd line here\nx y\n"
    assert key_values(text) == {"nr_periods": 23, "nr_throttled": 4, "throttled_time": 372522925}


def test_limits_quota_and_bounds() -> None:
    assert BoxLimits().quota_us == 200_000 and BoxLimits().memory_bytes == 4 * 2**30
    assert BoxLimits(0.5, 512).quota_us == 50_000
    with pytest.raises(ValueError, match="CPUs"):
        BoxLimits(0, 4096)
    with pytest.raises(ValueError, match="at least 256 MiB"):
        BoxLimits(2, 100)


def test_the_prefix_writes_the_commands_own_pid_before_it_runs(tmp_path: Path) -> None:
    """The shell writes $$ to each file, then execs the command: the pid in the
    files is the command's (so its children inherit the cgroup)."""
    files = [tmp_path / "memory.procs", tmp_path / "with space" / "cpu.procs"]
    files[1].parent.mkdir()
    child = subprocess.run(
        [*enter_prefix(files), "sh", "-c", 'echo "$$"; cat "$0"', str(files[0])],
        capture_output=True,
        text=True,
        check=True,
    )
    printed, written = child.stdout.split()
    assert printed == written == files[1].read_text().strip()
    with pytest.raises(ValueError):
        enter_prefix([])


def test_the_prefix_fails_loudly_when_the_box_cannot_be_entered(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "cgroup.procs"
    child = subprocess.run([*enter_prefix([missing]), "true"], capture_output=True, text=True, check=False)
    assert child.returncode != 0 and "no-such-dir" in child.stderr


def _reading(cpu_ns: int, periods: int, throttled: int, pids: frozenset[int] = frozenset()) -> BoxReading:
    return BoxReading(
        memory_bytes=3 * 2**30,
        memory_peak_bytes=int(3.5 * 2**30),
        rss_bytes=2**30,
        cache_bytes=2 * 2**30,
        failcnt=0,
        oom_kills=0,
        cpu_ns=cpu_ns,
        nr_periods=periods,
        nr_throttled=throttled,
        throttled_ns=2_500_000_000,
        pids=pids,
    )


def test_figures_are_deltas_over_the_interval() -> None:
    first = _reading(10_000_000_000, 100, 10, frozenset({1, 2}))
    second = _reading(17_500_000_000, 150, 35)
    figures = second.figures(first, 5.0)
    assert figures["cpu_percent"] == 150.0  # 7.5 CPU seconds in 5 s
    assert figures["throttled_periods_percent"] == 50.0  # 25 of 50 periods
    assert figures["memory_mb"] == 3072.0 and figures["memory_peak_mb"] == 3584.0
    assert figures["rss_mb"] == 1024.0 and figures["cache_mb"] == 2048.0
    assert figures["throttled_s"] == 2.5
    assert first.figures(None, 0.0)["cpu_percent"] == 0.0
    assert first.figures(None, 0.0)["processes"] == 2.0


def test_members_are_the_roots_whose_pid_is_in_the_box() -> None:
    roots = {"query": 10, "sipp": 11, "orchestrator": 12}
    assert members(frozenset({10, 99}), roots) == ["query"]


def test_a_box_is_refused_clearly_without_root_or_controllers(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    if os.geteuid() != 0:
        with pytest.raises(EdgeBoxUnavailable, match="needs root"):
            preflight(mounts)
        return
    with pytest.raises(EdgeBoxUnavailable, match="memory, cpu, cpuacct controller"):
        EdgeBox.create(BoxLimits(), mounts=mounts)


def test_the_edge_flink_memory_as_one_mini_cluster_jvm() -> None:
    """JobManager 640m - 192m metaspace - 96m overhead - 64m off-heap = 288m
    heap; TaskManager 832m - 160m - 96m = 576m Flink memory: 64m network (the
    minimum of 10 %), 64m managed, 64m framework heap and off-heap, 320m task
    heap. One JVM: 288 + 64 + 320 = 672m heap."""
    patch = YAML(typ="safe").load((EDGE_OVERLAY / "flink.yaml").read_text())
    assert mini_cluster_memory(patch) == {
        "local_heap_mb": 672,
        "local_managed_mb": 64,
        "local_network_mb": 64,
    }
    # A larger TaskManager: network is 10 % of its Flink memory.
    bigger: list[dict[str, Any]] = [
        {"op": "replace", "path": "/spec/jobManager/resource", "value": {"memory": "1g"}},
        {"op": "replace", "path": "/spec/taskManager/resource", "value": {"memory": "2g"}},
        {
            "op": "add",
            "path": "/spec/flinkConfiguration/jobmanager.memory.jvm-metaspace.size",
            "value": "256m",
        },
        {
            "op": "add",
            "path": "/spec/flinkConfiguration/taskmanager.memory.jvm-metaspace.size",
            "value": "256m",
        },
        {"op": "add", "path": "/spec/flinkConfiguration/taskmanager.memory.managed.size", "value": "128m"},
    ]
    # JM: 1024 - 256 - 192 - 128 = 448; TM: 2048 - 256 - 204 = 1588, network 158,
    # task heap 1588 - 128 - 128 - 0 - 128 - 158 = 1046; heap 448 + 128 + 1046.
    assert mini_cluster_memory(bigger) == {
        "local_heap_mb": 1622,
        "local_managed_mb": 128,
        "local_network_mb": 158,
    }
    with pytest.raises(ValueError, match="resource memory"):
        mini_cluster_memory([])


def test_sizes_and_broker_bounds() -> None:
    assert megabytes("640m") == 640 and megabytes("1g") == 1024 and megabytes("832Mi") == 832
    with pytest.raises(ValueError):
        megabytes("lots")
    text = "max_inflight_messages 0\n# max_queued_bytes 1\nmax_queued_bytes 33554432\n"
    assert broker_bounds(text) == ["max_queued_bytes 33554432"]


def test_the_edge_settings_are_the_overlays_and_go_into_the_runs_config(tmp_path: Path) -> None:
    city = YAML(typ="safe").load((EDGE_OVERLAY / "city.yaml").read_text())
    edge = edge_settings()
    assert edge.query["memory_limit_mb"] == city["services"]["query"]["memory_limit_mb"]
    assert edge.ingest["max_buffered_rows"] == city["ingest"]["max_buffered_rows"]
    assert "keys_file" not in edge.query and "port" not in edge.query
    assert "max_queued_bytes 33554432" in edge.broker
    plan = ScalePlan(devices=split_devices(30), edge_box=True)
    path = write_scale_config(
        tmp_path / "city.yaml", plan, tmp_path, "mqtt://127.0.0.1:1883", None, 5060, edge
    )
    written = YAML(typ="safe").load(path.read_text())
    assert written["pipelines"]["flink"]["local_heap_mb"] == 672
    assert written["pipelines"]["flink"]["checkpoint_interval_s"] == plan.checkpoint_s
    for key in ("memory_limit_mb", "serving_memory_mb", "hot_max_window_rows"):
        assert written["services"]["query"][key] == city["services"]["query"][key], key
    assert written["services"]["query"]["live_pubsub"] == "citylake-pubsub"
    assert written["ingest"]["flush_max_rows"] == city["ingest"]["flush_max_rows"]


def _boxed_record(oom_kills: float, members_seen: list[str]) -> RunRecord:
    info = RunInfo(
        started_at="2026-12-02T12:00:00Z",
        planned_s=20,
        duration_s=20,
        plan={"devices": {"mqtt": 10}},
        machine={"cores": 2},
        box={"cgroup": "citylake-edge-1", "cpus": 2.0, "memory_mb": 4096, "inside": ["query", "mosquitto"]},
    )
    samples = [
        Sample(
            t=float(t),
            box={
                "memory_mb": 1000.0 + t,
                "memory_peak_mb": 1100.0 + 10 * t,
                "rss_mb": 600.0,
                "cache_mb": 400.0 + t,
                "cpu_percent": 0.0 if t == 0 else 120.0 + t,
                "throttled_periods_percent": 0.0 if t == 0 else 60.0,
                "throttled_s": t / 10,
                "oom_kills": oom_kills if t == 20 else 0.0,
                "failcnt": 0.0,
            },
            box_members=members_seen,
        )
        for t in range(0, 21, 5)
    ]
    return RunRecord(info, samples)


def test_the_box_in_the_summary_and_report(tmp_path: Path) -> None:
    summary = summarize(_boxed_record(0, ["mosquitto", "query"]))
    box = summary.box
    assert box is not None
    assert box.memory_peak_mb == 1300.0 and box.memory_limit_mb == 4096 and box.cpus == 2.0
    assert box.cpu_mean == pytest.approx(132.5) and box.cpu_peak == 140.0  # the baseline is not an interval
    assert box.throttled_s == 2.0 and box.oom_kills == 0 and box.not_seen_inside == []
    assert not [m for m in summary.missed if "box" in m]
    assert any("edge box CPU-bound" in f for f in summary.findings)
    report = build_report(_boxed_record(0, ["mosquitto", "query"]), tmp_path / "report")
    assert (tmp_path / "report" / "edge_box.png").exists()
    html = report.html.read_text()
    assert "edge box memory peak / mean" in html and "1,300 / 1,010 MiB" in html
    assert "box[memory_peak_mb]" in (tmp_path / "report" / "samples.csv").read_text()


def test_an_oom_kill_in_the_box_or_an_edge_process_outside_it_fails_the_run() -> None:
    missed = summarize(_boxed_record(1, ["mosquitto", "query"])).missed
    assert "1 OOM kill(s) in the edge box (4,096 MiB)" in missed
    missed = summarize(_boxed_record(0, ["mosquitto"])).missed
    assert "edge processes never seen in the box: query" in missed


def test_a_run_without_a_box_has_no_box_figures(tmp_path: Path) -> None:
    record = RunRecord(RunInfo(started_at="", planned_s=1), [Sample(t=0.0)])
    assert summarize(record).box is None
    build_report(record, tmp_path / "r")
    assert not (tmp_path / "r" / "edge_box.png").exists()


def test_the_command_refuses_a_box_it_cannot_make_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from citylake.cli import app
    from citylake_devstack.scale import edgebox

    def unavailable() -> None:
        raise EdgeBoxUnavailable("--edge-box needs the cgroup v1 memory controller(s) mounted")

    monkeypatch.setattr(edgebox, "preflight", unavailable)
    config = Path(__file__).resolve().parents[2] / "city.yaml"
    result = CliRunner().invoke(
        app, ["scale", "run", "--config", str(config), "--edge-box", "--devices", "30"]
    )
    assert result.exit_code == 2, result.output
    assert "cgroup v1 memory" in result.output
    assert "--edge-box-memory-mb" in CliRunner().invoke(app, ["scale", "run", "--help"]).output
