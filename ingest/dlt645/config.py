"""The keys of a ``type: dlt645`` source: which meters, on which line, which DIs."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from citylake.ingest.dlt645.codec import DATA_ITEMS, DATA_ITEMS_BY_METRIC, DataItem, di_text
from citylake.ingest.meter_config import MeterLineConfig, MeterOnLine

DEFAULT_DATA_ITEMS = (
    "combined_active_energy", "voltage_a", "current_a", "active_power", "power_factor", "frequency",
)  # fmt: skip


def resolve_data_item(spec: str) -> DataItem:
    """A metric name (``voltage_a``) or a DI as the standard writes it (``02 01 01 00``, ``02010100``)."""
    if spec in DATA_ITEMS_BY_METRIC:
        return DATA_ITEMS_BY_METRIC[spec]
    digits = spec.replace(" ", "")
    if len(digits) == 8:
        try:
            di = int(digits, 16)
        except ValueError:
            di = -1
        if di in DATA_ITEMS:
            return DATA_ITEMS[di]
    known = ", ".join(f"{i.metric} ({di_text(i.di)})" for i in DATA_ITEMS.values())
    raise ValueError(f"unknown data item {spec!r}; known: {known}")


class Dlt645Meter(MeterOnLine):
    """One meter on a line; ``name`` .. ``latitude`` describe it in ``devices``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    meter_address: str = Field(
        pattern=r"^[0-9]{12}$", description="the 12-digit address printed on the meter (its DL/T 645 id)"
    )
    data_items: list[str] | None = Field(
        default=None, min_length=1, max_length=64, description="DIs to read; default the source's"
    )

    @property
    def bus_address(self) -> str:
        return self.meter_address

    @property
    def id(self) -> str:
        return self.device_id or self.meter_address

    @field_validator("data_items")
    @classmethod
    def _known_items(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for spec in value:
                resolve_data_item(spec)
        return value


class Dlt645SourceConfig(MeterLineConfig):
    """DL/T 645-2007 meters polled through a serial server or a serial port."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    METER = Dlt645Meter

    type: Literal["dlt645"] = "dlt645"
    url: str = Field(
        description="tcp://host:port (a transparent serial server) | serial:///dev/ttyX?baudrate=2400"
    )
    interval_s: float = Field(default=60.0, gt=0, description="default poll interval per meter")
    timeout_s: float = Field(default=1.5, gt=0, le=30, description="time to wait for one reply")
    preamble: bool = Field(default=True, description="send the FE FE FE FE wake-up bytes before each request")
    data_items: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DATA_ITEMS), min_length=1, max_length=64,
        description="DIs read from every meter: metric names or DIs (02 01 01 00)",
    )  # fmt: skip
    meters: list[Dlt645Meter] = Field(min_length=1, max_length=10_000, description="the meters to poll")

    @field_validator("data_items")
    @classmethod
    def _known_items(cls, value: list[str]) -> list[str]:
        for spec in value:
            resolve_data_item(spec)
        return value

    def items_of(self, meter: Dlt645Meter) -> list[DataItem]:
        return [resolve_data_item(s) for s in (meter.data_items or self.data_items)]
