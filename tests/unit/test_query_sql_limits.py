"""The SQL endpoint's resource bounds and its closed replacement scans, as an
attacker would try them against the real app (real DuckDB, real SQL worker
processes, the test lake): files named as tables are refused, spill and
threads are what the config says, and a flood of typed requests past
``max_concurrent_requests`` is answered 429 and counted."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.query_lake import build_lake, client

SECRET = "hunter2-in-the-lake"


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    build_lake(data)
    # Inside the lake, so DuckDB's allowed_directories lets a reader reach it:
    # only the statement check stands between it and the caller.
    (data / "lake" / "x").mkdir(parents=True)
    (data / "lake" / "x" / "secret.csv").write_text(f"user,password\nroot,{SECRET}\n")
    return data


def sql(http: TestClient, query: str) -> tuple[int, dict[str, object]]:
    response = http.post("/v1/sql", json={"sql": query})
    return response.status_code, response.json()


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM '{lake}/lake/x/*.csv'",
        "SELECT * FROM '{lake}/lake/x/secret.csv'",
        'SELECT * FROM "{lake}/lake/x/secret.csv"',
        "FROM '{lake}/lake/x/secret.csv'",
        "SUMMARIZE '{lake}/lake/x/secret.csv'",
        "DESCRIBE '{lake}/lake/x/secret.csv'",
        "SHOW '{lake}/lake/x/secret.csv'",
        "SELECT (SELECT max(password) FROM '{lake}/lake/x/secret.csv')",
        "WITH t AS (SELECT * FROM '{lake}/lake/x/secret.csv') SELECT * FROM t",
        "SELECT * FROM readings, '{lake}/lake/x/secret.csv' LIMIT 1",
    ],
)
def test_replacement_scans_of_lake_files_are_refused(lake: Path, query: str) -> None:
    with client(lake) as http:
        status, body = sql(http, query.format(lake=lake.absolute()))
        assert status == 400, body
        assert "is not a table name" in str(body["detail"])
        assert SECRET not in str(body)


def test_dotted_names_that_are_files_are_refused(lake: Path) -> None:
    # x.csv reads as schema x, table csv, and DuckDB still tries the file x.csv.
    with client(lake) as http:
        status, body = sql(http, "SELECT * FROM secret.csv")
        assert status == 400, body
        assert "no schema or database 'secret'" in str(body["detail"])
        # Real schemas still work.
        assert sql(http, "SELECT count(*) FROM information_schema.tables")[0] == 200
        assert sql(http, "SELECT count(*) FROM main.readings")[0] == 200


def test_spill_and_threads_are_bounded_as_configured(lake: Path) -> None:
    with client(lake, sql_temp_max_mb=96, duckdb_threads=1) as http:
        status, body = sql(
            http,
            "SELECT current_setting('temp_directory'), current_setting('max_temp_directory_size'), "
            "current_setting('threads'), current_setting('python_enable_replacements')",
        )
        assert status == 200, body
        rows = body["rows"]
        assert isinstance(rows, list)
        temp_dir, temp_max, threads, python_scans = rows[0]
        assert Path(temp_dir).parent == lake.absolute() / "tmp" / "query-sql"
        assert temp_max in ("96.0 MiB", "100.6 MB"), temp_max  # DuckDB prints sizes its own way
        assert (threads, python_scans) == (1, False)


def test_a_flood_of_typed_requests_is_answered_within_the_bound(lake: Path) -> None:
    # Two slow SQL queries hold both request slots; every typed request that
    # arrives meanwhile must be refused at once, not queued behind them.
    with client(lake, max_concurrent_requests=2, sql_max_concurrent=2, sql_timeout_s=4) as http:
        assert sql(http, "SELECT 1")[0] == 200  # a worker started before the clock runs
        slow = [
            threading.Thread(target=sql, args=(http, "SELECT count(*) FROM range(1000000000000)"))
            for _ in range(2)
        ]
        for thread in slow:
            thread.start()
        time.sleep(1.0)
        answers: list[tuple[int, str | None, float]] = []

        def typed() -> None:
            started = time.monotonic()
            response = http.get("/v1/devices/air-1/latest")
            limit = response.json().get("limit") if response.status_code != 200 else None
            answers.append((response.status_code, limit, time.monotonic() - started))

        flood = [threading.Thread(target=typed) for _ in range(30)]
        for thread in flood:
            thread.start()
        for thread in flood:
            thread.join()
        busy = [a for a in answers if a[0] == 429]
        assert len(busy) == 30, answers
        assert {a[1] for a in busy} == {"max_concurrent_requests"}
        assert max(a[2] for a in busy) < 3, "429s must not wait for a slot"
        assert http.get("/healthz").status_code == 200  # probes are never refused
        metrics = http.get("/metrics").text
        assert "citylake_query_requests_refused_busy_total 30.0" in metrics
        for thread in slow:
            thread.join()
        assert http.get("/v1/devices/air-1/latest").status_code == 200  # the slots came back
