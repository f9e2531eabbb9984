"""User jobs without Flink: their declaration in city.yaml, the one list of
jobs, what is refused (with file, line and reason) before Flink plans them,
and their outputs as lake tables (registered, viewed, compacted, retained).
Flink's own refusals are in tests/integration/test_user_jobs.py."""

from __future__ import annotations

import importlib.metadata
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from citylake.config import ConfigError, LakeConfig, OutputTableConfig, load_config
from citylake.lake import Lake
from citylake.lake.catalog import all_views_sql
from citylake.lake.compaction import compact_table
from citylake.lake.maintenance import build_tasks
from citylake.lake.registry import Registration, SchemaChanged, lake_tables, register
from citylake.lake.retention import retain_table
from citylake.pipelines.catalog import LANDING_TABLES, JobRefused, job_catalog
from citylake.pipelines.check import flink_reason
from citylake.pipelines.jobs import JOB_NAMES, job
from citylake.pipelines.sql_client import init_sql
from citylake.pipelines.user_jobs import OutputMismatch, check_columns
from citylake.schemas import TABLES, DataLayout, table

COLUMNS = {"meter_id": "string", "night": "timestamp", "min_flow": "double", "readings": "bigint"}
OUTPUT: dict[str, Any] = {"time_column": "night", "required": ["meter_id", "night"], "columns": COLUMNS}


def write_config(tmp_path: Path, user_jobs: dict[str, Any], **pipelines: Any) -> Path:
    path = tmp_path / "city.yaml"
    document = {
        "site": "north",
        "data_dir": "data",
        "pipelines": {**pipelines, "user_jobs": user_jobs},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def sql_job(sql: str = "night.sql", **changes: Any) -> dict[str, Any]:
    return {"sql": sql, "inputs": ["readings"], "outputs": {"night_flow": OUTPUT}, **changes}


def problems_of(path: Path) -> list[str]:
    loaded = load_config(path)
    with pytest.raises(JobRefused) as caught:
        job_catalog(loaded.config, path, loaded.document, entry_points=False)
    return [str(p) for p in caught.value.problems]


# --- city.yaml -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "said"),
    [
        ({**sql_job(), "module": "x.y"}, "exactly one of `sql`"),
        ({"inputs": ["readings"], "outputs": {"night_flow": OUTPUT}}, "exactly one of `sql`"),
        (sql_job(outputs={"a": OUTPUT, "b": OUTPUT}), "writes one output table"),
        (sql_job(outputs={"a": {**OUTPUT, "time_column": "readings"}}), "of type timestamp"),
        (sql_job(outputs={"a": {"columns": {"date": "string"}}}), "partition column"),
        (sql_job(outputs={"a": {"columns": {"x": "decimal"}}}), "Input should be 'string'"),
        (sql_job(outputs={"a": {"columns": {"x": "int"}, "required": ["y"]}}), "not declared: y"),
        (sql_job(outputs={"Night-Flow": OUTPUT}), "String should match pattern"),
    ],
)
def test_a_bad_declaration_is_refused_with_its_line(tmp_path: Path, job: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, {"leaks": job}))
    message = str(caught.value)
    assert said in message and "pipelines.user_jobs.leaks" in message and "line " in message, message


def test_two_jobs_writing_one_table_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="user jobs a and b both write the table 'night_flow'"):
        load_config(write_config(tmp_path, {"a": sql_job(), "b": sql_job()}))


def test_paths_are_relative_to_city_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    config = load_config(write_config(tmp_path, {"leaks": sql_job("jobs/night.sql")})).config
    assert config.pipelines.user_jobs["leaks"].sql == tmp_path / "jobs" / "night.sql"


# --- the one list of jobs --------------------------------------------------------


def test_the_catalog_lists_built_in_jobs_then_user_jobs(tmp_path: Path) -> None:
    (tmp_path / "night.sql").write_text("SELECT 1\n")
    path = write_config(tmp_path, {"water_leak": sql_job(), "a_first": sql_job(outputs={"other": OUTPUT})})
    catalog = job_catalog(load_config(path).config, path, entry_points=False)
    assert catalog.names == (*JOB_NAMES, "a_first", "water_leak")
    job_set = catalog.job_set(["water_leak", "rollups", "readings"])
    assert job_set.names == ("readings", "rollups", "water_leak")
    assert [spec.name for spec in job_set.outputs] == ["readings", "readings_1m", "readings_1h", "night_flow"]
    assert job_set.inputs == [TABLES["readings"]]
    with pytest.raises(KeyError, match=r"known jobs: readings, .*, events, a_first, water_leak"):
        catalog.job_set(["leak"])


