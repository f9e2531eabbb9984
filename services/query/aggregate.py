"""City-wide aggregates of one metric, from the hourly rollups.

"The average PM2.5 over the city between 08:00 and 09:00" is one pass over
``readings_1h`` (one row per device, metric and hour), never over the raw
readings: 24 rows a device a day instead of every reading.
"""

# No `from __future__ import annotations`: FastAPI reads these routes'
# annotations at run time, and some name limits from the factory's config.
from fastapi import APIRouter, Request, Response

from citylake.config import ServiceConfig
from citylake.services.district import DISTRICT_DOC, DISTRICT_SQL, DistrictFilter, DistrictQuery
from citylake.services.query.deps import fetch, fetch_stored, get_store, open_lake_cursor
from citylake.services.query.errors import error_responses
from citylake.services.query.history import From, To
from citylake.services.query.instants import check_range
from citylake.services.query.latest import MetricName, RegionQuery, SiteQuery
from citylake.services.query.models import MetricAggregate, WindowAggregate
from citylake.services.query.negotiation import tabular_openapi, tabular_response

# A rollup row's avg is the mean of its `count` values (text readings are not
# rolled up), so the mean of every reading in a window is the rollups' averages
# weighted by their counts. The readings_1h view keeps one row per device,
# metric and window whichever sites rolled it up (lake/README.md, "Conflict
# rule"), so the rows of a window are its devices, each counted once. The
# site and region filters select among those rows (the site the rule kept),
# so the sites' answers add up to the city's.
_AGGREGATE_SQL = """
SELECT window_start,
       count(*) AS devices,
       CAST(sum(count) AS BIGINT) AS count,
       min(min) AS min,
       max(max) AS max,
       sum(avg * count) / sum(count) AS avg
FROM readings_1h
WHERE metric = $metric AND window_start >= $start AND window_start < $end
  AND ($site IS NULL OR site = $site)
  AND (CAST($sites AS VARCHAR[]) IS NULL OR list_contains(CAST($sites AS VARCHAR[]), site))
  {district}
GROUP BY window_start
ORDER BY window_start
"""
# Only with a district: the serving store has no `devices` table to bind.
_DISTRICT_CLAUSE = f"AND device_id IN (SELECT device_id FROM devices WHERE {DISTRICT_SQL})"


def aggregate_sql(district: bool) -> str:
    return _AGGREGATE_SQL.replace("{district}", _DISTRICT_CLAUSE if district else "")


def region_sites(regions: dict[str, str], region: str | None) -> list[str] | None:
    """The sites of ``region`` by this tier's ``sites`` mapping (lake/sites.py);
    None without a region filter, [] for a region this tier does not know."""
    if region is None:
        return None
    return sorted(site for site, owner in regions.items() if owner == region)


def router(config: ServiceConfig) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["aggregates"])

    @api.get(
        "/metrics/{metric}/aggregate",
        response_model=MetricAggregate,
        summary="City-wide hourly aggregate of a metric over every device",
        description="One item per hour window of readings_1h with `from` <= window_start < `to`: "
        "the devices that reported `metric` in it, their readings' count, min, max and mean "
        "(the hourly rollups' averages weighted by their counts). Hours without data have no item; "
        "an unknown metric is an empty list. The range may span at most "
        f"{config.rollups_1h_max_range_days:g} days (rollups_1h_max_range_days). Each device's hour "
        "counts once however many sites rolled it up (the rollups' conflict rule). `site` keeps the "
        "rows of one site (`readings_1h.site`), `region` those of the sites of one region (the lake's "
        "`sites` view: at the centre, `sync.regions`; an unknown region is an empty list), "
        "`district` those of the devices of a district (the `devices` table); together, rows "
        "matching all. A site's rows and its region's add up to the city's: a device's hour belongs "
        "to the one site the rule kept.\n\n**district**: " + DISTRICT_DOC,
        responses={**tabular_openapi("one row per hour window"), **error_responses(400, 401, 408, 503)},
    )
    def metric_aggregate(
        request: Request,
        metric: MetricName,
        start: From,
        end: To,
        district: DistrictQuery = None,
        site: SiteQuery = None,
        region: RegionQuery = None,
    ) -> Response:
        check_range(start, end, config.rollups_1h_max_range_days, "rollups_1h_max_range_days")
        params = {
            "metric": metric,
            "start": start,
            "end": end,
            "site": site,
            "sites": region_sites(request.app.state.registry.regions(), region),
        }
        if district is not None:
            params.update(DistrictFilter.parse(district).parameters())
        sql = aggregate_sql(district is not None)
        # The serving store holds readings_1h, not the registry a district needs.
        store = get_store(request, "readings_1h", start) if district is None else None
        table = fetch_stored(store, sql, params, config) if store is not None else None
        served_from = "store"
        if table is None:
            served_from = "lake"
            with open_lake_cursor(request) as cursor:
                table = fetch(cursor, sql, params, config)
        return tabular_response(
            request,
            table,
            lambda: MetricAggregate(
                metric=metric,
                grain="1h",
                district=district,
                site=site,
                region=region,
                items=[WindowAggregate.model_validate(row) for row in table.to_pylist()],
            ),
            {"X-Served-From": served_from},
        )

    return api
