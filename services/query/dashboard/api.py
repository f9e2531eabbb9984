"""The dashboard's JSON routes: devices for the map, alerts, lake stats.

Guarded like every other ``/v1`` route (the page that calls them is not; see
``page.py``). Live values come from the existing latest routes, so the page
polls those directly and nothing here duplicates them.
"""

# No `from __future__ import annotations`: FastAPI reads these routes'
# annotations at run time, and some name limits from the factory's config.
import threading
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import duckdb
import pyarrow as pa
from fastapi import APIRouter, Depends, Query

from citylake.config import ServiceConfig
from citylake.lake.stats import table_stats
from citylake.schemas import DataLayout
from citylake.services.district import DISTRICT_DOC, DISTRICT_SQL, DistrictFilter, DistrictQuery
from citylake.services.query.dashboard.models import (
    Bounds,
    DashboardAlert,
    DashboardAlerts,
    DashboardDevices,
    LakeStats,
    MapDevice,
    TableStat,
)
from citylake.services.query.deps import fetch, lake_cursor, lake_unreadable
from citylake.services.query.errors import error_responses

# The `devices` view already folds the lake's rows to one per device, so no
# second dedupe here. A position counts only when it is on the globe and not
# exactly 0,0: GB28181 catalogs send 0,0 for "unknown", and a marker off the
# coast of Africa would stretch the map of a Chinese city to half the world.
_PLACED = f"""
WITH placed AS (
    SELECT device_id, name, type, protocol, civil_code, district, address, longitude, latitude, status,
           last_seen,
           coalesce(longitude BETWEEN -180 AND 180 AND latitude BETWEEN -90 AND 90
                    AND NOT (longitude = 0 AND latitude = 0), false) AS located
    FROM devices
    WHERE {DISTRICT_SQL}
)
"""

_DEVICES_SQL = (
    _PLACED
    + """,
active AS (
    SELECT device_id, count(*) AS active_alerts FROM alerts WHERE ended_at IS NULL GROUP BY device_id
)
SELECT p.device_id, p.name, p.type, p.protocol, p.civil_code, p.district, p.address,
       CASE WHEN p.located THEN p.longitude END AS longitude,
       CASE WHEN p.located THEN p.latitude END AS latitude,
       p.status, p.last_seen, coalesce(a.active_alerts, 0) AS active_alerts
FROM placed p LEFT JOIN active a USING (device_id)
ORDER BY p.device_id
LIMIT $limit
"""
)

_DEVICES_SUMMARY_SQL = (
    _PLACED
    + """
SELECT count(*) AS total,
       count(*) FILTER (WHERE located) AS located,
       min(longitude) FILTER (WHERE located) AS min_lon,
       min(latitude) FILTER (WHERE located) AS min_lat,
       max(longitude) FILTER (WHERE located) AS max_lon,
       max(latitude) FILTER (WHERE located) AS max_lat
FROM placed
"""
)

# The `alerts` view already gives one row per alert (its closing row once it
# has one), so an alert is never listed both active and closed.
_ALERTS_SQL = """
SELECT a.alert_id, a.device_id, d.name AS device_name, a.metric, a.rule, a.severity,
       CASE WHEN a.ended_at IS NULL THEN 'active' ELSE 'closed' END AS state,
       a.started_at, a.ended_at, a."value", a.message,
       count(*) OVER () AS total
FROM alerts a LEFT JOIN devices d USING (device_id)
WHERE $state = 'all' OR ($state = 'active') = (a.ended_at IS NULL)
ORDER BY a.started_at DESC, a.alert_id
LIMIT $limit
"""

# Stats read every file's footer. A few dashboards polling a lake of many
# files should not each pay for that every few seconds; figures a few seconds
# old are as good for a summary table.
LAKE_STATS_TTL_S = 10.0


class AlertState(StrEnum):
    active = "active"
    closed = "closed"
    all = "all"


