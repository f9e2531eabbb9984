"""One type per metric: the guard alone, then through the landing buffer that
every adapter's readings pass."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from citylake.config import ConfigError, load_config
from citylake.ingest.landing import LandingWriter
from citylake.ingest.landing_buffer import FlushPolicy, LandingBuffer
from citylake.ingest.metric_types import MetricTypeGuard
from citylake.ingest.metrics import IngestMetrics
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout, table

TS = 1_764_072_000_000
READINGS = table("readings")


def check(
    guard: MetricTypeGuard, source: str, *readings: tuple[str, object, object]
) -> list[tuple[int, str]]:
    metrics = [m for m, _, _ in readings]
    return guard.conflicts(
        source, ["d1"] * len(metrics), metrics, [v for _, v, _ in readings], [t for *_, t in readings]
    )


def test_first_sight_fixes_the_type_and_the_other_type_is_refused_with_every_name() -> None:
    guard = MetricTypeGuard({})
    assert check(guard, "s", ("temp", 15.3, None), ("state", None, "open")) == []
    bad = check(guard, "s", ("temp", None, "15.3"), ("temp", 15.4, None), ("state", 1.0, None))
    assert [index for index, _ in bad] == [0, 2]
    reason = bad[0][1]
    assert reason.startswith("metric type conflict: source s device d1 metric temp")
    assert "expects number (fixed at first sight), received text '15.3'" in reason
    assert "metric_types" in reason  # says what to do
    assert "expects text (fixed at first sight), received number 1.0" in bad[1][1]


def test_types_are_per_source_and_null_readings_fix_nothing() -> None:
    guard = MetricTypeGuard({})
    assert check(guard, "a", ("temp", None, None)) == []
    assert check(guard, "a", ("temp", None, "n/a")) == []  # the null fixed nothing: text is first
    assert check(guard, "b", ("temp", 1.0, None)) == []
    assert len(check(guard, "a", ("temp", 2.0, None))) == 1


def test_declared_types_win_over_first_sight_and_any_allows_both() -> None:
    guard = MetricTypeGuard({"s": {"hum": "number", "status": "any", "label": "text"}})
    bad = check(
        guard,
        "s",
        ("hum", None, "n/a"),
        ("status", 3.0, None),
        ("status", None, "ok"),
        ("label", 1.0, None),
    )
    assert [index for index, _ in bad] == [0, 3]
    assert "metric hum expects number (declared in metric_types), received text 'n/a'" in bad[0][1]
    assert check(guard, "other", ("hum", None, "n/a")) == []  # the declaration is the source's


def test_first_sight_table_is_bounded_least_recently_seen_first() -> None:
    guard = MetricTypeGuard({}, max_fixed=2)
    check(guard, "s", ("a", 1.0, None), ("b", 1.0, None))
    check(guard, "s", ("a", 2.0, None))  # a is now the most recent
    check(guard, "s", ("c", 1.0, None))  # b is forgotten
    assert len(guard) == 2
    assert guard.evictions == 1
    assert check(guard, "s", ("a", None, "x")) != []  # a was kept
    assert check(guard, "s", ("b", None, "x")) == []  # b is fixed anew


def test_max_fixed_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MetricTypeGuard({}, max_fixed=0)


def reading(metric: str, value: object, text: object) -> dict[str, object]:
    return {
        "device_id": "d1", "ts": TS, "metric": metric, "value": value, "text": text, "unit": None,
        "quality": 0, "source": "s", "site": "x", "ingest_ts": TS,
    }  # fmt: skip


def test_buffer_rejects_only_the_offending_readings_of_rows_and_columns(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    metrics = IngestMetrics()
    buffer = LandingBuffer(LandingWriter(layout), metrics, FlushPolicy())
    buffer.add("s", READINGS, [reading("temp", 15.3, None), reading("hum", 40.0, None)], b"first", None)
    # One message mixing types: "temp": 15.4, "temp": "15.3", "hum": "n/a".
    rows = [reading("temp", 15.4, None), reading("temp", None, "15.3"), reading("hum", None, "n/a")]
    columns = {name: [r[name] for r in rows] for name in rows[0]}
    buffer.add_columns("s", READINGS, columns, 3, b"mixed", None)
    asyncio.run(buffer.flush())
    landed = pq.read_table(layout.landing(READINGS)).to_pylist()
    assert sorted((r["metric"], r["value"], r["text"]) for r in landed) == [
        ("hum", 40.0, None), ("temp", 15.3, None), ("temp", 15.4, None),
    ]  # fmt: skip
    rejected = pq.read_table(layout.landing(table("rejected"))).to_pylist()
    assert sorted((r["raw"], r["reason"].split(",")[0]) for r in rejected) == [
        (
            b"mixed",
            "metric type conflict: source s device d1 metric hum expects number (fixed at first sight)",
        ),
        (
            b"mixed",
            "metric type conflict: source s device d1 metric temp expects number (fixed at first sight)",
        ),
    ]
    assert metrics.rejected.labels("s", "metric type conflict")._value.get() == 2
    assert buffer.buffered_rows() == 0


def test_city_yaml_metric_types_reach_the_runner_and_bad_values_name_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "city.yaml"
    source = (
        "sources:\n  - name: m\n    type: mqtt\n    url: mqtt://127.0.0.1:1883\n"
        '    topics: [{template: "t/{device_id}"}]\n'
    )
    path.write_text("site: s1\n" + source + "    metric_types: {hum: number}\n")
    runner = IngestRunner(build_sources(load_config(path)), DataLayout(tmp_path), "s1")
    assert check(runner.buffer.guard, "m", ("hum", None, "n/a")) != []
    path.write_text("site: s1\n" + source + "    metric_types:\n      hum: numeric\n")
    with pytest.raises(
        ConfigError,
        match=r"line 8: sources\[0\]\.metric_types\.hum: Input should be 'number', 'text' or 'any'",
    ):
        build_sources(load_config(path))
