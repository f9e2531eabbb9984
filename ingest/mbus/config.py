"""The keys of a ``type: mbus`` source: which M-Bus meters, on which gateway or port."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.mbus.codec import MAX_PRIMARY_ADDRESS
from citylake.ingest.meter_link import LinkEndpoint, parse_link_url


def _endpoint(url: str) -> LinkEndpoint:
    # EN 13757-2 lines run at 2400 baud 8E1 unless the meters were set otherwise.
    return parse_link_url(url, default_baudrate=2400, default_parity="E")


class MbusMeter(DeviceMetadata):
    """One meter on an M-Bus segment; ``name`` .. ``latitude`` describe it in ``devices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    primary_address: int = Field(
        ge=1, le=MAX_PRIMARY_ADDRESS, description="the meter's primary address 1..250"
    )
    device_id: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="readings.device_id; default the secondary_id, else mbus-<primary address>",
    )  # fmt: skip
    secondary_id: str | None = Field(
        default=None, pattern=r"^[0-9]{8}$",
        description="the 8-digit identification number the meter must answer with; another is refused",
    )  # fmt: skip
    url: str | None = Field(default=None, description="this meter's gateway or port, if not the source's url")
    interval_s: float | None = Field(default=None, gt=0, description="poll interval; default the source's")

    @property
    def id(self) -> str:
        return self.device_id or self.secondary_id or f"mbus-{self.primary_address}"

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str | None) -> str | None:
        if value is not None:
            _endpoint(value)
        return value


class MbusSourceConfig(SourceConfig):
    """M-Bus meters read with REQ_UD2 through a TCP M-Bus gateway or a serial M-Bus master."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["mbus"] = "mbus"
    url: str = Field(description="tcp://host:port (an M-Bus gateway) | serial:///dev/ttyX?baudrate=2400")
    interval_s: float = Field(default=900.0, gt=0, description="default poll interval per meter")
    timeout_s: float = Field(default=2.0, gt=0, le=30, description="time to wait for one reply")
    retries: int = Field(default=1, ge=0, le=5, description="extra tries of an unanswered request")
    backoff_s: float = Field(default=0.5, ge=0, le=60, description="reconnect backoff; doubles each time")
    max_backoff_s: float = Field(default=30.0, gt=0, description="cap of the reconnect backoff")
    offline_after: int = Field(
        default=3, ge=1, le=100, description="unanswered polls in a row after which a meter is offline"
    )
    meters: list[MbusMeter] = Field(min_length=1, max_length=10_000, description="the meters to poll")

    @field_validator("url")
    @classmethod
    def _url_parses(cls, value: str) -> str:
        _endpoint(value)
        return value

    @model_validator(mode="after")
    def _unique_meters(self) -> MbusSourceConfig:
        seen: set[tuple[str, int]] = set()
        ids: set[str] = set()
        for meter in self.meters:
            key = (self.endpoint_of(meter).key, meter.primary_address)
            if key in seen:
                raise ValueError(f"primary address {meter.primary_address} twice on {key[0]}")
            if meter.id in ids:
                raise ValueError(f"device_id {meter.id!r} twice")
            seen.add(key)
            ids.add(meter.id)
        return self

    def endpoint_of(self, meter: MbusMeter) -> LinkEndpoint:
        return _endpoint(meter.url or self.url)
