"""CJ/T 188-2018 frames ⇄ values (water, gas and heat meters). Pure: no I/O, no clock.

Frame (multi-byte fields least significant byte first)::

    [FE FE ...] 68 T A0 A1 A2 A3 A4 A5 A6 C L DATA... CS 16

- ``T``: the meter type (``10`` cold water, ``11`` hot water, ``12`` drinking
  water, ``13`` reclaimed water, ``20`` heat, ``21`` cooling, ``30`` gas).
- ``A0..A6``: the meter address, 14 BCD digits, lowest pair first (A5 A6 the
  manufacturer code); ``AA`` is a wildcard.
- ``C``: ``01`` read data; the meter answers ``81`` (bit 7) or ``C1``
  (bit 6: abnormal).
- ``DATA`` of a read: the DI (``90 1F``: current cumulative data) and a
  sequence byte SER that the reply echoes. No +0x33 offset (unlike DL/T 645).
- ``CS``: the sum of every byte from ``68`` to the end of DATA, mod 256.

The DI's byte order on the wire differs between vendors (the standard's
"low byte first" gives ``1F 90``; many meters expect ``90 1F``), so it is a
parameter. A 901F reply of a water or gas meter is: DI SER, current
cumulative flow (4 BCD, 2 decimals) + unit code, settlement-day flow + unit,
the meter's clock (7 BCD, ``ss mm hh DD MM YY YY``), status ST1 ST2. A heat
meter's adds heat, power, flow rate, temperatures and working hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from citylake.ingest.meter_link import FrameError

START, END, PREAMBLE_BYTE = 0x68, 0x16, 0xFE
PREAMBLE = bytes([PREAMBLE_BYTE] * 2)
READ_DATA, READ_REPLY, READ_ERROR_REPLY = 0x01, 0x81, 0xC1
REPLY_BIT, ABNORMAL_BIT = 0x80, 0x40
MAX_DATA_LENGTH = 100
DI_CURRENT = 0x901F
DiOrder = Literal["low_first", "high_first"]

METER_TYPES = {
    0x10: "cold_water_meter",
    0x11: "hot_water_meter",
    0x12: "drinking_water_meter",
    0x13: "reclaimed_water_meter",
    0x20: "heat_meter",
    0x21: "cooling_meter",
    0x30: "gas_meter",
}
HEAT_TYPES = frozenset({0x20, 0x21})

# Unit codes of CJ/T 188: code -> (unit, factor applied to the value).
UNIT_CODES: dict[int, tuple[str, float]] = {
    0x01: ("J", 1.0),
    0x02: ("Wh", 1.0),
    0x05: ("kWh", 1.0),
    0x08: ("MWh", 1.0),
    0x0A: ("MWh", 100.0),
    0x0B: ("kJ", 1.0),
    0x0E: ("MJ", 1.0),
    0x11: ("GJ", 1.0),
    0x13: ("GJ", 100.0),
    0x14: ("W", 1.0),
    0x17: ("kW", 1.0),
    0x1A: ("MW", 1.0),
    0x29: ("L", 1.0),
    0x2C: ("m3", 1.0),
    0x32: ("L/h", 1.0),
    0x35: ("m3/h", 1.0),
}
VALVE_STATES = {0b00: "open", 0b01: "closed", 0b10: "abnormal", 0b11: "abnormal"}


class DecodeError(ValueError):
    """A frame that is complete but wrong; ``str()`` says what."""


def encode_address(address: str) -> bytes:
    if len(address) != 14 or not all(c in "0123456789Aa" for c in address):
        raise ValueError(f"meter address {address!r}: expected 14 digits (A for a wildcard digit)")
    return bytes.fromhex(address)[::-1]


def decode_address(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def checksum(body: bytes) -> int:
    return sum(body) & 0xFF


def di_bytes(di: int, order: DiOrder) -> bytes:
    return di.to_bytes(2, "little" if order == "low_first" else "big")


def build_frame(meter_type: int, address: str, control: int, data: bytes, preamble: bool = True) -> bytes:
    if len(data) > MAX_DATA_LENGTH:
        raise ValueError(f"data field of {len(data)} bytes; at most {MAX_DATA_LENGTH}")
    body = bytes([START, meter_type]) + encode_address(address) + bytes([control, len(data)]) + data
    return (PREAMBLE if preamble else b"") + body + bytes([checksum(body), END])


def read_request(
    meter_type: int, address: str, ser: int, order: DiOrder = "low_first", preamble: bool = True
) -> bytes:
    return build_frame(meter_type, address, READ_DATA, di_bytes(DI_CURRENT, order) + bytes([ser]), preamble)


def find_frame(buffer: bytes) -> tuple[int, int] | None:
    """The span of the first complete frame (a ``meter_link.FrameFinder``)."""
    start = buffer.find(START)
    if start < 0 or len(buffer) < start + 11:
        return None
    length = buffer[start + 10]
    if length > MAX_DATA_LENGTH:
        raise FrameError(f"data length {length} over {MAX_DATA_LENGTH}")
    end = start + 13 + length
    return (start, end) if len(buffer) >= end else None


@dataclass(frozen=True)
class Frame:
    meter_type: int
    address: str
    control: int
    data: bytes


def parse_frame(frame: bytes) -> Frame:
    body = frame.lstrip(bytes([PREAMBLE_BYTE]))
    if len(body) < 13:
        raise DecodeError(f"frame of {len(body)} bytes; at least 13")
    if body[0] != START:
        raise DecodeError(f"start byte {body[0]:02X}, not 68")
    length = body[10]
    if len(body) != 13 + length:
        raise DecodeError(f"length byte says {length} data bytes, frame carries {len(body) - 13}")
    if body[-1] != END:
        raise DecodeError(f"end byte {body[-1]:02X}, not 16")
    expected = checksum(body[:-2])
    if body[-2] != expected:
        raise DecodeError(f"checksum {body[-2]:02X}, computed {expected:02X}")
    raw_address = body[2:9]
    if not all(_is_bcd(b) or b == 0xAA for b in raw_address):
        raise DecodeError(f"address {raw_address.hex()} is not BCD")
    return Frame(body[1], decode_address(raw_address), body[9], body[11:-2])


def _is_bcd(byte: int) -> bool:
    return (byte >> 4) <= 9 and (byte & 0x0F) <= 9


def decode_bcd(raw: bytes, decimals: int) -> float:
    digits = raw[::-1]
    if not all(_is_bcd(b) for b in digits):
        raise DecodeError(f"value {raw.hex()} is not BCD")
    return int(digits.hex()) / float(10**decimals)


def encode_bcd(value: float, length: int, decimals: int) -> bytes:
    number = round(value * 10**decimals)
    if not 0 <= number < 10 ** (2 * length):
        raise ValueError(f"{value} does not fit {length} BCD bytes with {decimals} decimals")
    return bytes.fromhex(f"{number:0{2 * length}d}")[::-1]


@dataclass(frozen=True)
class Quantity:
    metric: str
    value: float
    unit: str | None


@dataclass(frozen=True)
class MeterStatus:
    valve: str
    battery_low: bool
    st1: int
    st2: int

    @property
    def degraded(self) -> bool:
        """What makes this poll's values uncertain: a low battery or a valve fault."""
        return self.battery_low or self.valve == "abnormal"