def test_scale_run_and_site_read_the_one_list(tmp_path: Path) -> None:
    from citylake.site import plan_site
    from citylake_devstack.scale import ALL_JOBS

    assert ALL_JOBS == JOB_NAMES
    (tmp_path / "night.sql").write_text("SELECT 1\n")
    path = write_config(tmp_path, {"water_leak": sql_job()}, jobs=["readings", "water_leak"])
    plan = plan_site(load_config(path), path)
    assert plan.unit("jobs").argv[3:6] == ("pipeline", "run", "readings,water_leak")
    wrong = write_config(tmp_path, {"water_leak": sql_job()}, jobs=["readings", "water_leaks"])
    with pytest.raises(KeyError, match="unknown job 'water_leaks'"):
        plan_site(load_config(wrong), wrong)


def test_landing_tables_are_the_built_in_jobs_inputs() -> None:
    assert set(LANDING_TABLES) == {name for n in JOB_NAMES for name in job(n).module.INPUTS}


def test_what_is_wrong_before_flink_is_said_with_city_yaml_lines(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        {"alerts": {"sql": "missing.sql", "inputs": ["readings", "meters"], "outputs": {"devices": OUTPUT}}},
    )
    lines = path.read_text().splitlines()

    def line_of(text: str) -> int:
        return next(i for i, t in enumerate(lines, 1) if text in t)

    assert problems_of(path) == [
        f"{path}:{line_of('alerts:')}: job name 'alerts' is a built-in job's; a user job needs a name of "
        f"its own (built-in: {', '.join(JOB_NAMES)})",
        f"{path}:{line_of('devices:')}: output 'devices' is a built-in table; a user job writes a table of "
        f"its own (built-in: {', '.join(TABLES)})",
        f"{path}:{line_of('- meters')}: input 'meters' is not a landing table; inputs: "
        "readings, device_events, devices, rejected "
        "(read as landing_<input>; readings also as readings_deduped); a lake table is read through "
        "`lake_inputs`, in batch mode",
        f"{path}:{line_of('sql:')}: sql file {tmp_path / 'missing.sql'} not found",
    ]


def test_an_entry_point_job_joins_the_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site_jobs_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "JOB = {'inputs': ['readings'], 'outputs': {'night_flow': {'columns': {'meter_id': 'string'}}}}\n"
        "def transform(t_env, config):\n    return {}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    point = SimpleNamespace(name="leaks", value="site_jobs_pkg")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [point])
    path = write_config(tmp_path, {})
    catalog = job_catalog(load_config(path).config, path)
    assert catalog.names[-1] == "leaks"
    assert catalog.user["leaks"].config.module == "site_jobs_pkg"
    assert [s.name for s in catalog.user["leaks"].outputs] == ["night_flow"]
    sys.modules.pop("site_jobs_pkg", None)


# --- held to the declared outputs ------------------------------------------------


def test_the_select_is_held_to_the_declared_columns() -> None:
    declared = {"meter_id": "string", "readings": "bigint", "min_flow": "double"}
    check_columns("o", declared, [("meter_id", "CHAR"), ("readings", "INTEGER"), ("min_flow", "DECIMAL")])
    with pytest.raises(OutputMismatch, match="no column min_flow") as missing:
        check_columns("o", declared, [("meter_id", "VARCHAR"), ("readings", "BIGINT")])
    assert missing.value.column == "min_flow"
    with pytest.raises(OutputMismatch, match="returns extra, which the output does not declare"):
        check_columns("o", declared, [("meter_id", "VARCHAR"), ("readings", "BIGINT"), ("min_flow", "DOUBLE"),
                                      ("extra", "INTEGER")])  # fmt: skip
    with pytest.raises(OutputMismatch, match="readings is declared bigint but the SELECT gives DOUBLE"):
        check_columns(
            "o", declared, [("meter_id", "VARCHAR"), ("readings", "DOUBLE"), ("min_flow", "DOUBLE")]
        )


def test_flinks_message_is_read_without_its_java_stack() -> None:
    text = (
        "An error occurred while calling o8.sqlQuery.\n: org.apache.flink.table.api.ValidationException: "
        "SQL validation failed. From line 3, column 6 to line 3, column 11: Object 'nosuch' not found\n"
        "\tat org.apache.flink.table.planner.calcite.FlinkPlannerImpl.validate(FlinkPlannerImpl.scala:119)\n"
    )
    assert flink_reason(text) == ("From line 3, column 6 to line 3, column 11: Object 'nosuch' not found", 3)
    parse = (
        ': org.apache.flink.table.api.SqlParserException: SQL parse failed. Encountered "src" at line 2, '
        'column 7.\nWas expecting one of:\n    <EOF> \n    "EXCEPT" ...\n\tat org.apache.Foo(Foo.java:1)\n'
    )
    message, line = flink_reason(parse)
    assert line == 2 and message.startswith('Encountered "src" at line 2, column 7.'), message


# --- a lake table like the others ------------------------------------------------


def registration(**output: Any) -> Registration:
    return Registration.declared("night_flow", "water_leak", OutputTableConfig(**{**OUTPUT, **output}))


def write_part(layout: DataLayout, day: str, name: str, rows: list[dict[str, Any]]) -> None:
    spec = lake_tables(layout)["night_flow"]
    directory = layout.lake(spec) / f"date={day}"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=spec.schema), directory / name)


