"""``POST /v1/sql``: answers, formats, limits, and hostile statements refused
by the parser or the sandbox, never by a 500."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from tests.query_lake import ARROW, DEVICES, MINUTES, build_lake, client

READINGS = len(DEVICES) * MINUTES * 2


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    build_lake(tmp_path / "data")
    (tmp_path / "secret.csv").write_text("user,password\nroot,hunter2\n")
    return tmp_path / "data"


def sql(http: TestClient, query: str, **body: object) -> tuple[int, dict[str, object]]:
    response = http.post("/v1/sql", json={"sql": query, **body})
    return response.status_code, response.json()


def test_select_answers_columns_and_rows(lake: Path) -> None:
    with client(lake) as http:
        status, body = sql(
            http,
            "SELECT d.type, count(*) AS n, sum(r.quality) AS q FROM readings r "
            "JOIN devices d USING (device_id) GROUP BY ALL ORDER BY 1",
        )
        assert status == 200
        assert body == {
            "columns": [
                {"name": "type", "type": "VARCHAR"},
                {"name": "n", "type": "BIGINT"},
                {"name": "q", "type": "HUGEINT"},
            ],
            "rows": [["air_quality", 40, 0], ["ipc", 20, 0]],
            "row_count": 2,
        }


@pytest.mark.parametrize(
    "query",
    [
        "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
        "FROM readings_1m LIMIT 1",
        "DESCRIBE readings",
        "SHOW TABLES",
        "SUMMARIZE devices",
        "SELECT * FROM duckdb_views() WHERE NOT internal",
        "SELECT count(*) FROM range(10)",
        "SELECT 1 /* a comment; with a semicolon */",
        "SELECT 1;",
        "select count(*) from READINGS",
    ],
)
def test_read_only_forms_are_allowed(lake: Path, query: str) -> None:
    with client(lake) as http:
        status, body = sql(http, query)
        assert status == 200, body


def test_lake_files_can_be_read_directly(lake: Path) -> None:
    with client(lake) as http:
        glob = f"{lake.absolute()}/lake/readings/*/part-*"
        status, body = sql(http, f"SELECT count(*) FROM read_parquet('{glob}')")
        assert (status, body["rows"]) == (200, [[READINGS]])


HOSTILE = [
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv is not allowed"),
    ("SELECT * FROM read_text('/etc/passwd')", "read_text is not allowed"),
    ("SELECT * FROM '/etc/passwd'", "is not a table name"),
    ("SELECT * FROM '{lake}/../secret.csv'", "is not a table name"),
    ("SELECT * FROM read_parquet('/etc/passwd')", "disabled by configuration"),
    ("SELECT * FROM read_parquet('{lake}/../secret.csv')", "disabled by configuration"),
    ("SELECT * FROM glob('/*')", "disabled by configuration"),
    ("SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')", "disabled by configuration"),
    ("SELECT * FROM (SELECT * FROM read_blob('/etc/passwd'))", "read_blob is not allowed"),
    ("SELECT (SELECT count(*) FROM read_csv_auto('/etc/passwd'))", "read_csv_auto is not allowed"),
    ("SELECT * FROM query('DROP VIEW readings')", "query is not allowed"),
    ("SELECT * FROM checkpoint()", "checkpoint is not allowed"),
    ("ATTACH '/tmp/x.db' AS x", "got ATTACH"),
    ("ATTACH '{lake}/lake/x.db' AS x", "got ATTACH"),
    ("DETACH memory", "got DETACH"),
    ("INSTALL httpfs", "got LOAD"),
    ("LOAD httpfs", "got LOAD"),
    ("PRAGMA enable_profiling", "got PRAGMA"),
    ("SET enable_external_access = true", "got SET"),
    ("RESET lock_configuration", "got SET"),
    ("SELECT 1; DROP VIEW readings", "exactly one SQL statement, got 2"),
    ("SELECT 1; -- harmless?\nDROP VIEW readings", "exactly one SQL statement, got 2"),
    ("SELECT 1 /* */; /* */ COPY readings TO '/tmp/out.csv'", "exactly one SQL statement, got 2"),
    ("DROP VIEW readings", "got DROP"),
    ("CREATE TABLE t AS SELECT * FROM readings", "got CREATE"),
    ("CREATE OR REPLACE VIEW readings AS SELECT 1", "got CREATE"),
    ("INSERT INTO readings SELECT * FROM readings", "got INSERT"),
    ("COPY readings TO '/tmp/out.csv'", "got COPY"),
    ("EXPORT DATABASE '/tmp/dump'", "got EXPORT"),
    ("CALL checkpoint()", "got CALL"),
    ("EXPLAIN ANALYZE SELECT 1", "got EXPLAIN"),
    ("PIVOT readings ON metric USING first(value)", "exactly one SQL statement"),
    ("SELEC 1", "Parser Error"),
    ("SELECT nope FROM readings", "Binder Error"),
    ("SELECT * FROM no_such_table", "Catalog Error"),
    ("SELECT 1/0::INT, 'x'::INT", "Conversion Error"),
    ("SELECT $1", "prepared statement"),
    ("", "at least 1 character"),
    ("-- only a comment", "got 0"),
    ("SELECT " + "(" * 30000 + "1" + ")" * 30000, "Parser Error"),
]


@pytest.mark.parametrize(("query", "fragment"), HOSTILE)
def test_hostile_sql_is_refused_with_the_reason(lake: Path, query: str, fragment: str) -> None:
    with client(lake) as http:
        response = http.post("/v1/sql", json={"sql": query.format(lake=lake.absolute())})
        assert response.status_code in (400, 422), response.text
        assert fragment in response.text
        assert "root:" not in response.text and "hunter2" not in response.text
        # Nothing was changed: the views are intact and nothing was written.
        status, body = sql(http, "SELECT count(*) FROM readings")
        assert (status, body["rows"]) == (200, [[READINGS]])
    assert not Path("/tmp/out.csv").exists()
    assert not (lake / "lake" / "x.db").exists()


def test_the_configuration_stays_locked(lake: Path) -> None:
    with client(lake) as http:
        _, body = sql(
            http,
            "SELECT name, value FROM duckdb_settings() WHERE name IN "
            "('enable_external_access', 'lock_configuration', 'autoload_known_extensions') ORDER BY name",
        )
        assert body["rows"] == [
            ["autoload_known_extensions", "false"],
            ["enable_external_access", "false"],
            ["lock_configuration", "true"],
        ]


def test_formats(lake: Path) -> None:
    query = "SELECT device_id, ts, value FROM readings WHERE metric = 'temp' ORDER BY ts, device_id LIMIT 3"
    with client(lake) as http:
        by_format = http.post("/v1/sql", json={"sql": query, "format": "arrow"})
        assert by_format.headers["content-type"] == ARROW
        table = pa.ipc.open_stream(by_format.content).read_all()
        assert table.num_rows == 3
        assert by_format.headers["X-Row-Count"] == "3"
        by_accept = http.post("/v1/sql", json={"sql": query}, headers={"Accept": ARROW})
        assert pa.ipc.open_stream(by_accept.content).read_all().equals(table)
        csv = http.post("/v1/sql", json={"sql": query, "format": "csv"})
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.splitlines()[0] == '"device_id","ts","value"'
        assert "2026-11-25T08:00:00" in csv.text
        parquet = http.post("/v1/sql", json={"sql": query, "format": "parquet"})
        assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 3
        as_json = http.post("/v1/sql", json={"sql": query}).json()
        assert as_json["rows"][0] == ["air-1", "2026-11-25T08:00:00.000000Z", 20.0]
        nested = http.post("/v1/sql", json={"sql": "SELECT [1, 2] AS l", "format": "csv"})
        assert nested.status_code == 400
        assert "ask for format json or arrow" in nested.json()["detail"]
        assert http.post("/v1/sql", json={"sql": query, "format": "xml"}).status_code == 422


def test_every_duckdb_type_has_a_json_form(lake: Path) -> None:
    query = """
        SELECT 1.50::DECIMAL(10,2) AS dec, 170141183460469231731687303715884105727::HUGEINT AS huge,
               sum(i) AS hugesum, INTERVAL 1 DAY + INTERVAL 2 HOUR AS span, '\\xFF'::BLOB AS blob,
               TIMESTAMP_NS '2026-11-25 08:00:00.123456789' AS nanos,
               TIMESTAMPTZ '2026-11-25 16:00:00+08' AS tz,
               DATE '2026-11-25' AS day, TIME '08:00:00' AS tod, MAP {'k': 1} AS m, {'a': [1, NULL]} AS s,
               'nan'::DOUBLE AS nan, 18446744073709551615::UBIGINT AS ubig, uuid() IS NOT NULL AS u,
               1 AS dup, 2 AS dup
        FROM range(3) t(i)
    """
    with client(lake) as http:
        status, body = sql(http, query)
        assert status == 200, body
        rows = body["rows"]
        assert isinstance(rows, list) and len(rows) == 1
        assert rows[0] == [
            1.5,
            "170141183460469231731687303715884105727",
            3,
            "P0M1DT7200S",
            "\\xff",
            "2026-11-25T08:00:00.123456789",
            "2026-11-25T08:00:00.000000Z",
            "2026-11-25",
            "08:00:00",
            [["k", 1]],
            {"a": [1, None]},
            None,
            18446744073709551615,
            True,
            1,
            2,
        ]


def test_row_and_byte_limits_name_the_limit(lake: Path) -> None:
    with client(lake, sql_max_rows=100, sql_max_bytes=2000) as http:
        status, body = sql(http, "SELECT * FROM range(101)")
        assert (status, body["limit"]) == (400, "sql_max_rows")
        assert sql(http, "SELECT * FROM range(100)")[0] == 200
        status, body = sql(http, "SELECT repeat('x', 100) FROM range(50)")
        assert (status, body["limit"]) == (400, "sql_max_bytes")
        huge = http.post("/v1/sql", json={"sql": "SELECT repeat('x', 1000000) FROM range(50)"})
        assert huge.status_code == 400
        assert huge.json()["limit"] == "sql_max_bytes"


def test_a_slow_query_is_cancelled_and_the_service_goes_on(lake: Path) -> None:
    with client(lake, sql_timeout_s=0.5) as http:
        started = time.monotonic()
        status, body = sql(http, "SELECT count(*) FROM range(1000000000000) a(i) WHERE i % 7 = 3")
        elapsed = time.monotonic() - started
        assert (status, body["limit"]) == (408, "sql_timeout_s")
        assert "0.5 s" in str(body["detail"])
        assert elapsed < 5, f"cancellation took {elapsed:.1f} s"
        assert sql(http, "SELECT count(*) FROM readings")[1]["rows"] == [[READINGS]]


def test_concurrent_queries_beyond_the_limit_are_429(lake: Path) -> None:
    with client(lake, sql_max_concurrent=1, sql_timeout_s=3) as http:
        slow_answer: list[tuple[int, dict[str, object]]] = []
        slow = threading.Thread(
            target=lambda: slow_answer.append(sql(http, "SELECT count(*) FROM range(1000000000000)"))
        )
        slow.start()
        time.sleep(0.3)  # let it take the only slot
        answers = []
        while slow.is_alive():
            answers.append(sql(http, "SELECT 1"))
            if answers[-1][0] == 429:
                break
            time.sleep(0.05)
        slow.join()
        assert slow_answer[0][0] == 408
        assert answers and answers[-1][0] == 429, answers
        assert answers[-1][1]["limit"] == "sql_max_concurrent"
        assert sql(http, "SELECT 1")[0] == 200  # the slot came back


def test_long_sql_and_big_bodies_are_413(lake: Path) -> None:
    with client(lake, sql_max_chars=100, max_request_bytes=4096) as http:
        long_sql = http.post("/v1/sql", json={"sql": "SELECT " + " " * 100 + "1"})
        assert long_sql.status_code == 413
        assert long_sql.json()["limit"] == "sql_max_chars"
        declared = http.post(
            "/v1/sql", content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"}
        )
        assert declared.status_code == 413
        assert declared.json()["limit"] == "max_request_bytes"

        def chunks() -> object:
            for _ in range(10):
                yield b" " * 1000

        chunked = http.post("/v1/sql", content=chunks(), headers={"content-type": "application/json"})
        assert chunked.status_code == 413
        assert chunked.json()["limit"] == "max_request_bytes"
        assert sql(http, "SELECT 1")[0] == 200


def test_malformed_bodies_are_4xx_with_a_reason(lake: Path) -> None:
    with client(lake) as http:
        latin = http.post(
            "/v1/sql", content=b'{"sql": "SELECT \xe9"}', headers={"content-type": "application/json"}
        )
        assert latin.status_code == 400
        assert "not UTF-8" in latin.json()["detail"]
        for body in [
            b"{",
            b"[]",
            b'{"sql": 1}',
            b'{"query": "SELECT 1"}',
            b'{"sql": "SELECT 1", "x": 1}',
            b"null",
        ]:
            response = http.post("/v1/sql", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 422, body
        nul = http.post("/v1/sql", json={"sql": "SELECT '\x00'"})
        assert nul.status_code in (200, 400)
