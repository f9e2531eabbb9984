"""What a device measured over a time range: raw readings and rollups.

Both are paged by keyset on the table's sort key, (ts, metric) or
(window_start, metric), which the pipelines keep unique per device (readings
are deduplicated on device, metric and ts; a rollup has one row per window).
"""

# No `from __future__ import annotations`: FastAPI reads these routes'
# annotations at run time, and some name limits from the factory's config.
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import duckdb
import pyarrow as pa
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status

from citylake.config import ServiceConfig
from citylake.services.query import hot_json, paging
from citylake.services.query.deps import (
    device_known,
    fetch,
    fetch_stored,
    get_hot,
    get_store,
    open_lake_cursor,
)
from citylake.services.query.errors import error_responses
from citylake.services.query.hot_tier import HotTier
from citylake.services.query.instants import EXAMPLE, InstantParam, check_range
from citylake.services.query.latest import DeviceId
from citylake.services.query.models import Reading, ReadingsPage, Rollup, RollupsPage
from citylake.services.query.negotiation import (
    JSON,
    Representation,
    negotiate,
    tabular_openapi,
    tabular_response,
)
from citylake.services.query.store import ServingStore


class Grain(StrEnum):
    minute = "1m"
    hour = "1h"


_READINGS_SQL = """
SELECT ts, metric, value, text, unit, quality
FROM readings
WHERE device_id = $device_id AND ts >= $start AND ts < $end
  AND ($metric IS NULL OR metric = $metric)
  AND ($after_ts IS NULL OR ts > $after_ts OR (ts = $after_ts AND metric > $after_metric))
ORDER BY ts, metric
LIMIT $limit
"""

_ROLLUPS_SQL = """
SELECT window_start, metric, count, min, max, avg, last
FROM {table}
WHERE device_id = $device_id AND window_start >= $start AND window_start < $end
  AND ($metric IS NULL OR metric = $metric)
  AND ($after_ts IS NULL OR window_start > $after_ts OR (window_start = $after_ts AND metric > $after_metric))
ORDER BY window_start, metric
LIMIT $limit
"""

_TABLES = {Grain.minute: "readings_1m", Grain.hour: "readings_1h"}

From = Annotated[
    InstantParam,
    Query(alias="from", description=f"start, inclusive; ISO 8601 with a zone, e.g. {EXAMPLE}"),
]
To = Annotated[
    InstantParam,
    Query(alias="to", description="end, exclusive; ISO 8601 with a zone"),
]
Metric = Annotated[str | None, Query(min_length=1, max_length=128, description="only this metric")]
Cursor = Annotated[
    str | None,
    Query(alias="cursor", max_length=paging.MAX_TOKEN_CHARS, description="next_cursor of the previous page"),
]


def _position(page: str | None, identity: paging.QueryIdentity) -> tuple[datetime | None, str | None]:
    if page is None:
        return None, None
    position = paging.decode(page, identity)
    if len(position) != 2 or not isinstance(position[1], str):
        raise paging.damaged()
    return paging.instant_from_key(position[0]), position[1]


def _page(
    cursor: duckdb.DuckDBPyConnection,
    config: ServiceConfig,
    sql: str,
    time_column: str,
    device_id: str,
    identity: paging.QueryIdentity,
    params: dict[str, object],
    limit: int,
    page: str | None,
    hot: HotTier | None = None,
) -> tuple[pa.Table, str | None]:
    after_ts, after_metric = _position(page, identity)
    params = {**params, "after_ts": after_ts, "after_metric": after_metric, "limit": limit + 1}
    table = fetch(cursor, sql, params, config)
    if table.num_rows == 0 and page is None and not device_known(cursor, device_id, config, hot):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"device {device_id!r} is not in the lake")
    if table.num_rows <= limit:
        return table, None
    table = table.slice(0, limit)
    last_ts = table.column(time_column)[-1].as_py()
    last_metric = table.column("metric")[-1].as_py()
    return table, paging.encode(identity, [paging.instant_key(last_ts), last_metric])


def _stored_page(
    store: ServingStore,
    config: ServiceConfig,
    sql: str,
    time_column: str,
    identity: paging.QueryIdentity,
    params: dict[str, object],
    limit: int,
    page: str | None,
) -> tuple[pa.Table, str | None] | None:
    """The lake's page, from the serving store; None when the lake must answer
    (the store failed, or a first page is empty: whether the device is known
    at all is the lake's to say)."""
    after_ts, after_metric = _position(page, identity)
    params = {**params, "after_ts": after_ts, "after_metric": after_metric, "limit": limit + 1}
    table = fetch_stored(store, sql, params, config)
    if table is None or (table.num_rows == 0 and page is None):
        return None
    if table.num_rows <= limit:
        return table, None
    table = table.slice(0, limit)
    last_ts = table.column(time_column)[-1].as_py()
    last_metric = table.column("metric")[-1].as_py()
    return table, paging.encode(identity, [paging.instant_key(last_ts), last_metric])


READING_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("text", pa.string()),
        ("unit", pa.string()),
        ("quality", pa.uint8()),
    ]
)


def _hot_page(
    hot: HotTier,
    device_id: str,
    identity: paging.QueryIdentity,
    params: dict[str, Any],
    limit: int,
    page: str | None,
) -> tuple[pa.Table, str | None]:
    """The same page the lake query gives, from the recent window."""
    after_ts, after_metric = _position(page, identity)
    rows = hot.readings(device_id, params["start"], params["end"])
    if params["metric"] is not None:
        rows = [r for r in rows if r["metric"] == params["metric"]]
    if after_ts is not None:
        rows = [r for r in rows if (r["ts"], r["metric"]) > (after_ts, after_metric)]
    if not rows and page is None and hot.latest(device_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"device {device_id!r} is not in the lake")
    table = pa.Table.from_pylist(rows[:limit], schema=READING_SCHEMA)
    if len(rows) <= limit:
        return table, None
    last_ts, last_metric = rows[limit - 1]["ts"], rows[limit - 1]["metric"]
    assert isinstance(last_ts, datetime) and isinstance(last_metric, str)
    return table, paging.encode(identity, [paging.instant_key(last_ts), last_metric])


