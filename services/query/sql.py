"""``POST /v1/sql``: analyst SQL on the lake, read-only and within limits.

Order of the checks, cheapest first: size of the text, a free slot, the
statement (services/query/sandbox.py), then execution under a cancelling time
limit while rows and bytes are counted as they stream out of DuckDB, so an
oversized result is refused before it is all in memory.
"""

# No `from __future__ import annotations`: FastAPI reads these routes'
# annotations at run time, and some name limits from the factory's config.
import threading
from typing import Annotated

import duckdb
import pyarrow as pa
from fastapi import APIRouter, Body, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from citylake.config import ServiceConfig
from citylake.services.query.deadline import deadline
from citylake.services.query.deps import lake_cursor
from citylake.services.query.errors import QueryError, bad_request, error_responses
from citylake.services.query.models import SqlResult
from citylake.services.query.negotiation import Representation, negotiate, tabular_openapi
from citylake.services.query.sandbox import check_statement
from citylake.services.query.sql_encoding import MEDIA_TYPES, SqlFormat, encode

# One DuckDB vector: small enough that the byte count stops a result of wide
# rows soon after it passes the limit.
_BATCH_ROWS = 2048
# Arrow's in-memory size and the encoded size differ (JSON of small integers is
# smaller, of doubles larger); reading stops at this multiple of the byte limit
# to bound memory, and the encoded body is checked exactly afterwards.
_ARROW_BYTES_FACTOR = 4

DESCRIPTION = """\
Runs one read-only SQL statement on the lake (DuckDB dialect; tables:
readings, readings_1m, readings_1h, device_events, devices, alerts, rejected).

Only a single SELECT is accepted (also WITH, FROM-first, DESCRIBE, SHOW,
SUMMARIZE), as DuckDB's own parser reads it. Files outside the lake, URLs,
ATTACH, INSTALL/LOAD, PRAGMA, SET and table functions other than readers are
refused. Limits (city.yaml `services.query`): `sql_max_rows` rows,
`sql_max_bytes` bytes of response, `sql_timeout_s` seconds (the query is
cancelled), `sql_max_chars` characters of SQL, `sql_max_concurrent` queries
at once. A refusal is a 400 (408 for the time limit, 413 for the SQL text,
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


def _read_limited(result: duckdb.DuckDBPyConnection, max_rows: int, max_bytes: int) -> pa.Table:
    reader = result.to_arrow_reader(_BATCH_ROWS)
    batches = []
    rows = 0
    size = 0
    for batch in reader:
        rows += batch.num_rows
        size += batch.nbytes
        if rows > max_rows:
            raise bad_request(
                f"the result has more than {max_rows} rows; add a LIMIT, a narrower WHERE or an aggregate",
                "sql_max_rows",
            )
        if size > max_bytes * _ARROW_BYTES_FACTOR:
            raise bad_request(
                f"the result is larger than {max_bytes} bytes; select fewer rows or columns", "sql_max_bytes"
            )
        batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def router(config: ServiceConfig) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["sql"])
    slots = threading.BoundedSemaphore(config.sql_max_concurrent)

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
        if not slots.acquire(blocking=False):
            raise QueryError(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"{config.sql_max_concurrent} SQL queries are already running; retry shortly",
                "sql_max_concurrent",
            )
        try:
            statement = check_statement(cursor, body.sql)
            try:
                with deadline(cursor, config.sql_timeout_s, "sql_timeout_s"):
                    result = cursor.execute(statement)
                    types = [str(column[1]) for column in result.description or []]
                    table = _read_limited(result, config.sql_max_rows, config.sql_max_bytes)
            except duckdb.OutOfMemoryException as exc:
                raise bad_request(
                    f"{exc} (the service's DuckDB may use {config.memory_limit_mb} MiB)", "memory_limit_mb"
                ) from None
            except duckdb.Error as exc:
                raise bad_request(str(exc)) from None
            except (pa.ArrowException, OSError) as exc:
                # Errors raised while rows stream out (a cast failing at row 3M)
                # surface through Arrow's reader; they are still the query's.
                raise bad_request(str(exc)) from None
        finally:
            slots.release()
        fmt = body.format or (
            SqlFormat.arrow
            if negotiate(request.headers.get("accept")) is Representation.arrow
            else SqlFormat.json
        )
        content = encode(table, types, fmt)
        if len(content) > config.sql_max_bytes:
            raise bad_request(
                f"the {fmt.value} result is {len(content)} bytes; the limit is {config.sql_max_bytes}; "
                "select fewer rows or columns",
                "sql_max_bytes",
            )
        return Response(
            content,
            media_type=MEDIA_TYPES[fmt],
            headers={"Vary": "Accept", "X-Row-Count": str(table.num_rows)},
        )

    return api
