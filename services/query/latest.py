"""Latest values: of one device, and of one metric across a district or type."""

# No `from __future__ import annotations`: FastAPI reads these routes'
# annotations at run time, and some name limits from the factory's config.
from typing import Annotated, Any

import duckdb
import pyarrow as pa
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from citylake.config import ServiceConfig
from citylake.services.district import DISTRICT_DOC, DISTRICT_SQL, DistrictFilter, DistrictQuery
from citylake.services.lakeaccess import LakeUnavailable
from citylake.services.query import hot_json, paging
from citylake.services.query.deps import fetch, get_hot, lake_cursor, open_lake_cursor
from citylake.services.query.errors import error_responses
from citylake.services.query.hot_tier import HotTier
from citylake.services.query.models import DeviceLatest, DeviceValue, LatestReading, MetricLatest
from citylake.services.query.negotiation import (
    JSON,
    Representation,
    negotiate,
    tabular_openapi,
    tabular_response,
)
from citylake.services.query.registry_cache import RegistryCache

DeviceId = Annotated[
    str, Path(min_length=1, max_length=128, description="device id as in readings.device_id")
]
MetricName = Annotated[str, Path(min_length=1, max_length=128, description="metric as in readings.metric")]
# The config's site names (citylake.config.models.Name).
SITE_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
SiteQuery = Annotated[
    str | None, Query(pattern=SITE_PATTERN, description="a site: readings.site, where the reading came from")
]
RegionQuery = Annotated[
    str | None, Query(pattern=SITE_PATTERN, description="a region: the sites `sync.regions` gives it")
]