def night(day: int, meter: str, readings: int) -> dict[str, Any]:
    return {
        "meter_id": meter,
        "night": datetime(2026, 11, day, tzinfo=UTC),
        "min_flow": 0.1,
        "readings": readings,
    }


def test_a_registered_table_is_viewed_compacted_and_retained(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    lake = Lake(layout)  # opened before the job registers its table, like a running service
    register(layout, registration())
    register(layout, registration(description="now described"))  # the same columns: accepted
    assert list(lake_tables(layout))[-1] == "night_flow"
    write_part(layout, "2026-11-24", "part-a-0", [night(24, "water-1", 12)])
    write_part(layout, "2026-11-24", "part-b-0", [night(24, "water-2", 6)])
    write_part(layout, "2026-11-25", "part-a-1", [night(25, "water-1", 2)])
    cursor = lake.cursor()
    assert cursor.execute("SELECT sum(readings), min(date) FROM night_flow").fetchone() == (
        20,
        date(2026, 11, 24),
    )
    assert "night_flow" in all_views_sql(layout)

    spec = lake_tables(layout)["night_flow"]
    assert compact_table(layout, spec, min_files=2).files_in == 2
    assert (
        retain_table(layout, spec, 1, today=date(2026, 11, 25), max_clock_lead_days=None).files_removed == 1
    )
    assert lake.cursor().execute("SELECT sum(readings) FROM night_flow").fetchone() == (2,)
    lake.close()
    tasks = build_tasks(layout, LakeConfig(retention_days={"night_flow": 30}))
    assert any("night_flow" in [s.name for s in getattr(t, "specs", [])] for t in tasks)


def test_a_changed_schema_is_refused_with_what_changed(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    register(layout, registration())
    with pytest.raises(SchemaChanged) as caught:
        register(layout, registration(columns={**COLUMNS, "readings": "double"}))
    message = str(caught.value)
    assert "readings bigint) -> (" in message and "readings double" in message, message
    assert "night_flow_v2" in message
    with pytest.raises(SchemaChanged, match="built-in citylake table"):
        register(layout, Registration.declared("readings", "x", OutputTableConfig(columns={"a": "int"})))


def test_the_sql_client_init_file_declares_landing_and_lake_tables(tmp_path: Path) -> None:
    (tmp_path / "night.sql").write_text("SELECT 1\n")
    config = load_config(write_config(tmp_path, {"water_leak": sql_job()})).config
    register(DataLayout(config.data_dir), registration())
    text = init_sql(config, "batch")
    assert "SET 'execution.runtime-mode' = 'batch';" in text
    for name in ("landing_readings_files", "lake_readings_1h", "lake_night_flow"):
        assert f"CREATE TEMPORARY TABLE {name} (" in text
    assert "CREATE TEMPORARY VIEW readings_deduped AS" in text
    # One statement per `;` at a line end: the SQL Client splits there.
    assert all(not line.lstrip().startswith("--") for line in text.splitlines())


def test_the_query_services_sql_endpoint_answers_from_a_user_table(tmp_path: Path) -> None:
    from tests.query_lake import build_lake, client

    data = tmp_path / "data"
    build_lake(data)
    layout = DataLayout(data)
    register(layout, registration())
    write_part(layout, "2026-11-24", "part-a-0", [night(24, "water-1", 12), night(24, "water-2", 6)])
    with client(data) as http:
        response = http.post("/v1/sql", json={"sql": "SELECT meter_id, readings FROM night_flow ORDER BY 1"})
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [["water-1", 12], ["water-2", 6]]


def test_a_job_must_read_something_and_lake_inputs_link_the_snapshot_only(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from citylake.config import UserJobConfig
    from citylake.pipelines.lake_inputs import LakeInputRefused, lake_input_specs, link_snapshot, new_run_dir
    from tests.lakedata import T0, reading, write_lake_readings

    with pytest.raises(ValidationError, match="name what the job reads"):
        UserJobConfig.model_validate({"sql": "x.sql", "outputs": {"night_flow": OUTPUT}})
    layout = DataLayout(tmp_path)
    write_lake_readings(tmp_path, [reading("d1", "temp", T0, 1.0)], "part-a")
    write_lake_readings(tmp_path, [reading("d1", "temp", T0 + timedelta(minutes=1), 2.0)], "part-b")
    assert compact_table(layout, table("readings"), min_files=2).files_in == 2
    run_dir = new_run_dir(layout, "job")
    linked = link_snapshot(layout, table("readings"), run_dir)
    # The two replaced files are still in the lake's directory; only the
    # compacted one is the table, and only it is linked.
    in_lake = [p for p in (layout.lake_root / "readings").rglob("*") if p.is_file()]
    assert len(in_lake) == 3, in_lake
    assert [p.name.startswith("compacted-") for p in linked.rglob("*") if p.is_file()] == [True]
    with pytest.raises(LakeInputRefused, match="'nowhere' is no lake table"):
        lake_input_specs(layout, ["nowhere"])
