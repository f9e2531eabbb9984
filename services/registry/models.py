"""Response bodies of the registry service."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from citylake.services.instants import UtcInstant


class Device(BaseModel):
    """One device as the registry knows it: the `devices` table's columns, plus
    where it was configured or seen."""

    device_id: str
    name: str | None = None
    type: str | None = None
    protocol: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    parent_id: str | None = None
    civil_code: str | None = Field(default=None, description="GB/T 2260 administrative division code")
    district: str | None = Field(
        default=None, description="the district's name as a source reports it (e.g. a topic level)"
    )
    address: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    status: str | None = Field(default=None, description="online, offline, or null when never reported")
    first_seen: UtcInstant | None = None
    last_seen: UtcInstant | None = None
    sources: list[str] = Field(default_factory=list, description="sources that configure or reported it")
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="from city.yaml: endpoint, slave id, metrics, ..."
    )


class DevicePage(BaseModel):
    devices: list[Device]
    total: int = Field(description="devices matching the filters, over all pages")
    next_after: str | None = Field(description="pass as `after` for the next page; null on the last page")
