"""Response bodies of the query service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, PlainSerializer


def _iso_ms(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Instants leave the services as the lake stores them: UTC, milliseconds.
Instant = Annotated[datetime, PlainSerializer(_iso_ms, return_type=str)]


class LatestReading(BaseModel):
    metric: str
    ts: Instant
    value: float | None
    text: str | None
    unit: str | None
    quality: int


class DeviceLatest(BaseModel):
    device_id: str
    readings: list[LatestReading]
