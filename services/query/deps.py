"""What handlers depend on, injected so tests can override them."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
from fastapi import Request

from citylake.lake import Lake


def get_lake(request: Request) -> Lake:
    lake: Lake = request.app.state.lake
    return lake


def lake_cursor(request: Request) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor per request: DuckDB connections are not shared across threads."""
    cursor = get_lake(request).cursor()
    try:
        yield cursor
    finally:
        cursor.close()
