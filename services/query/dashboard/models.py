"""Bodies of the dashboard's JSON routes (``/v1/dashboard/...``).

Shaped for the page, not for bulk reading: each answer is bounded by a
``limit`` and says how much it left out, so a city of 100k devices cannot turn
one page load into a 100k-row response.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from citylake.services.instants import UtcInstant


class MapDevice(BaseModel):
    device_id: str
    name: str | None = Field(description="devices.name: free text from the device itself; render as text")
    type: str | None
    protocol: str | None
    civil_code: str | None
    district: str | None = Field(default=None, description="devices.district (the name a source reports)")
    address: str | None
    longitude: float | None = Field(
        description="WGS 84 degrees; null when the registry has no usable position (none, out of range, "
        "or exactly 0,0, the default many GB28181 catalogs report for an unknown position)"
    )
    latitude: float | None = Field(description="WGS 84 degrees; null exactly when longitude is")
    status: str | None = Field(description="devices.status: online, offline, or null when never reported")
    last_seen: UtcInstant | None
    active_alerts: int = Field(description="alerts of this device that have not ended")


class Bounds(BaseModel):
    """The box around every located device that matched, not only this page's."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


class DashboardDevices(BaseModel):
    devices: list[MapDevice] = Field(description="ordered by device_id, at most `limit`")
    total: int = Field(description="devices of the registry that match, over all pages")
    located: int = Field(description="of `total`, how many have a usable position")
    bounds: Bounds | None = Field(description="null when no matching device has a usable position")
    truncated: bool = Field(description="true when `limit` left devices out")


class DashboardAlert(BaseModel):
    alert_id: str
    device_id: str
    device_name: str | None = Field(description="devices.name of the alert's device; render as text")
    metric: str | None
    rule: str
    severity: str
    state: Literal["active", "closed"]
    started_at: UtcInstant
    ended_at: UtcInstant | None
    value: float | None
    message: str | None


class DashboardAlerts(BaseModel):
    state: Literal["active", "closed", "all"]
    alerts: list[DashboardAlert] = Field(description="newest first, at most `limit`")
    total: int = Field(description="alerts in this state, over all of them")


class TableStat(BaseModel):
    table: str
    version: int = Field(description="the table log's version (compaction and retention commits)")
    files: int
    rows: int
    bytes: int
    first: UtcInstant | None = Field(description="earliest value of the table's time column; null if none")
    last: UtcInstant | None = Field(description="latest value of the table's time column")


class LakeStats(BaseModel):
    tables: list[TableStat]
    computed_at: UtcInstant = Field(description="when these figures were read from the Parquet footers")
