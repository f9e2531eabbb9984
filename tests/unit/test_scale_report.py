"""The scale report from small synthetic runs: derived figures, files written,
the HTML standing alone, and a rebuild from samples.json alone."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from citylake_devstack.scalereport import (
    Marker,
    ProcessStat,
    Query,
    RunInfo,
    RunRecord,
    Sample,
    build_report,
    rebuild_report,
    summarize,
)
from citylake_devstack.scalereport.summary import FLINK_JVM_RSS, per_interval, quantile, rates


def synthetic(seconds: int = 60, step: int = 5, falling_behind: bool = False) -> RunRecord:
    """MQTT lands 100 readings/s, Modbus 20/s (and 500 rows during the warm-up,
    before the first sample at t = 0); the lake trails by one interval (or by
    more and more); one process is pinned at a full core."""
    info = RunInfo(
        started_at="2026-11-25T12:00:00Z",
        planned_s=seconds,
        duration_s=seconds,
        warmup_s=30,
        wall_s=seconds + 45,
        plan={"devices": {"mqtt": 1000, "modbus": 20, "gb28181": 30}, "jobs": "readings,rollups"},
        machine={"cores": 2, "mem_total_mb": 4096},
        notes=["synthetic"],
        stop_check={"checked": 9, "left_running": []},
        workdir="/tmp/x",
    )
    samples = []
    for t in range(0, seconds + 1, step):
        mqtt, modbus = 100.0 * t, 500.0 + 20.0 * t
        behind = 120.0 * step * (t / step if falling_behind else 1)
        samples.append(
            Sample(
                t=float(t),
                landed_rows={"mqtt": mqtt, "modbus": modbus},
                landed_events={"gb28181": 3.0 * t},
                lake_rows=max(0.0, mqtt + modbus - behind),
                lake_tables={"readings": max(0.0, mqtt + modbus - behind), "readings_1m": t // 60 * 10.0},
                event_lag_s={"mqtt-sensors": 0.6, "modbus-meters": 0.4},
                freshest_lag_s={"mqtt-sensors": 0.1, "modbus-meters": 0.1},
                landing_bytes=1000.0 * t,
                devices_online={"mqtt": min(1000, 100 * t), "modbus": 20, "gb28181": 30},
                processes={
                    "ingest-mqtt": ProcessStat(95.0, 120.0 + t, 1, "python"),
                    "flink-readings": ProcessStat(40.0, 900.0, 3, "java"),
                },
                machine_cpu_percent=150.0,
                steal_percent=1.0,
                mem_available_mb=2000,
                counters={"ingest_rejected": 0.0, "mqtt_unacked": 2.0},
                gauges={"fleet_pending": 5.0},
            )
        )
    markers = [Marker(i, float(2 * i), float(2 * i + 1.5 + (i % 10) / 10)) for i in range(seconds // 2)]
    markers.append(Marker(999, seconds - 1.0, None))
    queries = [
        Query(i * 0.1, "latest" if i % 2 else "readings", 5.0 + (i % 100) / 10, 200)
        for i in range(seconds * 10)
    ]
    queries.append(Query(3.0, "latest", 10_000.0, 0))
    queries.append(Query(4.0, "latest", 3.0, 404))
    return RunRecord(info, samples, markers, queries)


def test_quantile_and_rates_and_intervals() -> None:
    assert quantile([], 0.5) != quantile([], 0.5)  # NaN
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile(list(map(float, range(1, 101))), 0.99) == 99.0
    samples = [Sample(t=5.0), Sample(t=10.0)]
    assert rates(samples, [50.0, 150.0]) == [0.0, 20.0], "the first sample is the baseline"
    assert rates([Sample(t=0.01), Sample(t=5.01)], [9000.0, 9500.0]) == [0.0, 100.0]
    four = [Sample(t=float(t)) for t in (0, 5, 10, 15)]
    assert rates(four, [0.0, 500.0, 0.0, 1500.0]) == [0.0, 100.0, 0.0, 200.0], "a failed scrape reads 0"
    events = [(1.0, 10.0, False), (6.0, 30.0, False), (7.0, 0.0, True), (11.0, 1.0, False)]
    stats = per_interval(samples, events)
    assert [(s.count, s.p50, s.errors) for s in stats] == [(1, 10.0, 0), (2, 30.0, 1)]
    rolling = per_interval(samples, events, window_s=10.0)
    assert [(s.count, s.p99) for s in rolling] == [(1, 10.0), (3, 30.0)]


def test_summary_figures() -> None:
    summary = summarize(synthetic())
    assert summary.readings_landed_total == 120 * 60, "the warm-up's rows are not the load's"
    assert summary.readings_landed_with_warmup == 120 * 60 + 500
    assert summary.readings_landed["modbus"] == 20 * 60
    assert summary.peak_rate["mqtt"] == pytest.approx(100.0)
    assert summary.mean_rate["total"] == pytest.approx(120.0)
    assert summary.devices_online == {"mqtt": 1000, "modbus": 20, "gb28181": 30}
    assert summary.markers == 31 and summary.markers_visible == 30
    assert 1.5 <= summary.freshness_p50_s <= summary.freshness_p99_s <= 2.4
    assert summary.queries == 602 and summary.query_errors == 1 and summary.query_not_found == 1
    assert summary.query_p99_ms < 100, "a failed query's time is not a latency"
    assert summary.query_kinds["latest"][0] == 302
    assert summary.processes[0].name == "ingest-mqtt" and summary.processes[0].peak_rss_mb == 180
    assert summary.other_mean_cpu == pytest.approx(15.0)
    assert any("ingest-mqtt at 95%" in f for f in summary.findings)
    assert any("1 of 31 freshness markers" in f for f in summary.findings)
    assert not any("falling behind" in f for f in summary.findings)


def test_a_growing_backlog_is_reported() -> None:
    summary = summarize(synthetic(falling_behind=True))
    assert any(f.startswith("pipeline falling behind") for f in summary.findings)


def test_report_directory(tmp_path: Path) -> None:
    record = synthetic()
    report = build_report(record, tmp_path / "report")
    names = {p.name for p in report.directory.iterdir()}
    for figure in ("ingest_rate", "lag", "freshness", "query_latency", "cpu", "memory", "devices_online"):
        assert f"{figure}.png" in names
        assert report.figures[figure].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"index.html", "samples.csv", "samples.json"} <= names

    with report.csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(record.samples)
    assert float(rows[-1]["landed_per_s"]) == pytest.approx(120.0)
    assert float(rows[-1]["landed_per_s[modbus]"]) == pytest.approx(20.0)
    assert "cpu_percent[flink-readings]" in rows[0] and "counter[mqtt_unacked]" in rows[0]

    page = report.html.read_text()
    # Stands alone: every image inline, nothing fetched from elsewhere.
    assert page.count('src="data:image/png;base64,') == 7
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for text in ("mqtt 1,000 / 1,000", "ingest-mqtt", "readings landed", "p50 / p99", "stopped cleanly"):
        assert text in page


def test_rebuilt_from_samples_json_alone(tmp_path: Path) -> None:
    first = build_report(synthetic(), tmp_path)
    for png in tmp_path.glob("*.png"):
        png.unlink()
    (tmp_path / "index.html").unlink()
    again = rebuild_report(tmp_path)
    assert again.summary == first.summary
    assert (tmp_path / "cpu.png").exists() and (tmp_path / "index.html").exists()
    record = RunRecord.read(tmp_path / "samples.json")
    assert record.markers[-1].visible_at is None and record.queries[-1].status == 404


def test_an_empty_run_still_reports(tmp_path: Path) -> None:
    """Ctrl-C before the first sample: the report says so instead of failing."""
    record = RunRecord(RunInfo(started_at="now", planned_s=60, interrupted=True))
    report = build_report(record, tmp_path)
    assert math.isnan(report.summary.freshness_p99_s)
    assert "interrupted" in report.html.read_text()


def test_load_planned_against_achieved_and_missed_goals() -> None:
    record = synthetic()
    record.info.plan["expected_readings_per_s"] = {"mqtt": 100.0, "modbus": 40.0}
    for sample in record.samples:
        sample.gauges[FLINK_JVM_RSS] = 900.0 + sample.t
    record.queries = [q for q in record.queries if not q.error]
    record.info.drain = {"landed": 8000.0, "in_lake": 8000.0, "waited_s": 3.0}
    summary = summarize(record)
    planned, achieved, unit = summary.load["mqtt"]
    assert (planned, unit) == (100.0, "readings/s")
    assert achieved == pytest.approx(100.0)
    assert summary.load["modbus"][1] == pytest.approx(20.0)
    assert summary.load["gb28181"] == (30.0, 30.0, "devices online")
    assert summary.flink_jvm_rss_peak_mb == 960.0
    # Modbus at half its plan, and the marker that never arrived: the run fails, naming both.
    assert summary.missed == [
        "modbus load short: 20 of 40 readings/s planned (50%, below 95%)",
        "1 freshness markers never reached the lake",
    ]
    record.info.plan["expected_readings_per_s"]["modbus"] = 20.0
    record.markers = [m for m in record.markers if m.visible_at is not None]
    for sample in record.samples:
        sample.gauges[FLINK_JVM_RSS] = 3500.0
    assert summarize(record).missed == ["Flink JVMs peak RSS 3,500 MB, goal <= 3,072 MB"]
    for marker in record.markers:
        marker.visible_at = marker.acked_at + 12.0
    assert summarize(record).missed[0] == "freshness p99 12.0 s, goal <= 10 s"


def test_query_goals_and_the_drain_fail_the_run() -> None:
    """Issue 12's query goals (p99 <= 50 ms, no timeouts, the planned rate
    reached) and every landed reading in the lake after the drain."""
    record = synthetic()
    record.markers = [m for m in record.markers if m.visible_at is not None]
    record.info.plan["query_rate"] = 20.0  # synthetic() sends 10/s
    record.info.drain = {"landed": 8000.0, "in_lake": 7990.0, "waited_s": 72.0}
    for i in range(20):
        record.queries.append(Query(5.0 + i, "readings", 80.0, 200))
    missed = summarize(record).missed
    assert "1 of 622 queries failed or timed out" in missed
    assert "query p99 80.0 ms, goal <= 50 ms" in missed
    assert "query load short: 10.4 of 20.0 queries/s planned (52%, below 95%)" in missed
    assert any(m.startswith("10 landed readings not in the lake") for m in missed)
    record.queries = [q for q in record.queries if not q.error and q.latency_ms < 50]
    record.info.plan["query_rate"] = 10.0
    record.info.drain["in_lake"] = 8000.0
    assert summarize(record).missed == []
