"""Response bodies of the query service."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class LatestReading(BaseModel):
    metric: str
    ts: datetime
    value: float | None
    text: str | None
    unit: str | None
    quality: int


class DeviceLatest(BaseModel):
    device_id: str
    readings: list[LatestReading]