def decode_status(st1: int, st2: int) -> MeterStatus:
    """ST1 bits 0-1: valve (00 open, 01 closed, 11 abnormal); bit 2: battery low.
    ST2 is the manufacturer's and kept as it is."""
    return MeterStatus(VALVE_STATES[st1 & 0b11], bool(st1 & 0b100), st1, st2)


@dataclass(frozen=True)
class CurrentData:
    """A decoded 901F reply."""

    quantities: tuple[Quantity, ...]
    meter_time: str | None  # ISO 8601 as the meter's clock says, no zone
    status: MeterStatus


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def with_unit(self, metric: str, decimals: int) -> Quantity:
        number = decode_bcd(self.take(4), decimals)
        code = self.take(1)[0]
        if code not in UNIT_CODES:
            raise DecodeError(f"{metric}: unknown unit code {code:02X}")
        unit, factor = UNIT_CODES[code]
        return Quantity(metric, number * factor, unit)


def _meter_time(raw: bytes) -> str | None:
    if not any(raw):
        return None  # a meter without a clock sends zeros
    if not all(_is_bcd(b) for b in raw):
        raise DecodeError(f"meter time {raw.hex()} is not BCD")
    ss, mi, hh, dd, mo = (int(f"{b:02x}") for b in raw[:5])
    year = int(raw[6:4:-1].hex())
    return f"{year:04d}-{mo:02d}-{dd:02d}T{hh:02d}:{mi:02d}:{ss:02d}"


