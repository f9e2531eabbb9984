"""JT/T 808 message bodies: terminal -> platform decoded, platform -> terminal
built. Pure: no I/O, no clock."""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field

from citylake.ingest.jt808.codec import FrameError, bcd_to_digits

REGISTER = 0x0100
AUTHENTICATE = 0x0102
HEARTBEAT = 0x0002
UNREGISTER = 0x0003
TERMINAL_REPLY = 0x0001
LOCATION = 0x0200
BATCH_LOCATION = 0x0704
PLATFORM_REPLY = 0x8001
REGISTER_REPLY = 0x8100

# 0x8001 results (JT/T 808-2019 8.2).
RESULT_OK = 0
RESULT_FAILED = 1
RESULT_BAD_MESSAGE = 2
RESULT_UNSUPPORTED = 3
# 0x8100 results.
REGISTER_OK = 0

# Location status bits (table 24).
STATUS_ACC = 1 << 0
STATUS_FIXED = 1 << 1
STATUS_SOUTH = 1 << 2
STATUS_WEST = 1 << 3
# Alarm bits that mean something is wrong with positioning (table 25):
# GNSS module fault (4), antenna cut (5), antenna short (6).
ALARM_GNSS_FAULTS = (1 << 4) | (1 << 5) | (1 << 6)
# Alarm bit names for the alarm events (the ones a city's fleets act on).
ALARM_NAMES = {
    0: "emergency",
    1: "overspeed",
    2: "fatigue_driving",
    3: "danger_warning",
    4: "gnss_module_fault",
    5: "gnss_antenna_cut",
    6: "gnss_antenna_short",
    7: "main_power_undervoltage",
    8: "main_power_off",
    18: "driving_overtime_today",
    19: "parking_overtime",
    20: "area_in_out",
    21: "route_in_out",
    23: "route_deviation",
    26: "vehicle_theft",
    27: "illegal_ignition",
    28: "illegal_displacement",
    29: "collision_rollover",
}
BEIJING = dt.timezone(dt.timedelta(hours=8))


@dataclass(frozen=True)
class Registration:
    province: int
    city: int
    manufacturer: str
    model: str
    terminal_id: str
    plate_color: int
    plate: str


@dataclass(frozen=True)
class Authentication:
    code: str
    imei: str | None = None
    software_version: str | None = None


@dataclass
class Location:
    alarm: int
    status: int
    latitude: float
    longitude: float
    altitude_m: int
    speed_kmh: float
    direction_deg: int
    ts_ms: int
    # Extra items by id: decoded numbers for the ones we know, raw hex for others.
    extras: dict[int, float] = field(default_factory=dict)
    unknown_extras: dict[int, str] = field(default_factory=dict)


def _text(data: bytes) -> str:
    """STRING fields are GBK, padded with NULs."""
    return data.rstrip(b"\x00").decode("gbk", errors="replace").strip()


def decode_registration(body: bytes, is_2019: bool) -> Registration:
    sizes = (11, 30, 30) if is_2019 else (5, 20, 7)
    fixed = 4 + sum(sizes) + 1
    if len(body) < fixed:
        raise FrameError(f"short register body: {len(body)} bytes, at least {fixed} needed")
    province, city = struct.unpack_from(">HH", body)
    offset = 4
    fields: list[str] = []
    for size in sizes:
        fields.append(_text(body[offset : offset + size]))
        offset += size
    color = body[offset]
    plate = _text(body[offset + 1 :])
    return Registration(province, city, fields[0], fields[1], fields[2], color, plate)


def decode_authentication(body: bytes, is_2019: bool) -> Authentication:
    if not is_2019:
        return Authentication(_text(body))
    if not body:
        raise FrameError("short authentication body: no code length")
    length = body[0]
    if len(body) < 1 + length + 15 + 20:
        raise FrameError(f"short authentication body: {len(body)} bytes for a {length}-byte code")
    code = _text(body[1 : 1 + length])
    imei = _text(body[1 + length : 16 + length])
    software = _text(body[16 + length : 36 + length])
    return Authentication(code, imei, software)


