"""The keys of a ``type: iec104`` source."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.iec104.codec import MAX_IOA

DEFAULT_PORT = 2404  # IEC 60870-5-104's registered port

PointType = Literal[
    "M_SP_NA_1",
    "M_DP_NA_1",
    "M_ME_NA_1",
    "M_ME_NB_1",
    "M_ME_NC_1",
    "M_SP_TB_1",
    "M_DP_TB_1",
    "M_ME_TD_1",
    "M_ME_TE_1",
    "M_ME_TF_1",
]


class Iec104Point(BaseModel):
    """One information object (IOA) and the reading it becomes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ioa: int = Field(ge=1, le=MAX_IOA, description="information object address")
    type: PointType = Field(description="the ASDU type the RTU sends it as, e.g. M_ME_NC_1 (short float)")
    metric: str = Field(min_length=1, description="readings.metric")
    unit: str | None = Field(default=None, description="readings.unit (104 carries no units)")
    scale: float = Field(
        default=1.0, description="scaled/normalized measurands: value = raw * scale + offset"
    )
    offset: float = Field(default=0.0, description="see scale")
    device_id: str | None = Field(
        default=None, min_length=1, description="readings.device_id; default: the station's"
    )


class Iec104Station(BaseModel):
    """One station (common address) of the RTU and its points."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    common_address: int = Field(ge=1, le=65534, description="the station's common address (CA)")
    device_id: str | None = Field(
        default=None, min_length=1, description="readings.device_id of its points; default iec104-<host>-<ca>"
    )
    points: list[Iec104Point] = Field(min_length=1, description="what to read")

    @model_validator(mode="after")
    def _unique(self) -> Iec104Station:
        ioas = [p.ioa for p in self.points]
        twice = sorted({i for i in ioas if ioas.count(i) > 1})
        if twice:
            raise ValueError(
                f"station {self.common_address}: ioa {', '.join(map(str, twice))} configured twice"
            )
        keys = [(p.device_id, p.metric) for p in self.points]
        doubled = sorted({m for d, m in keys if keys.count((d, m)) > 1})
        if doubled:
            raise ValueError(f"station {self.common_address}: metric {', '.join(doubled)} configured twice")
        return self


class Iec104SourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["iec104"] = "iec104"
    url: str = Field(
        description=f"the RTU (server): iec104://<host>:<port> (port {DEFAULT_PORT} unless given)"
    )
    stations: list[Iec104Station] = Field(min_length=1, description="the RTU's stations to read")
    metadata: dict[str, DeviceMetadata] = Field(
        default_factory=dict,
        description="device_id -> name, device_type, district, civil_code, address, longitude, latitude",
    )
    originator_address: int = Field(default=0, ge=0, le=255, description="citylake's originator address")
    interrogation_interval_s: float = Field(
        default=900, ge=0, description="send a general interrogation this often (0: only after connecting)"
    )
    timeout_s: float = Field(default=5, gt=0, description="check(): wait this long for the connection")
    tick_rate_ms: int = Field(default=50, ge=50, description="c104's client thread update interval")

    @field_validator("url")
    @classmethod
    def _iec104_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "iec104" or not parts.hostname:
            raise ValueError(f"expected iec104://<host>:<port>, got {value!r}")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or DEFAULT_PORT

    def station_device(self, station: Iec104Station) -> str:
        return station.device_id or f"iec104-{self.host}-{station.common_address}"

    def device_ids(self) -> list[str]:
        ids: list[str] = []
        for station in self.stations:
            for device in [self.station_device(station)] + [
                p.device_id for p in station.points if p.device_id
            ]:
                if device not in ids:
                    ids.append(device)
        return ids

    @model_validator(mode="after")
    def _consistent(self) -> Iec104SourceConfig:
        cas = [s.common_address for s in self.stations]
        twice = sorted({c for c in cas if cas.count(c) > 1})
        if twice:
            raise ValueError(f"common_address {', '.join(map(str, twice))} configured twice")
        unknown = sorted(set(self.metadata) - set(self.device_ids()))
        if unknown:
            raise ValueError(
                f"metadata names {', '.join(unknown)}, which no station or point has as device_id"
            )
        return self
