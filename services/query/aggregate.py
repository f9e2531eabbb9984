"""City-wide aggregates of one metric, from the hourly rollups.

"The average PM2.5 over the city between 08:00 and 09:00" is one pass over
``readings_1h`` (one row per device, metric and hour), never over the raw
readings: 24 rows a device a day instead of every reading.
"""

# No `from __future__ import annotations`: FastAPI reads these routes'
# annotations at run time, and some name limits from the factory's config.
from fastapi import APIRouter, Request, Response

from citylake.config import ServiceConfig
from citylake.services.query.deps import fetch, fetch_stored, get_store, open_lake_cursor
from citylake.services.query.errors import error_responses
from citylake.services.query.history import From, To
from citylake.services.query.instants import check_range
from citylake.services.query.latest import MetricName
from citylake.services.query.models import MetricAggregate, WindowAggregate
from citylake.services.query.negotiation import tabular_openapi, tabular_response

# A rollup row's avg is the mean of its `count` values (text readings are not
# rolled up), so the mean of every reading in a window is the rollups' averages
# weighted by their counts. A rollup row is unique per device, metric and
# window, so the rows of a window are its devices.
_AGGREGATE_SQL = """
SELECT window_start,
       count(*) AS devices,
       CAST(sum(count) AS BIGINT) AS count,
       min(min) AS min,
       max(max) AS max,
       sum(avg * count) / sum(count) AS avg
FROM readings_1h
WHERE metric = $metric AND window_start >= $start AND window_start < $end
GROUP BY window_start
ORDER BY window_start
"""


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
        f"{config.rollups_1h_max_range_days:g} days (rollups_1h_max_range_days).",
        responses={**tabular_openapi("one row per hour window"), **error_responses(400, 401, 408, 503)},
    )
    def metric_aggregate(
        request: Request,
        metric: MetricName,
        start: From,
        end: To,
    ) -> Response:
        check_range(start, end, config.rollups_1h_max_range_days, "rollups_1h_max_range_days")
        params = {"metric": metric, "start": start, "end": end}
        store = get_store(request, "readings_1h", start)
        table = fetch_stored(store, _AGGREGATE_SQL, params, config) if store is not None else None
        served_from = "store"
        if table is None:
            served_from = "lake"
            with open_lake_cursor(request) as cursor:
                table = fetch(cursor, _AGGREGATE_SQL, params, config)
        return tabular_response(
            request,
            table,
            lambda: MetricAggregate(
                metric=metric,
                grain="1h",
                items=[WindowAggregate.model_validate(row) for row in table.to_pylist()],
            ),
            {"X-Served-From": served_from},
        )

    return api