def parse_bcd_time(data: bytes) -> int:
    """BCD[6] ``YYMMDDhhmmss`` in GMT+8 -> epoch ms UTC."""
    digits = bcd_to_digits(data)
    try:
        when = dt.datetime.strptime("20" + digits, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING)
    except ValueError:
        raise FrameError(f"bad time: BCD {digits} is not YYMMDDhhmmss") from None
    return int(when.timestamp() * 1000)


# Extra items with a number (id -> (size, divisor)): table 27.
_EXTRA_NUMBERS: dict[int, tuple[int, int]] = {
    0x01: (4, 10),  # mileage, 1/10 km
    0x02: (2, 10),  # fuel, 1/10 L
    0x03: (2, 10),  # speed from the recorder, 1/10 km/h
    0x04: (2, 1),  # id of an alarm event needing manual confirmation
    0x25: (4, 1),  # extended vehicle signal status bits
    0x2A: (2, 1),  # IO status bits
    0x2B: (4, 1),  # analog inputs (AD0 low word, AD1 high word)
    0x30: (1, 1),  # wireless signal strength
    0x31: (1, 1),  # GNSS satellites in use
}


def decode_location(body: bytes) -> Location:
    if len(body) < 28:
        raise FrameError(f"short location body: {len(body)} bytes, 28 needed")
    alarm, status, lat, lon, altitude, speed, direction = struct.unpack_from(">IIIIHHH", body)
    if lat > 90_000_000 or lon > 180_000_000:
        raise FrameError(f"bad position: latitude {lat} / longitude {lon} (1e-6 degrees) out of range")
    latitude = lat / 1e6 * (-1 if status & STATUS_SOUTH else 1)
    longitude = lon / 1e6 * (-1 if status & STATUS_WEST else 1)
    ts = parse_bcd_time(body[22:28])
    location = Location(alarm, status, latitude, longitude, altitude, speed / 10, direction, ts)
    offset = 28
    while offset < len(body):
        if offset + 2 > len(body):
            raise FrameError(f"bad extra item: {len(body) - offset} trailing byte")
        item, size = body[offset], body[offset + 1]
        value = body[offset + 2 : offset + 2 + size]
        if len(value) != size:
            raise FrameError(f"bad extra item: 0x{item:02x} says {size} bytes, {len(value)} left")
        known = _EXTRA_NUMBERS.get(item)
        if known is not None and known[0] == size:
            location.extras[item] = int.from_bytes(value, "big") / known[1]
        else:
            location.unknown_extras[item] = value.hex()
        offset += 2 + size
    return location


def decode_batch(body: bytes) -> tuple[int, list[bytes]]:
    """0x0704: (type: 0 normal, 1 blind-area backfill, location bodies)."""
    if len(body) < 3:
        raise FrameError(f"short batch body: {len(body)} bytes")
    count, kind = struct.unpack_from(">HB", body)
    items: list[bytes] = []
    offset = 3
    for number in range(count):
        if offset + 2 > len(body):
            raise FrameError(f"bad batch: item {number + 1} of {count} missing")
        (size,) = struct.unpack_from(">H", body, offset)
        item = body[offset + 2 : offset + 2 + size]
        if len(item) != size:
            raise FrameError(f"bad batch: item {number + 1} says {size} bytes, {len(item)} left")
        items.append(item)
        offset += 2 + size
    if offset != len(body):
        raise FrameError(f"bad batch: {len(body) - offset} bytes after {count} items")
    return kind, items


def platform_reply_body(serial: int, message_id: int, result: int) -> bytes:
    """0x8001 body: the terminal message's serial and id, and the result."""
    return struct.pack(">HHB", serial, message_id, result)


def register_reply_body(serial: int, result: int, auth_code: str) -> bytes:
    """0x8100 body: the register message's serial, the result, the auth code on success."""
    code = auth_code.encode("gbk") if result == REGISTER_OK else b""
    return struct.pack(">HB", serial, result) + code
