"""A register map's models: one field (where a value is and how its registers
become a number) and a profile (a map shared by every device of a model).

Apart from config.py so that profiles.py (which loads profile files) and
config.py (which resolves ``profile:`` names) both import them, not each other.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citylake.ingest.modbus.codec import (
    BIT_TYPES,
    MAX_ADDRESS,
    MAX_REGISTERS_PER_READ,
    ByteOrder,
    DataType,
    RegisterType,
    field_width,
)


class RegisterField(BaseModel):
    """One value on a device: where it is and how its registers become a number."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,127}$", description="metric name; becomes readings.metric"
    )
    register_type: RegisterType = Field(default="holding", description="holding, input, coil or discrete")
    address: int = Field(ge=0, le=MAX_ADDRESS, description="0-based protocol address (40001 is 0)")
    data_type: DataType = Field(
        default="UINT16",
        description="INT16 UINT16 INT32 UINT32 INT64 UINT64 FLOAT32 FLOAT64 BIT STRING; "
        "coils and discrete inputs are BIT (the default for them)",
    )
    byte_order: ByteOrder = Field(
        default="ABCD", description="ABCD, DCBA, BADC or CDAB; 16-bit types and strings use only AB/BA"
    )
    scale: float = Field(default=1.0, description="value = raw * scale + offset")
    offset: float = Field(default=0.0, description="value = raw * scale + offset")
    unit: str | None = Field(default=None, description="becomes readings.unit")
    length: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REGISTERS_PER_READ,
        description="STRING only: registers (2 characters each)",
    )
    bit: int | None = Field(
        default=None, ge=0, le=15, description="BIT on a register only: 0 = least significant"
    )

    @model_validator(mode="before")
    @classmethod
    def _bits_default_to_bit(cls, data: Any) -> Any:
        # A coil is one bit: let the register map say so without repeating it.
        if isinstance(data, dict) and data.get("register_type") in BIT_TYPES and "data_type" not in data:
            return {**data, "data_type": "BIT"}
        return data

    @field_validator("scale", "offset")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RegisterField:
        name, rtype, dtype = self.name, self.register_type, self.data_type
        if rtype in BIT_TYPES:
            if dtype != "BIT":
                raise ValueError(
                    f"field {name!r}: {rtype} values are single bits; data_type must be BIT, not {dtype}"
                )
            if self.bit is not None:
                raise ValueError(
                    f"field {name!r}: bit is for BIT on a holding/input register; a {rtype} is one bit"
                )
        elif dtype == "BIT" and self.bit is None:
            raise ValueError(f"field {name!r}: BIT on a {rtype} register needs bit (0..15)")
        if dtype != "BIT" and self.bit is not None:
            raise ValueError(f"field {name!r}: bit is only for data_type BIT, not {dtype}")
        if dtype == "STRING" and self.length is None:
            raise ValueError(f"field {name!r}: STRING needs length (number of registers, 2 characters each)")
        if dtype != "STRING" and self.length is not None:
            raise ValueError(f"field {name!r}: length is only for data_type STRING, not {dtype}")
        if dtype in ("BIT", "STRING") and (self.scale != 1.0 or self.offset != 0.0):
            raise ValueError(f"field {name!r}: scale and offset apply to numbers, not {dtype}")
        last = self.address + field_width(dtype, rtype, self.length) - 1
        if last > MAX_ADDRESS:
            raise ValueError(f"field {name!r}: ends at address {last}, beyond {MAX_ADDRESS}")
        return self

    @property
    def width(self) -> int:
        """Registers (or bits) this field occupies."""
        return field_width(self.data_type, self.register_type, self.length)


class ModbusProfile(BaseModel):
    """A register map shared by many devices of one model (a profile YAML file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", description="what device this map is for")
    fields: list[RegisterField] = Field(min_length=1)
