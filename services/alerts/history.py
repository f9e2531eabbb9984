"""Alerts as the lake holds them (the ``alerts`` table, written by the Flink job).

The job may write an alert twice, once when it opens (``ended_at`` null) and
again when it closes; an alert's current state is its closed row if it has
one. Every read here takes that row, so an alert is never both active and closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import duckdb

State = Literal["active", "closed"]

_COLUMNS = (
    "alert_id",
    "device_id",
    "metric",
    "rule",
    "severity",
    "started_at",
    "ended_at",
    "value",
    "message",
)

_LATEST = f"""
WITH latest AS (
    SELECT {", ".join(_COLUMNS)}
    FROM alerts
    WHERE $device_id IS NULL OR device_id = $device_id
    QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY ended_at IS NULL, ended_at DESC) = 1
)
"""

_LIST_SQL = (
    _LATEST
    + f"""
SELECT {", ".join(_COLUMNS)} FROM latest
WHERE ($state IS NULL OR ($state = 'active') = (ended_at IS NULL))
  AND ($since IS NULL OR ended_at IS NULL OR ended_at >= $since)
  AND ($rule IS NULL OR rule = $rule)
  AND ($severity IS NULL OR severity = $severity)
ORDER BY started_at DESC, alert_id
LIMIT $limit
"""
)

_CHANGED_SQL = (
    _LATEST
    + f"""
SELECT {", ".join(_COLUMNS)} FROM latest
WHERE ended_at IS NULL OR ended_at >= $horizon
ORDER BY started_at, alert_id
"""
)


@dataclass(frozen=True)
class AlertFilter:
    state: State | None = None
    device_id: str | None = None
    since: datetime | None = None
    rule: str | None = None
    severity: str | None = None
    limit: int = 100


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = [dict(zip(_COLUMNS, values, strict=True)) for values in cursor.fetchall()]
    for row in rows:
        row["state"] = "active" if row["ended_at"] is None else "closed"
    return rows


def list_alerts(cursor: duckdb.DuckDBPyConnection, where: AlertFilter) -> list[dict[str, Any]]:
    """Newest first. ``since`` keeps alerts active at or after it: still open,
    or ended at or after it."""
    cursor.execute(
        _LIST_SQL,
        {
            "state": where.state,
            "device_id": where.device_id,
            "since": where.since,
            "rule": where.rule,
            "severity": where.severity,
            "limit": where.limit,
        },
    )
    return _rows(cursor)


def alerts_to_announce(cursor: duckdb.DuckDBPyConnection, horizon: datetime) -> list[dict[str, Any]]:
    """Every active alert and every alert closed at or after ``horizon``, oldest first."""
    cursor.execute(_CHANGED_SQL, {"device_id": None, "horizon": horizon})
    return _rows(cursor)