class _LakeStatsCache:
    """The last stats and when they were read; one reader at a time refreshes."""

    def __init__(self, layout: DataLayout, ttl_s: float) -> None:
        self.layout = layout
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._stats: LakeStats | None = None
        self._read_at = 0.0

    def get(self) -> LakeStats:
        with self._lock:
            if self._stats is None or time.monotonic() - self._read_at > self.ttl_s:
                computed_at = datetime.now(UTC)
                try:
                    stats = table_stats(self.layout)
                except (OSError, ValueError, pa.ArrowException) as exc:
                    # A damaged footer or a manifest that does not parse: the
                    # detail names it, as the other routes' 503s do.
                    raise lake_unreadable(exc) from exc
                self._stats = LakeStats(
                    tables=[
                        TableStat(
                            table=s.table,
                            version=s.version,
                            files=s.files,
                            rows=s.rows,
                            bytes=s.bytes,
                            first=s.first,
                            last=s.last,
                        )
                        for s in stats
                    ],
                    computed_at=computed_at,
                )
                self._read_at = time.monotonic()
            return self._stats


def router(config: ServiceConfig, layout: DataLayout) -> APIRouter:
    api = APIRouter(prefix="/v1/dashboard", tags=["dashboard"])
    device_limit = min(5000, config.page_max_rows)
    lake_stats = _LakeStatsCache(layout, LAKE_STATS_TTL_S)

    @api.get(
        "/devices",
        response_model=DashboardDevices,
        summary="Devices of the registry with position and status, for the map",
        description="The lake's `devices` table, one row per device in `device_id` order, with the "
        "number of its active alerts. `total`, `located` and `bounds` cover every matching device, "
        "so the map's frame does not depend on `limit`.\n\n**district**: " + DISTRICT_DOC,
        responses=error_responses(401, 408, 503),
    )
    def devices(
        cursor: Annotated[duckdb.DuckDBPyConnection, Depends(lake_cursor)],
        district: DistrictQuery = None,
        limit: Annotated[
            int, Query(ge=1, le=config.page_max_rows, description="most devices in the answer")
        ] = device_limit,
    ) -> DashboardDevices:
        where = DistrictFilter.parse(district).parameters()
        summary = fetch(cursor, _DEVICES_SUMMARY_SQL, where, config).to_pylist()[0]
        rows = fetch(cursor, _DEVICES_SQL, {**where, "limit": limit}, config).to_pylist()
        bounds = None
        if summary["located"]:
            bounds = Bounds(
                min_lon=summary["min_lon"],
                min_lat=summary["min_lat"],
                max_lon=summary["max_lon"],
                max_lat=summary["max_lat"],
            )
        return DashboardDevices(
            devices=[MapDevice.model_validate(row) for row in rows],
            total=summary["total"],
            located=summary["located"],
            bounds=bounds,
            truncated=summary["total"] > len(rows),
        )

    @api.get(
        "/alerts",
        response_model=DashboardAlerts,
        summary="Alerts with their device's name, newest first",
        description="The lake's `alerts` table: `state=active` (the default; `ended_at` null), "
        "`closed`, or `all`. `total` counts every alert in that state.",
        responses=error_responses(401, 408, 503),
    )
    def alerts(
        cursor: Annotated[duckdb.DuckDBPyConnection, Depends(lake_cursor)],
        state: Annotated[AlertState, Query(description="active, closed or all")] = AlertState.active,
        limit: Annotated[int, Query(ge=1, le=1000, description="most alerts in the answer")] = 100,
    ) -> DashboardAlerts:
        rows = fetch(cursor, _ALERTS_SQL, {"state": state.value, "limit": limit}, config).to_pylist()
        return DashboardAlerts(
            state=state.value,
            # Each row carries the window's `total`; the model ignores it.
            alerts=[DashboardAlert.model_validate(row) for row in rows],
            total=rows[0]["total"] if rows else 0,
        )

    @api.get(
        "/lake",
        response_model=LakeStats,
        summary="Files, rows, bytes and time range of each lake table",
        description="Each table's current snapshot, from Parquet footers (no data pages are read), "
        f"as `citylake lake stats` shows it; figures may be up to {LAKE_STATS_TTL_S:g} s old.",
        responses=error_responses(401, 503),
    )
    def lake() -> LakeStats:
        return lake_stats.get()

    return api
