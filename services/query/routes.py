"""``/v1/devices/...``: what a device measured."""

from __future__ import annotations

from typing import Annotated

import duckdb
from fastapi import APIRouter, Depends, HTTPException, Path, Query, status

from citylake.services.query.deps import lake_cursor
from citylake.services.query.models import DeviceLatest, LatestReading

router = APIRouter(prefix="/v1", tags=["devices"])

DeviceId = Annotated[
    str, Path(min_length=1, max_length=128, description="device id as in readings.device_id")
]

_LATEST_SQL = """
SELECT metric, ts, value, text, unit, quality
FROM readings
WHERE device_id = $device_id AND ($metric IS NULL OR metric = $metric)
QUALIFY row_number() OVER (PARTITION BY metric ORDER BY ts DESC, ingest_ts DESC) = 1
ORDER BY metric
"""


@router.get("/devices/{device_id}/latest", response_model=DeviceLatest, summary="Latest value of each metric")
def device_latest(
    device_id: DeviceId,
    cursor: Annotated[duckdb.DuckDBPyConnection, Depends(lake_cursor)],
    metric: Annotated[str | None, Query(max_length=128, description="only this metric")] = None,
) -> DeviceLatest:
    rows = cursor.execute(_LATEST_SQL, {"device_id": device_id, "metric": metric}).fetchall()
    if not rows:
        what = f"metric {metric!r} of device {device_id!r}" if metric else f"device {device_id!r}"
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no readings for {what} in the lake")
    return DeviceLatest(
        device_id=device_id,
        readings=[
            LatestReading(metric=m, ts=ts, value=v, text=t, unit=u, quality=q) for m, ts, v, t, u, q in rows
        ],
    )
