"""Response bodies of the query service."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from citylake.services.instants import UtcInstant, iso_ms

__all__ = ["UtcInstant", "iso_ms"]

NEXT_CURSOR = "`cursor` for the next page; null on the last page"


class LatestReading(BaseModel):
    metric: str
    ts: UtcInstant
    value: float | None
    text: str | None
    unit: str | None
    quality: int


class DeviceLatest(BaseModel):
    device_id: str
    readings: list[LatestReading]


class DeviceValue(BaseModel):
    device_id: str
    type: str | None = Field(description="devices.type; null for a device the registry does not know")
    civil_code: str | None = Field(description="devices.civil_code")
    district: str | None = Field(default=None, description="devices.district (the name a source reports)")
    site: str | None = Field(default=None, description="readings.site of this reading: the site it came from")
    region: str | None = Field(
        default=None, description="the site's region (the lake's `sites` view); null where none is known"
    )
    ts: UtcInstant
    value: float | None
    text: str | None
    unit: str | None
    quality: int


class MetricLatest(BaseModel):
    metric: str
    district: str | None = Field(description="the district filter as asked: a civil_code prefix or a name")
    type: str | None
    site: str | None = Field(default=None, description="the site filter as asked")
    region: str | None = Field(default=None, description="the region filter as asked")
    items: list[DeviceValue] = Field(description="one per device, ordered by device_id")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class Reading(BaseModel):
    ts: UtcInstant
    metric: str
    value: float | None
    text: str | None
    unit: str | None
    quality: int


class ReadingsPage(BaseModel):
    device_id: str
    items: list[Reading] = Field(description="ordered by ts, then metric")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class Rollup(BaseModel):
    window_start: UtcInstant
    metric: str
    count: int
    min: float | None
    max: float | None
    avg: float | None
    last: float | None


class RollupsPage(BaseModel):
    device_id: str
    grain: str
    items: list[Rollup] = Field(description="ordered by window_start, then metric")
    next_cursor: str | None = Field(description=NEXT_CURSOR)


class WindowAggregate(BaseModel):
    window_start: UtcInstant
    devices: int = Field(description="devices with a rollup of the metric in the window")
    count: int = Field(description="readings with a value in the window, over every device")
    min: float | None
    max: float | None
    avg: float | None = Field(
        description="mean of every reading in the window (the rollups' averages weighted by their counts)"
    )


class MetricAggregate(BaseModel):
    metric: str
    grain: str
    district: str | None = Field(default=None, description="the district filter as asked")
    site: str | None = Field(default=None, description="the site filter as asked")
    region: str | None = Field(default=None, description="the region filter as asked")
    items: list[WindowAggregate] = Field(description="one per window with data, ordered by window_start")


class SqlColumn(BaseModel):
    name: str
    type: str = Field(description="DuckDB type, e.g. VARCHAR, DOUBLE, TIMESTAMP WITH TIME ZONE")


class SqlResult(BaseModel):
    columns: list[SqlColumn]
    rows: list[list[Any]] = Field(
        description="one array per row, values in column order (arrays, not objects, so that "
        "two columns with the same name both survive)"
    )
    row_count: int
