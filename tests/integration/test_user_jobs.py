"""A data engineer's own job (examples/jobs/water_leak, a SQL file outside the
package) run like the built-in ones: batch and continuous streaming through
Flink's mini-cluster, and submitted to Flink's own session cluster, each
holding the rows worked out by hand; its table is then a lake table (the
DuckDB views of `citylake sql`, the stock DuckDB CLI's init file, Flink's SQL
Client). Bad jobs are refused by Flink's own parser and planner with the file
and line, before anything runs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import pytest

from citylake.config import CityConfig, load_config
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake import Lake
from citylake.lake.catalog import all_views_sql
from citylake.pipelines import runner
from citylake.pipelines.catalog import JobRefused, job_catalog
from citylake.pipelines.check import check_job
from citylake.schemas import DataLayout, table
from citylake_devstack.flink import FlinkSessionCluster

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SAMPLE_SQL = REPO / "examples" / "jobs" / "water_leak" / "night_flow.sql"
CITYLAKE = [sys.executable, "-m", "citylake"]
NIGHT1 = datetime(2026, 11, 24, tzinfo=UTC)
NIGHT2 = NIGHT1 + timedelta(days=1)
Row = dict[str, Any]

OUTPUT = {
    "time_column": "night",
    "required": ["meter_id", "night", "readings"],
    "columns": {
        "meter_id": "string",
        "night": "timestamp",
        "min_flow": "double",
        "avg_flow": "double",
        "readings": "bigint",
        "leak_suspected": "boolean",
    },
}


def water_leak_job(sql: Path = SAMPLE_SQL, **changes: object) -> dict[str, object]:
    return {"sql": str(sql), "inputs": ["readings"], "outputs": {"night_flow": OUTPUT}, **changes}


def pipelines(**user_jobs: object) -> dict[str, object]:
    return {
        "flink": {"parallelism": 1, "checkpoint_interval_s": 1, "monitor_interval_s": 0.5},
        "user_jobs": user_jobs,
    }


def flow(meter: str, at: datetime, value: float, metric: str = "flow", quality: int = 0) -> Row:
    ts = int(at.timestamp() * 1000)
    return {
        "device_id": meter, "ts": ts, "metric": metric, "value": value, "text": None, "unit": "m3/h",
        "quality": quality, "source": "meters", "site": "s", "ingest_ts": ts + 1000,
    }  # fmt: skip


def at(night: datetime, hh: int, mm: int) -> datetime:
    return night + timedelta(hours=hh, minutes=mm)


METER1_NIGHT1 = [0.30, 0.25, 0.20, 0.12, 0.10, 0.15, 0.11, 0.10, 0.14, 0.20, 0.22, 0.31]
METER2_NIGHT1 = [1.2, 0.8, 0.0, 0.0, 0.4, 0.9]


def landing_files() -> list[list[Row]]:
    first = [flow("water-1", at(NIGHT1, 2 + i // 6, 10 * (i % 6)), v) for i, v in enumerate(METER1_NIGHT1)]
    first += [flow("water-2", at(NIGHT1, 2, 10 * i), v) for i, v in enumerate(METER2_NIGHT1)]
    first += [
        # Outside 02:00-04:00: the evening's and the morning's use do not count.
        flow("water-1", at(NIGHT1, 1, 50), 0.0),
        flow("water-1", at(NIGHT1, 4, 0), 0.0),
        # Marked bad by the meter, another metric: neither counts.
        flow("water-1", at(NIGHT1, 2, 5), 0.0, quality=2),
        flow("water-1", at(NIGHT1, 2, 30), 0.0, metric="level"),
    ]
    first.sort(key=lambda r: r["ts"])
    # A gateway replaying its buffer: counted once.
    second = [first[1], flow("water-1", at(NIGHT2, 2, 0), 0.02), flow("water-1", at(NIGHT2, 3, 0), 0.03)]
    # Two days on: the watermark passes both nights, so streaming windows close.
    clock = [flow("clock", at(NIGHT2 + timedelta(days=2), 12, 0), 9.0)]
    return [first, second, clock]


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


# Worked out by hand from landing_files().
EXPECTED = [
    {"meter_id": "water-1", "night": ms(NIGHT1), "min_flow": 0.10, "avg_flow": 2.20 / 12, "readings": 12,
     "leak_suspected": True, "date": "2026-11-24"},
    {"meter_id": "water-1", "night": ms(NIGHT2), "min_flow": 0.02, "avg_flow": 0.025, "readings": 2,
     "leak_suspected": False, "date": "2026-11-25"},
    {"meter_id": "water-2", "night": ms(NIGHT1), "min_flow": 0.0, "avg_flow": 3.3 / 6, "readings": 6,
     "leak_suspected": False, "date": "2026-11-24"},
]  # fmt: skip


def land(layout: DataLayout, rows: list[Row]) -> None:
    batcher = ColumnBatcher(table("readings"))
    for row in rows:
        batcher.append(row)
    batch, bad = batcher.take()
    assert not bad, bad
    LandingWriter(layout).write(table("readings"), batch)


def plain(row: Row) -> Row:
    out = {}
    for key, value in row.items():
        got = (
            ms(value if value.tzinfo else value.replace(tzinfo=UTC)) if isinstance(value, datetime) else value
        )
        out[key] = str(got) if key == "date" else got
    return out


def lake_rows(data_dir: Path) -> list[Row]:
    files = [str(p) for p in (data_dir / "lake" / "night_flow").rglob("part-*")]
    if not files:
        return []
    dataset = ds.dataset(files, format="parquet", partitioning=ds.partitioning(flavor="hive"))
    return sorted(
        (plain(r) for r in dataset.to_table().to_pylist()), key=lambda r: (r["meter_id"], r["night"])
    )


def assert_expected(rows: list[Row]) -> None:
    assert [{k: r[k] for k in ("meter_id", "night", "readings", "leak_suspected", "date")} for r in rows] == [
        {k: e[k] for k in ("meter_id", "night", "readings", "leak_suspected", "date")} for e in EXPECTED
    ]
    for row, expected in zip(rows, EXPECTED, strict=True):
        assert row["min_flow"] == pytest.approx(expected["min_flow"]), row
        assert row["avg_flow"] == pytest.approx(expected["avg_flow"]), row


def wait_for_rows(data_dir: Path, count: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while len(lake_rows(data_dir)) < count and time.monotonic() < deadline:
        time.sleep(0.5)


def config_of(path: Path) -> CityConfig:
    return load_config(path).config


def test_sample_job_in_batch_and_streaming_mode_writes_the_hand_computed_rows(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = city_config(pipelines=pipelines(water_leak=water_leak_job()))
    batch = config_of(path)
    layout = DataLayout(batch.data_dir)
    for rows in landing_files():
        land(layout, rows)
    runner.run(batch, "water_leak", "batch")
    assert_expected(lake_rows(batch.data_dir))

    streaming = batch.model_copy(update={"data_dir": tmp_path / "streaming"})
    result = runner.start(streaming, "water_leak", "streaming")
    client = result.get_job_client()
    assert client is not None
    first, second, clock = landing_files()
    try:
        land(DataLayout(streaming.data_dir), first)
        time.sleep(2.0)  # read before the next lands, as live ingest would
        land(DataLayout(streaming.data_dir), second)
        # Night 1's rows commit once night 2's readings moved the watermark:
        # only then the clock, or on a loaded machine it may be read first and
        # make night 2 late (as a live feed never would).
        wait_for_rows(streaming.data_dir, 2)
        land(DataLayout(streaming.data_dir), clock)
        wait_for_rows(streaming.data_dir, len(EXPECTED))
    finally:
        client.cancel().result()
    assert_expected(lake_rows(streaming.data_dir))
    # Checkpoints under the job's own name, as a resume looks for them.
    assert runner.latest_checkpoint(streaming, "water_leak") is not None

    # A lake table like the others: in the log, in citylake's DuckDB views...
    assert (layout.lake_root / "_log" / "night_flow" / "table.json").exists()
    lake = Lake(layout)
    try:
        got = (
            lake.cursor()
            .execute("SELECT meter_id, readings, leak_suspected FROM night_flow ORDER BY meter_id, night")
            .fetchall()
        )
    finally:
        lake.close()
    assert got == [("water-1", 12, True), ("water-1", 2, False), ("water-2", 6, False)]
    # ... in `citylake sql` ...
    printed = subprocess.run(
        [*CITYLAKE, "sql", "SELECT sum(readings) AS n FROM night_flow", "--config", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    shown = printed.stdout + printed.stderr
    assert printed.returncode == 0 and "│ 20 │" in shown, shown
    # ... and in the stock DuckDB CLI's init file (the same SQL, run by DuckDB).
    duck = duckdb.connect()
    for statement in all_views_sql(layout).split(";\n"):
        if statement.strip():
            duck.execute(statement)
    assert duck.execute("SELECT count(*) FROM night_flow WHERE leak_suspected").fetchone() == (1,)


def test_sample_job_submitted_to_the_session_cluster(
    flink_session_cluster: FlinkSessionCluster, city_config: Callable[..., Path]
) -> None:
    path = city_config(pipelines=pipelines(water_leak=water_leak_job()))
    config = config_of(path)
    for rows in landing_files():
        land(DataLayout(config.data_dir), rows)
    submitted = subprocess.run(
        [*CITYLAKE, "pipeline", "submit", "water_leak", "--mode", "batch", "--config", str(path),
         "--rest-url", flink_session_cluster.rest_url],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    job_id = submitted.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 120
    state = name = None
    while time.monotonic() < deadline:
        found = next((j for j in flink_session_cluster.jobs() if j["jid"] == job_id), None)
        state, name = (found["state"], found["name"]) if found else (None, None)
        if state in ("FINISHED", "FAILED", "CANCELED"):
            break
        time.sleep(1)
    assert state == "FINISHED", f"job {job_id} ended {state}"
    # Flink's web UI and REST show it under the job's own name.
    assert name == "citylake-water_leak-batch"
    assert_expected(lake_rows(config.data_dir))

    # Flink's SQL Client, opened by citylake on its tables, runs on the same cluster.
    script = path.parent / "count.sql"
    script.write_text("SELECT meter_id, COUNT(*) AS nights FROM lake_night_flow GROUP BY meter_id;\n")
    client = subprocess.run(
        [*CITYLAKE, "pipeline", "sql-client", "--config", str(path), "--rest-url",
         flink_session_cluster.rest_url, "--file", str(script)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert client.returncode == 0, client.stdout[-3000:] + client.stderr[-3000:]
    lines = [line for line in client.stdout.splitlines() if "water-" in line]
    # Tableau rows: | water-1 | 2 |
    nights = {x.split("|")[1].strip(): x.split("|")[2].strip() for x in lines}
    assert nights == {"water-1": "2", "water-2": "1"}, client.stdout


def refused(config: CityConfig, name: str = "water_leak") -> str:
    with pytest.raises(JobRefused) as caught:
        check_job(config, job_catalog(config), name)
    return str(caught.value)


BAD_SQL = {
    # (SQL, the file line Flink's message points at, what it says)
    "syntax": ("-- a comment\nSELECT device_id AS meter_id\nFROMM readings_deduped\n", 3, "Encountered"),
    "unknown table": (
        "SELECT device_id AS meter_id,\n  ts AS night\nFROM landing_meters\n",
        3,
        "landing_meters",
    ),
    "unknown column": ("SELECT device_id AS meter_id,\n  flux AS night\nFROM readings_deduped\n", 2, "flux"),
}


@pytest.mark.parametrize("case", sorted(BAD_SQL))
def test_a_bad_sql_job_is_refused_with_file_line_and_flinks_reason(
    city_config: Callable[..., Path], tmp_path: Path, case: str
) -> None:
    sql, line, reason = BAD_SQL[case]
    job_file = tmp_path / "job.sql"
    job_file.write_text(sql)
    message = refused(config_of(city_config(pipelines=pipelines(water_leak=water_leak_job(job_file)))))
    assert f"{job_file}:{line}: " in message and reason in message, message


def test_a_type_other_than_declared_and_an_updating_result_are_refused(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    wrong_type = tmp_path / "wrong_type.sql"
    wrong_type.write_text(SAMPLE_SQL.read_text().replace("COUNT(*) AS readings", "'many' AS readings"))
    message = refused(config_of(city_config(pipelines=pipelines(water_leak=water_leak_job(wrong_type)))))
    line = next(i for i, t in enumerate(wrong_type.read_text().splitlines(), 1) if "AS readings" in t)
    assert f"{wrong_type}:{line}: output night_flow: column readings is declared bigint" in message, message

    # Without a window, the count of a meter changes with every reading: the
    # append-only lake cannot take it in streaming mode, Flink's planner says.
    updating = tmp_path / "updating.sql"
    updating.write_text(
        "SELECT device_id AS meter_id, MAX(ts) AS night, MIN(`value`) AS min_flow,\n"
        "  AVG(`value`) AS avg_flow, COUNT(*) AS readings, MIN(`value`) > 0 AS leak_suspected\n"
        "FROM readings_deduped GROUP BY device_id\n"
    )
    message = refused(config_of(city_config(pipelines=pipelines(water_leak=water_leak_job(updating)))))
    assert str(updating) in message and "streaming mode" in message and "update" in message, message


def test_a_module_job_error_points_at_its_own_line(city_config: Callable[..., Path], tmp_path: Path) -> None:
    package = tmp_path / "cityjobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "leaks.py").write_text(
        "def transform(t_env, config):\n"
        "    night = t_env.sql_query('SELECT device_id AS meter_id FROM readings_deduped')\n"
        "    return {'night_flow': t_env.sql_query('SELECT * FROM nowhere')}\n"
    )
    job = {"module": "cityjobs.leaks", "path": str(tmp_path), "inputs": ["readings"],
           "outputs": {"night_flow": OUTPUT}}  # fmt: skip
    message = refused(config_of(city_config(pipelines=pipelines(leaks=job))), "leaks")
    assert f"{package / 'leaks.py'}:3: " in message and "nowhere" in message, message


def test_a_changed_schema_of_an_existing_output_is_refused(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = config_of(city_config(pipelines=pipelines(water_leak=water_leak_job())))
    land(DataLayout(config.data_dir), landing_files()[0])
    runner.run(config, "water_leak", "batch")
    changed = {**OUTPUT, "columns": {**OUTPUT["columns"], "max_flow": "double"}}  # type: ignore[dict-item]
    job = water_leak_job(outputs={"night_flow": changed})
    path = city_config(pipelines=pipelines(water_leak=job))
    ran = subprocess.run(
        [*CITYLAKE, "pipeline", "run", "water_leak", "--mode", "batch", "--config", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 2, ran.stdout + ran.stderr
    said = " ".join((ran.stdout + ran.stderr).split())
    assert "night_flow" in said and "another schema" in said and "max_flow double" in said, said
    assert f"{path}:" in said


FLOW_TOTALS_SQL = """SELECT device_id, metric, CAST(COUNT(*) AS BIGINT) AS n, SUM(`value`) AS total
FROM lake_readings
GROUP BY device_id, metric
"""


def test_a_batch_job_reads_a_lake_table_as_its_snapshot(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    """`flow_totals` reads the lake table `readings` (lake_inputs) that the
    built-in job wrote in two runs, after compaction left the two replaced
    files in the directory beside its output: each reading counts once."""
    from collections import defaultdict

    from citylake.lake.compaction import compact_table
    from citylake.lake.manifest import TableLog
    from citylake.pipelines.lake_inputs import LakeInputRefused

    sql = tmp_path / "flow_totals.sql"
    sql.write_text(FLOW_TOTALS_SQL)
    columns = {"device_id": "string", "metric": "string", "n": "bigint", "total": "double"}
    flow_totals = {
        "sql": str(sql),
        "lake_inputs": ["readings"],
        "outputs": {"flow_totals": {"columns": columns}},
    }
    path = city_config(pipelines=pipelines(flow_totals=flow_totals))
    config = config_of(path)
    layout = DataLayout(config.data_dir)
    landed: dict[tuple[str, str, int], float] = {}
    for rows in landing_files():
        land(layout, rows)
        landed.update({(r["device_id"], r["metric"], r["ts"]): r["value"] for r in rows})
    # Two runs of the readings job: night 1's partition gets two files.
    cut = at(NIGHT1, 3, 0)
    runner.run(config, "readings", "batch", time_range=(NIGHT1 - timedelta(days=1), cut))
    runner.run(config, "readings", "batch", time_range=(cut, NIGHT2 + timedelta(days=5)))
    compacted = compact_table(layout, table("readings"), min_files=2)
    assert compacted.files_in >= 2, compacted
    on_disk = [
        p for p in (layout.lake_root / "readings").rglob("*") if p.is_file() and not p.name.startswith(".")
    ]
    # The replaced files stay until vacuum: a scan of the directory would read them twice.
    assert len(on_disk) > len(TableLog(layout, table("readings")).snapshot().files)

    runner.run(config, "flow_totals", "batch")
    files = [str(p) for p in (layout.lake_root / "flow_totals").rglob("part-*")]
    got = sorted(
        ds.dataset(files, format="parquet").to_table().to_pylist(),
        key=lambda r: (r["device_id"], r["metric"]),
    )
    expected: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (device, metric, _), value in landed.items():
        expected[(device, metric)].append(value)
    assert [(r["device_id"], r["metric"], r["n"]) for r in got] == [
        (d, m, len(v)) for (d, m), v in sorted(expected.items())
    ]
    for row in got:
        assert row["total"] == pytest.approx(sum(expected[(row["device_id"], row["metric"])])), row

    # Streaming over the lake is refused before anything runs, saying why.
    catalog = job_catalog(config, path)
    with pytest.raises(JobRefused, match="batch mode only"):
        check_job(config, catalog, "flow_totals", path, modes=("streaming",))
    with pytest.raises(LakeInputRefused, match="batch mode only"):
        runner.start(config, "flow_totals", "streaming")
    check_job(config, catalog, "flow_totals", path)  # both modes asked: batch is checked, and passes
