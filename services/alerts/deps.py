"""What handlers depend on, injected so tests can override them."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
from fastapi import Request

from citylake.services.alerts.rules import RuleBook


def get_rules(request: Request) -> RuleBook:
    rules: RuleBook = request.app.state.rules
    return rules


def lake_cursor(request: Request) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor per request: DuckDB connections are not shared across threads."""
    cursor = request.app.state.lake.cursor()
    try:
        yield cursor
    finally:
        cursor.close()
