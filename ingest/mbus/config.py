"""The keys of a ``type: mbus`` source: which M-Bus meters, on which gateway or port."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from citylake.ingest.mbus.codec import MAX_PRIMARY_ADDRESS
from citylake.ingest.meter_config import MeterLineConfig, MeterOnLine


class MbusMeter(MeterOnLine):
    """One meter on an M-Bus segment; ``name`` .. ``latitude`` describe it in ``devices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ADDRESS_LABEL = "primary address"

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

    @property
    def bus_address(self) -> int:
        return self.primary_address

    @property
    def id(self) -> str:
        return self.device_id or self.secondary_id or f"mbus-{self.primary_address}"


class MbusSourceConfig(MeterLineConfig):
    """M-Bus meters read with REQ_UD2 through a TCP M-Bus gateway or a serial M-Bus master."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    METER = MbusMeter

    type: Literal["mbus"] = "mbus"
    url: str = Field(description="tcp://host:port (an M-Bus gateway) | serial:///dev/ttyX?baudrate=2400")
    interval_s: float = Field(default=900.0, gt=0, description="default poll interval per meter")
    meters: list[MbusMeter] = Field(min_length=1, max_length=10_000, description="the meters to poll")
