"""The keys of a ``type: cjt188`` source: which water, gas and heat meters, on which line."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from citylake.ingest.cjt188.codec import METER_TYPES, DiOrder
from citylake.ingest.meter_config import MeterLineConfig, MeterOnLine

TYPE_CODES = {name.removesuffix("_meter"): code for code, name in METER_TYPES.items()}
MeterTypeName = Literal[
    "cold_water", "hot_water", "drinking_water", "reclaimed_water", "heat", "cooling", "gas"
]


class Cjt188Meter(MeterOnLine):
    """One meter on a line; ``name`` .. ``latitude`` describe it in ``devices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    meter_address: str = Field(
        pattern=r"^[0-9]{14}$", description="the 14-digit address on the meter (its CJ/T 188 id)"
    )
    meter_type: MeterTypeName = Field(description="cold_water | hot_water | ... | heat | cooling | gas")

    @property
    def bus_address(self) -> str:
        return self.meter_address

    @property
    def id(self) -> str:
        return self.device_id or self.meter_address

    @property
    def type_code(self) -> int:
        return TYPE_CODES[self.meter_type]


class Cjt188SourceConfig(MeterLineConfig):
    """CJ/T 188 meters polled through a serial server or a serial port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    METER = Cjt188Meter

    type: Literal["cjt188"] = "cjt188"
    preamble: bool = Field(default=True, description="send FE FE (wake-up) before each request")
    di_byte_order: DiOrder = Field(
        default="low_first",
        description="low_first sends DI 901F as 1F 90 (the standard); high_first as 90 1F",
    )
    meters: list[Cjt188Meter] = Field(min_length=1, max_length=10_000, description="the meters to poll")