def current_data_length(meter_type: int) -> int:
    return 46 if meter_type in HEAT_TYPES else 22


def decode_current_data(
    frame: Frame, meter_type: int, address: str, ser: int, order: DiOrder = "low_first"
) -> CurrentData | MeterStatus:
    """The reply to ``read_request``: the data, or (abnormal reply) the status the
    meter gave instead. Raises ``DecodeError`` for a reply that is not the answer."""
    if frame.address != address.upper():
        raise DecodeError(f"reply from meter {frame.address}, asked {address}")
    if frame.meter_type != meter_type:
        raise DecodeError(f"reply from a meter of type {frame.meter_type:02X}, asked type {meter_type:02X}")
    if frame.control == READ_ERROR_REPLY:
        if len(frame.data) != 3 or frame.data[0] != ser:
            raise DecodeError(f"abnormal reply of {len(frame.data)} bytes: expected SER ST1 ST2")
        return decode_status(frame.data[1], frame.data[2])
    if frame.control != READ_REPLY:
        raise DecodeError(f"control code {frame.control:02X} is not a reply to a read (81 or C1)")
    expected = current_data_length(meter_type)
    if len(frame.data) != expected:
        raise DecodeError(f"901F reply of {len(frame.data)} data bytes, expected {expected}")
    reader = _Reader(frame.data)
    di = reader.take(2)
    if di != di_bytes(DI_CURRENT, order):
        raise DecodeError(
            f"reply for DI {di.hex().upper()}, asked {di_bytes(DI_CURRENT, order).hex().upper()}"
        )
    got_ser = reader.take(1)[0]
    if got_ser != ser:
        raise DecodeError(f"reply with SER {got_ser:02X} to request SER {ser:02X}")
    if meter_type in HEAT_TYPES:
        quantities = [
            reader.with_unit("settlement_day_heat", 2),
            reader.with_unit("current_heat", 2),
            reader.with_unit("heat_power", 2),
            reader.with_unit("flow_rate", 4),
            reader.with_unit("cumulative_flow", 2),
            Quantity("supply_temperature", decode_bcd(reader.take(3), 2), "Cel"),
            Quantity("return_temperature", decode_bcd(reader.take(3), 2), "Cel"),
            Quantity("working_hours", decode_bcd(reader.take(3), 0), "h"),
        ]
    else:
        quantities = [reader.with_unit("cumulative_flow", 2), reader.with_unit("settlement_day_flow", 2)]
    meter_time = _meter_time(reader.take(7))
    st = reader.take(2)
    return CurrentData(tuple(quantities), meter_time, decode_status(st[0], st[1]))


def encode_current_data(
    meter_type: int,
    ser: int,
    values: dict[str, float],
    status: tuple[int, int] = (0, 0),
    clock: bytes = bytes(7),
    order: DiOrder = "low_first",
) -> bytes:
    """The data field of a 901F reply (the simulator answers with it); flows in
    m3, heat in kWh, power in kW, flow rate in m3/h."""

    def q(metric: str, code: int, decimals: int = 2) -> bytes:
        return encode_bcd(values.get(metric, 0.0), 4, decimals) + bytes([code])

    data = di_bytes(DI_CURRENT, order) + bytes([ser])
    if meter_type in HEAT_TYPES:
        data += q("settlement_day_heat", 0x05) + q("current_heat", 0x05) + q("heat_power", 0x17)
        data += q("flow_rate", 0x35, 4) + q("cumulative_flow", 0x2C)
        data += encode_bcd(values.get("supply_temperature", 0.0), 3, 2)
        data += encode_bcd(values.get("return_temperature", 0.0), 3, 2)
        data += encode_bcd(values.get("working_hours", 0.0), 3, 0)
    else:
        data += q("cumulative_flow", 0x2C) + q("settlement_day_flow", 0x2C)
    return data + clock + bytes(status)