def router(config: ServiceConfig) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["history"])
    default_limit = min(1000, config.page_max_rows)
    Limit = Annotated[int, Query(ge=1, le=config.page_max_rows, description="rows per page")]

    @api.get(
        "/devices/{device_id}/readings",
        response_model=ReadingsPage,
        summary="Readings of a device in a time range",
        description="Raw readings with `from` <= ts < `to`, ordered by ts then metric, paged with "
        f"`limit` and `cursor`. The range may span at most {config.readings_max_range_days:g} days "
        "(readings_max_range_days). An unknown device is a 404; a known device with nothing in "
        "the range an empty page.",
        responses={**tabular_openapi("one row per reading"), **error_responses(400, 401, 404, 408, 503)},
    )
    def readings(
        request: Request,
        device_id: DeviceId,
        start: From,
        end: To,
        metric: Metric = None,
        limit: Limit = default_limit,
        page: Cursor = None,
    ) -> Response:
        check_range(start, end, config.readings_max_range_days, "readings_max_range_days")
        identity = {
            "route": "readings",
            "device_id": device_id,
            "metric": metric,
            "from": start.isoformat(),
            "to": end.isoformat(),
        }
        params = {"device_id": device_id, "start": start, "end": end, "metric": metric}
        hot = get_hot(request)
        store = get_store(request, "readings", start)
        stored = None
        if hot is not None and hot.covers(start) and hot.answers_for(device_id):
            table, next_cursor = _hot_page(hot, device_id, identity, params, limit, page)
            served_from = "hot"
        elif store is not None and (
            stored := _stored_page(store, config, _READINGS_SQL, "ts", identity, params, limit, page)
        ):
            table, next_cursor = stored
            served_from = "store"
        else:
            with open_lake_cursor(request) as cursor:
                table, next_cursor = _page(
                    cursor, config, _READINGS_SQL, "ts", device_id, identity, params, limit, page
                )
            served_from = "lake"
        headers = {"X-Served-From": served_from, **({"X-Next-Cursor": next_cursor} if next_cursor else {})}
        if negotiate(request.headers.get("accept")) is Representation.json:
            body = hot_json.readings_page(device_id, table.to_pylist(), next_cursor)
            return Response(body, media_type=JSON, headers={"Vary": "Accept", **headers})
        return tabular_response(
            request,
            table,
            lambda: ReadingsPage(
                device_id=device_id,
                items=[Reading.model_validate(row) for row in table.to_pylist()],
                next_cursor=next_cursor,
            ),
            headers,
        )

    @api.get(
        "/devices/{device_id}/rollups/{grain}",
        response_model=RollupsPage,
        summary="Per-minute or per-hour rollups of a device in a time range",
        description="Rows of readings_1m (`grain` 1m) or readings_1h (1h) with `from` <= "
        "window_start < `to`, ordered by window_start then metric, paged with `limit` and `cursor`. "
        f"The range may span at most {config.rollups_1m_max_range_days:g} days for 1m "
        f"(rollups_1m_max_range_days) and {config.rollups_1h_max_range_days:g} days for 1h "
        "(rollups_1h_max_range_days).",
        responses={
            **tabular_openapi("one row per window and metric"),
            **error_responses(400, 401, 404, 408, 503),
        },
    )
    def rollups(
        request: Request,
        device_id: DeviceId,
        grain: Annotated[Grain, Path(description="1m or 1h")],
        start: From,
        end: To,
        metric: Metric = None,
        limit: Limit = default_limit,
        page: Cursor = None,
    ) -> Response:
        if grain is Grain.minute:
            check_range(start, end, config.rollups_1m_max_range_days, "rollups_1m_max_range_days")
        else:
            check_range(start, end, config.rollups_1h_max_range_days, "rollups_1h_max_range_days")
        identity = {
            "route": "rollups",
            "grain": grain.value,
            "device_id": device_id,
            "metric": metric,
            "from": start.isoformat(),
            "to": end.isoformat(),
        }
        params = {"device_id": device_id, "start": start, "end": end, "metric": metric}
        name = _TABLES[grain]
        sql = _ROLLUPS_SQL.format(table=name)
        # readings_1h is stored in (metric, window_start, device_id) order for
        # the city-wide aggregate: one device's hours there are a full scan,
        # so they stay the lake's.
        store = get_store(request, name, start) if grain is Grain.minute else None
        stored = None
        if store is not None and (
            stored := _stored_page(store, config, sql, "window_start", identity, params, limit, page)
        ):
            table, next_cursor = stored
            served_from = "store"
        else:
            with open_lake_cursor(request) as cursor:
                table, next_cursor = _page(
                    cursor, config, sql, "window_start", device_id, identity, params, limit, page,
                    get_hot(request),
                )  # fmt: skip
            served_from = "lake"
        headers = {"X-Served-From": served_from, **({"X-Next-Cursor": next_cursor} if next_cursor else {})}
        return tabular_response(
            request,
            table,
            lambda: RollupsPage(
                device_id=device_id,
                grain=grain.value,
                items=[Rollup.model_validate(row) for row in table.to_pylist()],
                next_cursor=next_cursor,
            ),
            headers,
        )

    return api
