"""``POST /v1/sql``: analyst SQL on the lake, read-only and within limits.

Order of the checks, cheapest first: size of the text, the statement
(services/query/sandbox.py), a free SQL worker, then in that worker
(services/query/sql_worker.py, a process under a hard memory limit) the
statement again and its execution under a
cancelling time limit while rows and bytes are counted as they stream out of
DuckDB, so an oversized result is refused before it is all in memory.
"""

# No `from __future__ import annotations`: FastAPI reads these routes'
# annotations at run time, and some name limits from the factory's config.
from typing import Annotated

import duckdb
from fastapi import APIRouter, Body, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from citylake.config import ServiceConfig
from citylake.services.query.deps import lake_cursor
from citylake.services.query.errors import QueryError, error_responses
from citylake.services.query.models import SqlResult
from citylake.services.query.negotiation import Representation, negotiate, tabular_openapi
from citylake.services.query.sandbox import check_statement
from citylake.services.query.sql_encoding import SqlFormat
from citylake.services.query.sql_pool import SqlWorkers

DESCRIPTION = """\
Runs one read-only SQL statement on the lake (DuckDB dialect; tables:
readings, readings_1m, readings_1h, device_events, devices, alerts, rejected,
and the tables data engineers' own jobs write, `pipelines.user_jobs`).

Only a single SELECT is accepted (also WITH, FROM-first, DESCRIBE, SHOW,
SUMMARIZE), as DuckDB's own parser reads it. Files outside the lake, URLs,
ATTACH, INSTALL/LOAD, PRAGMA, SET and table functions other than readers are
refused. Limits (city.yaml `services.query`): `sql_max_rows` rows,
`sql_max_bytes` bytes of response, `sql_timeout_s` seconds (the query is
cancelled), `sql_max_chars` characters of SQL, `sql_max_concurrent` queries
at once, each in a worker process of at most `sql_memory_mb` MiB spilling at
most `sql_temp_max_mb` MiB. Tables are named, never files (`FROM 'x.csv'` is
refused). A refusal is a 400 (408 for the time limit, 413 for the SQL text,
429 when busy) whose `detail` says what was wrong and whose `limit` names the
limit hit.

The result is JSON (`columns`, `rows`, `row_count`) unless `format` says
otherwise or, without `format`, the Accept header asks for
`application/vnd.apache.arrow.stream`.
"""


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(
        min_length=1, description="one SELECT statement", examples=["SELECT count(*) FROM readings"]
    )
    format: SqlFormat | None = Field(
        default=None, description="json, arrow (Arrow IPC stream), csv or parquet; default from Accept"
    )


def router(config: ServiceConfig, workers: SqlWorkers) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["sql"])

    @api.post(
        "/sql",
        response_model=SqlResult,
        summary="Run one read-only SQL query on the lake",
        description=DESCRIPTION,
        responses={
            **tabular_openapi("the result: JSON, or Arrow, CSV or Parquet as asked"),
            **error_responses(400, 401, 408, 413, 429, 503),
        },
    )
    def run_sql(
        request: Request,
        body: Annotated[SqlRequest, Body()],
        cursor: Annotated[duckdb.DuckDBPyConnection, Depends(lake_cursor)],
    ) -> Response:
        if len(body.sql) > config.sql_max_chars:
            raise QueryError(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"the SQL text is {len(body.sql)} characters; the limit is {config.sql_max_chars}",
                "sql_max_chars",
            )
        # Here first, on the service's own locked-down lake: a refused statement
        # takes no worker. The worker checks it again on its own database.
        check_statement(cursor, body.sql)
        fmt = body.format or (
            SqlFormat.arrow
            if negotiate(request.headers.get("accept")) is Representation.arrow
            else SqlFormat.json
        )
        answer = workers.run(body.sql, fmt.value)
        return Response(
            answer.content,
            media_type=answer.media_type,
            headers={"Vary": "Accept", "X-Row-Count": str(answer.rows)},
        )

    return api
