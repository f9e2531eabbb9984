"""The keys of a ``type: s7`` source."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.s7.codec import TagAddress, parse_address, plan_reads

DEFAULT_PORT = 102  # ISO-on-TCP (RFC 1006)
TagType = Literal["BOOL", "BYTE", "INT", "WORD", "DINT", "DWORD", "REAL"]


class S7Tag(BaseModel):
    """One typed tag and the reading it becomes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(description="STEP 7 address: DB1.DBD0, DB1.DBW4, DB1.DBX10.3, MD0, MW4, M2.1")
    type: TagType = Field(description="REAL, INT, DINT, WORD, DWORD, BYTE or BOOL")
    metric: str = Field(min_length=1, description="readings.metric")
    unit: str | None = Field(default=None, description="readings.unit")
    scale: float = Field(default=1.0, description="value = raw * scale + offset")
    offset: float = Field(default=0.0, description="see scale")

    @model_validator(mode="after")
    def _address_fits_type(self) -> S7Tag:
        parse_address(self.address, self.type)
        return self

    @property
    def parsed(self) -> TagAddress:
        return parse_address(self.address, self.type)


class S7SourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["s7"] = "s7"
    url: str = Field(description=f"the PLC: s7://<host>:<port> (port {DEFAULT_PORT} unless given)")
    rack: int = Field(default=0, ge=0, le=7, description="the CPU's rack (S7-300/400: 0)")
    slot: int = Field(default=1, ge=0, le=31, description="the CPU's slot (S7-300: 2, S7-1200/1500: 1)")
    device_id: str = Field(min_length=1, description="readings.device_id of every tag")
    metadata: DeviceMetadata | None = Field(
        default=None, description="name, device_type, district, civil_code, address, longitude, latitude"
    )
    tags: list[S7Tag] = Field(min_length=1, description="what to read")
    interval_s: float = Field(default=5, gt=0, description="read every tag this often")
    timeout_s: float = Field(default=3, gt=0, description="wait this long to connect or for one answer")
    max_gap: int = Field(default=32, ge=0, description="tags at most this many bytes apart share one read")

    @field_validator("url")
    @classmethod
    def _s7_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "s7" or not parts.hostname:
            raise ValueError(f"expected s7://<host>:<port>, got {value!r}")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or DEFAULT_PORT

    @model_validator(mode="after")
    def _consistent(self) -> S7SourceConfig:
        metrics = [t.metric for t in self.tags]
        twice = sorted({m for m in metrics if metrics.count(m) > 1})
        if twice:
            raise ValueError(f"metric {', '.join(twice)} configured twice")
        plan_reads([t.parsed for t in self.tags], self.max_gap)
        return self
