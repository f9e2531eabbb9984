"""One analyst query, inside a SQL worker (services/query/sql_worker.py):
checked by the sandbox, run under a cancelling time limit while rows and bytes
are counted as they stream out of DuckDB, then encoded. Every outcome is a
frame header and body: the answer, or the error the service will send.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from citylake.config import ServiceConfig
from citylake.services.lakeaccess import LakeUnavailable
from citylake.services.query.deadline import deadline
from citylake.services.query.errors import QueryError, bad_request
from citylake.services.query.sandbox import SandboxedLake, check_statement
from citylake.services.query.sql_encoding import MEDIA_TYPES, SqlFormat, encode

# One DuckDB vector: small enough that the byte count stops a result of wide
# rows soon after it passes the limit.
_BATCH_ROWS = 2048
# Arrow's in-memory size and the encoded size differ (JSON of small integers is
# smaller, of doubles larger); reading stops at this multiple of the byte limit
# to bound memory, and the encoded body is checked exactly afterwards.
_ARROW_BYTES_FACTOR = 4


def read_limited(result: duckdb.DuckDBPyConnection, max_rows: int, max_bytes: int) -> pa.Table:
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


def _out_of_memory(config: ServiceConfig, exc: BaseException) -> QueryError:
    return bad_request(
        f"the query needs more memory than a SQL worker may use ({config.sql_memory_mb} MiB): {exc}; "
        "aggregate, select fewer or narrower columns, or add a LIMIT",
        "sql_memory_mb",
    )


def _answer(lake: SandboxedLake, config: ServiceConfig, sql: str, fmt: SqlFormat) -> tuple[bytes, int]:
    try:
        cursor = lake.cursor()
    except (duckdb.Error, LakeUnavailable) as exc:
        raise QueryError(503, f"the lake cannot be read now: {exc}") from exc
    try:
        statement = check_statement(cursor, sql)
        try:
            with deadline(cursor, config.sql_timeout_s, "sql_timeout_s"):
                result = cursor.execute(statement)
                types = [str(column[1]) for column in result.description or []]
                table = read_limited(result, config.sql_max_rows, config.sql_max_bytes)
        except duckdb.OutOfMemoryException as exc:
            raise _out_of_memory(config, exc) from None
        except duckdb.Error as exc:
            raise bad_request(str(exc)) from None
        except (pa.ArrowException, OSError) as exc:
            # Errors raised while rows stream out (a cast failing at row 3M)
            # surface through Arrow's reader; they are still the query's.
            raise bad_request(str(exc)) from None
    finally:
        cursor.close()
    content = encode(table, types, fmt)
    if len(content) > config.sql_max_bytes:
        raise bad_request(
            f"the {fmt.value} result is {len(content)} bytes; the limit is {config.sql_max_bytes}; "
            "select fewer rows or columns",
            "sql_max_bytes",
        )
    return content, table.num_rows


def run_one(
    lake: SandboxedLake, config: ServiceConfig, sql: str, fmt_name: str
) -> tuple[dict[str, object], bytes]:
    fmt = SqlFormat(fmt_name)
    try:
        content, rows = _answer(lake, config, sql, fmt)
    except QueryError as exc:
        return {"status": exc.status_code, "detail": exc.detail, "limit": exc.limit}, b""
    except MemoryError as exc:
        error = _out_of_memory(config, exc)
        return {"status": error.status_code, "detail": error.detail, "limit": error.limit}, b""
    return {"status": 200, "media_type": MEDIA_TYPES[fmt], "rows": rows}, content