LATEST_SCHEMA = pa.schema(
    [
        ("metric", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("value", pa.float64()),
        ("text", pa.string()),
        ("unit", pa.string()),
        ("quality", pa.uint8()),
    ]
)

_DEVICE_LATEST_SQL = """
SELECT metric, ts, value, text, unit, quality
FROM readings
WHERE device_id = $device_id AND ($metric IS NULL OR metric = $metric)
QUALIFY row_number() OVER (PARTITION BY metric ORDER BY ts DESC, ingest_ts DESC) = 1
ORDER BY metric
"""

# The registry is narrowed first so a district's latest values never rank
# every device in the city. `devices` holds one row per device by contract;
# the QUALIFY keeps a duplicate from turning into two answers for one device.
_METRIC_LATEST_SQL = f"""
WITH registry AS (
    SELECT device_id, type, civil_code, district FROM devices
    QUALIFY row_number() OVER (PARTITION BY device_id ORDER BY last_seen DESC NULLS LAST) = 1
),
chosen AS (
    SELECT device_id FROM registry
    WHERE {DISTRICT_SQL} AND ($type IS NULL OR type = $type)
),
latest AS (
    SELECT device_id, ts, value, text, unit, quality, site FROM readings
    WHERE metric = $metric
      AND ($after IS NULL OR device_id > $after)
      AND ($site IS NULL OR site = $site)
      AND ($region IS NULL OR site IN (SELECT site FROM sites WHERE region = $region))
      AND (($district_code IS NULL AND $district_name IS NULL AND $type IS NULL)
           OR device_id IN (SELECT device_id FROM chosen))
    QUALIFY row_number() OVER (PARTITION BY device_id ORDER BY ts DESC, ingest_ts DESC) = 1
)
SELECT l.device_id, r.type, r.civil_code, r.district, l.site, s.region, l.ts, l.value, l.text, l.unit,
       l.quality
FROM latest l LEFT JOIN registry r USING (device_id) LEFT JOIN sites s USING (site)
ORDER BY l.device_id
LIMIT $limit
"""


DEVICE_VALUE_SCHEMA = pa.schema(
    [
        ("device_id", pa.string()),
        ("type", pa.string()),
        ("civil_code", pa.string()),
        ("district", pa.string()),
        ("site", pa.string()),
        ("region", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("value", pa.float64()),
        ("text", pa.string()),
        ("unit", pa.string()),
        ("quality", pa.uint8()),
    ]
)


def hot_metric_latest(
    hot: HotTier, registry: RegistryCache, params: dict[str, Any], regions: dict[str, str]
) -> pa.Table | None:
    """The lake's page of a district's (or type's) latest values, from the
    hot tier and the registry; None if the tier does not know one of the
    devices whole (the lake answers then)."""
    if params["site"] is not None or params["region"] is not None:
        # The tier keeps each key's newest value of any site; one site's newest
        # may be older, and only the lake has it.
        return None
    try:
        chosen = registry.chosen(params)
    except (duckdb.Error, LakeUnavailable):
        return None  # the lake's query says what is wrong
    rows: list[dict[str, object]] = []
    for device in chosen:
        latest = hot.latest(str(device["device_id"]), params["metric"], with_site=True)
        if latest is None:
            return None
        if latest:
            value = latest[0]
            region = regions.get(str(value["site"])) if value["site"] is not None else None
            picked = {k: value[k] for k in ("ts", "value", "text", "unit", "quality", "site")}
            rows.append({**device, **picked, "region": region})
            if len(rows) == params["limit"]:
                break
    return pa.Table.from_pylist(rows, schema=DEVICE_VALUE_SCHEMA)


def router(config: ServiceConfig) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["latest"])
    default_limit = min(1000, config.page_max_rows)

    def lake_latest(request: Request, device_id: str, metric: str | None) -> pa.Table:
        with open_lake_cursor(request) as cursor:
            return fetch(cursor, _DEVICE_LATEST_SQL, {"device_id": device_id, "metric": metric}, config)

    # Async: the hot tier's answer is a dict probe and an array read, cheaper
    # than the hop to a worker thread a sync route takes; only the lake's
    # query goes to a thread.
    @api.get(
        "/devices/{device_id}/latest",
        response_model=DeviceLatest,
        summary="Latest value of each metric of a device",
        responses={**tabular_openapi("one row per metric"), **error_responses(401, 404, 408, 503)},
    )
    async def device_latest(
        request: Request,
        device_id: DeviceId,
        metric: Annotated[str | None, Query(max_length=128, description="only this metric")] = None,
    ) -> Response:
        hot = get_hot(request)
        rows = hot.latest(device_id, metric) if hot is not None else None
        if rows is not None:
            # The hot tier knows every device the lake knew at its rebuild and
            # all it heard since: its answer, even an empty one, is the lake's.
            if rows and negotiate(request.headers.get("accept")) is Representation.json:
                headers = {"Vary": "Accept", "X-Served-From": "hot"}
                return Response(hot_json.device_latest(device_id, rows), media_type=JSON, headers=headers)
            table = pa.Table.from_pylist(rows, schema=LATEST_SCHEMA)
            served_from = "hot"
        else:
            table = await run_in_threadpool(lake_latest, request, device_id, metric)
            served_from = "lake"
        if table.num_rows == 0:
            what = f"metric {metric!r} of device {device_id!r}" if metric else f"device {device_id!r}"
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no readings for {what} in the lake")
        return tabular_response(
            request,
            table,
            lambda: DeviceLatest(
                device_id=device_id,
                readings=[LatestReading.model_validate(row) for row in table.to_pylist()],
            ),
            {"X-Served-From": served_from},
        )

    @api.get(
        "/metrics/{metric}/latest",
        response_model=MetricLatest,
        summary="Latest value of a metric on every device of a district or type",
        description="One row per device that has ever reported `metric`, ordered by device id and "
        "paged with `limit` and `cursor`. `district` and `type` narrow the devices through the "
        "`devices` table (both together: devices in both); without either, every device. "
        "`site` keeps readings of one site (`readings.site`), `region` those of the sites of one "
        "region (the lake's `sites` view: at the centre, `sync.regions`); each device's latest "
        "value among those. An unknown metric is an empty list, not a 404.\n\n**district**: " + DISTRICT_DOC,
        responses={**tabular_openapi("one row per device"), **error_responses(400, 401, 408, 503)},
    )
    def metric_latest(
        request: Request,
        metric: MetricName,
        cursor: Annotated[duckdb.DuckDBPyConnection, Depends(lake_cursor)],
        district: DistrictQuery = None,
        type: Annotated[
            str | None, Query(min_length=1, max_length=64, description="devices.type, e.g. ipc, air_quality")
        ] = None,
        site: SiteQuery = None,
        region: RegionQuery = None,
        limit: Annotated[
            int, Query(ge=1, le=config.page_max_rows, description="rows per page")
        ] = default_limit,
        page: Annotated[
            str | None,
            Query(
                alias="cursor",
                max_length=paging.MAX_TOKEN_CHARS,
                description="next_cursor of the previous page",
            ),
        ] = None,
    ) -> Response:
        identity = {
            "route": "metric_latest",
            "metric": metric,
            "district": district,
            "type": type,
            "site": site,
            "region": region,
        }
        after = None
        if page is not None:
            position = paging.decode(page, identity)
            after = position[0] if len(position) == 1 and isinstance(position[0], str) else None
            if after is None:
                raise paging.damaged()
        params = {
            "metric": metric,
            **DistrictFilter.parse(district).parameters(),
            "type": type,
            "site": site,
            "region": region,
            "after": after,
            "limit": limit + 1,
        }
        hot = get_hot(request)
        table = None
        if hot is not None and (district is not None or type is not None):
            registry = request.app.state.registry
            table = hot_metric_latest(hot, registry, params, registry.regions())
        served_from = "hot" if table is not None else "lake"
        if table is None:
            table = fetch(cursor, _METRIC_LATEST_SQL, params, config)
        next_cursor = None
        if table.num_rows > limit:
            table = table.slice(0, limit)
            next_cursor = paging.encode(identity, [table.column("device_id")[-1].as_py()])
        return tabular_response(
            request,
            table,
            lambda: MetricLatest(
                metric=metric,
                district=district,
                type=type,
                site=site,
                region=region,
                items=[DeviceValue.model_validate(row) for row in table.to_pylist()],
                next_cursor=next_cursor,
            ),
            {"X-Served-From": served_from, **({"X-Next-Cursor": next_cursor} if next_cursor else {})},
        )

    return api
