"""DL/T 645-2007 frames ⇄ values. Pure: no I/O, no clock.

Frame (every multi-byte field least significant byte first)::

    [FE FE FE FE] 68 A0 A1 A2 A3 A4 A5 68 C L DATA... CS 16

- ``A0..A5``: the meter address, 12 BCD digits, lowest pair first
  (meter ``000012345678`` is ``78 56 34 12 00 00``); ``AA`` is a wildcard.
- ``C``: bit 7 direction (1 = the meter answers), bit 6 abnormal answer,
  bit 5 follow-up frame, bits 4..0 the function (``11`` read data,
  ``13`` read address).
- ``DATA``: every byte sent plus ``0x33`` (so a line idling at 00 never looks
  like data); a read is the 4-byte data identifier (DI, ``DI0`` first), its
  reply the DI then the value in BCD; an error reply is one error byte.
- ``CS``: the sum of every byte from the first ``68`` to the end of DATA, mod 256.
"""

from __future__ import annotations

from dataclasses import dataclass

from citylake.ingest.meter_link import FrameError

START, END, PREAMBLE_BYTE = 0x68, 0x16, 0xFE
PREAMBLE = bytes([PREAMBLE_BYTE] * 4)
READ_DATA, READ_ADDRESS = 0x11, 0x13
READ_REPLY, READ_ERROR_REPLY, READ_ADDRESS_REPLY = 0x91, 0xD1, 0x93
FOLLOW_UP_BIT, ABNORMAL_BIT, REPLY_BIT = 0x20, 0x40, 0x80
MAX_DATA_LENGTH = 200  # the standard's limit for a read reply's data field
BROADCAST_ADDRESS = "AAAAAAAAAAAA"

# The error byte of an abnormal reply (DL/T 645-2007 table "错误信息字").
ERROR_BITS = {
    0x01: "other error",
    0x02: "no requested data",
    0x04: "password error or unauthorised",
    0x08: "baud rate cannot be changed",
    0x10: "annual time zones exceeded",
    0x20: "daily time slots exceeded",
    0x40: "tariffs exceeded",
}


class DecodeError(ValueError):
    """A frame that is complete but wrong; ``str()`` says what."""


@dataclass(frozen=True)
class DataItem:
    """How the value under one DI is encoded: ``length`` BCD bytes with
    ``decimals`` digits after the point; ``signed`` quantities carry the sign in
    the top bit of the most significant byte."""

    di: int
    metric: str
    unit: str | None
    length: int
    decimals: int
    signed: bool = False


# The DIs of DL/T 645-2007 appendix A that a city reads from its meters.
DATA_ITEMS: dict[int, DataItem] = {
    item.di: item
    for item in (
        DataItem(0x00000000, "combined_active_energy", "kWh", 4, 2, signed=True),
        DataItem(0x00010000, "forward_active_energy", "kWh", 4, 2),
        DataItem(0x00020000, "reverse_active_energy", "kWh", 4, 2),
        DataItem(0x02010100, "voltage_a", "V", 2, 1),
        DataItem(0x02010200, "voltage_b", "V", 2, 1),
        DataItem(0x02010300, "voltage_c", "V", 2, 1),
        DataItem(0x02020100, "current_a", "A", 3, 3, signed=True),
        DataItem(0x02020200, "current_b", "A", 3, 3, signed=True),
        DataItem(0x02020300, "current_c", "A", 3, 3, signed=True),
        DataItem(0x02030000, "active_power", "kW", 3, 4, signed=True),
        DataItem(0x02040000, "reactive_power", "kvar", 3, 4, signed=True),
        DataItem(0x02050000, "apparent_power", "kVA", 3, 4, signed=True),
        DataItem(0x02060000, "power_factor", None, 2, 3, signed=True),
        DataItem(0x02800001, "neutral_current", "A", 3, 3, signed=True),
        DataItem(0x02800002, "frequency", "Hz", 2, 2),
        DataItem(0x02800007, "meter_temperature", "Cel", 2, 1, signed=True),
    )
}
DATA_ITEMS_BY_METRIC = {item.metric: item for item in DATA_ITEMS.values()}


def di_text(di: int) -> str:
    """``02 01 01 00`` as the standard writes a DI (DI3 first)."""
    return " ".join(f"{b:02X}" for b in di.to_bytes(4, "big"))


def encode_address(address: str) -> bytes:
    """12 digits (or ``A``s) to the 6 address bytes, lowest pair first."""
    if len(address) != 12 or not all(c in "0123456789Aa" for c in address):
        raise ValueError(f"meter address {address!r}: expected 12 digits (A for a wildcard digit)")
    return bytes.fromhex(address)[::-1]


def decode_address(raw: bytes) -> str:
    return raw[::-1].hex().upper()


def checksum(body: bytes) -> int:
    return sum(body) & 0xFF


def build_frame(address: str, control: int, data: bytes = b"", preamble: bool = True) -> bytes:
    if len(data) > MAX_DATA_LENGTH:
        raise ValueError(f"data field of {len(data)} bytes; at most {MAX_DATA_LENGTH}")
    body = (
        bytes([START]) + encode_address(address) + bytes([START, control, len(data)])
        + bytes((b + 0x33) & 0xFF for b in data)
    )  # fmt: skip
    return (PREAMBLE if preamble else b"") + body + bytes([checksum(body), END])


def read_request(address: str, di: int, preamble: bool = True) -> bytes:
    return build_frame(address, READ_DATA, di.to_bytes(4, "little"), preamble)


def read_address_request(preamble: bool = True) -> bytes:
    return build_frame(BROADCAST_ADDRESS, READ_ADDRESS, b"", preamble)


def find_frame(buffer: bytes) -> tuple[int, int] | None:
    """The span of the first complete frame (a ``meter_link.FrameFinder``): wake-up
    ``FE`` bytes and line noise before the first ``68`` are skipped; a header
    that cannot be DL/T 645 or a length over the standard's limit raises."""
    start = buffer.find(START)
    if start < 0:
        return None
    if len(buffer) < start + 10:
        return None
    if buffer[start + 7] != START:
        raise FrameError(f"no second start byte 68 at offset {start + 7} (got {buffer[start + 7]:02X})")
    length = buffer[start + 9]
    if length > MAX_DATA_LENGTH:
        raise FrameError(f"data length {length} over the standard's {MAX_DATA_LENGTH}")
    end = start + 12 + length
    return (start, end) if len(buffer) >= end else None


@dataclass(frozen=True)
class Frame:
    address: str
    control: int
    data: bytes  # with the 0x33 offset removed

    @property
    def is_reply(self) -> bool:
        return bool(self.control & REPLY_BIT)

    @property
    def is_abnormal(self) -> bool:
        return bool(self.control & ABNORMAL_BIT)

    @property
    def function(self) -> int:
        return self.control & 0x1F


def parse_frame(frame: bytes) -> Frame:
    """One frame as ``find_frame`` cut it (the preamble may still be on it)."""
    body = frame.lstrip(bytes([PREAMBLE_BYTE]))
    if len(body) < 12:
        raise DecodeError(f"frame of {len(body)} bytes; at least 12")
    if body[0] != START or body[7] != START:
        raise DecodeError("start bytes are not 68 .. 68")
    length = body[9]
    if len(body) != 12 + length:
        raise DecodeError(f"length byte says {length} data bytes, frame carries {len(body) - 12}")
    if body[-1] != END:
        raise DecodeError(f"end byte {body[-1]:02X}, not 16")
    expected = checksum(body[:-2])
    if body[-2] != expected:
        raise DecodeError(f"checksum {body[-2]:02X}, computed {expected:02X}")
    raw_address = body[1:7]
    if not all(_is_bcd(b) or b == 0xAA for b in raw_address):
        raise DecodeError(f"address {raw_address.hex()} is not BCD")
    data = bytes((b - 0x33) & 0xFF for b in body[10:-2])
    return Frame(decode_address(raw_address), body[8], data)


def _is_bcd(byte: int) -> bool:
    return (byte >> 4) <= 9 and (byte & 0x0F) <= 9


def decode_bcd(raw: bytes, decimals: int, signed: bool) -> float:
    """BCD bytes (least significant first) to a number."""
    digits = bytearray(raw[::-1])
    negative = False
    if signed and digits and digits[0] & 0x80:
        negative = True
        digits[0] &= 0x7F
    if not all(_is_bcd(b) for b in digits):
        raise DecodeError(f"value {raw.hex()} is not BCD")
    number = int(digits.hex()) if digits else 0
    value = number / float(10**decimals)
    return -value if negative else value


def encode_bcd(value: float, length: int, decimals: int, signed: bool) -> bytes:
    """The inverse of ``decode_bcd`` (the simulator answers with it)."""
    number = round(abs(value) * 10**decimals)
    limit = 10 ** (2 * length - (1 if signed else 0))
    if number >= limit:
        raise ValueError(f"{value} does not fit {length} BCD bytes with {decimals} decimals")
    digits = bytearray.fromhex(f"{number:0{2 * length}d}")
    if signed and value < 0:
        digits[0] |= 0x80
    return bytes(digits[::-1])


def error_text(code: int) -> str:
    names = [name for bit, name in ERROR_BITS.items() if code & bit]
    return f"error 0x{code:02X} ({', '.join(names) or 'reserved bit'})"


@dataclass(frozen=True)
class ReadReply:
    """What a meter said to a read: a value, or an error byte."""

    value: float | None
    error: int | None


def decode_read_reply(frame: Frame, address: str, item: DataItem) -> ReadReply:
    """The reply to ``read_request(address, item.di)``; raises ``DecodeError``
    for a reply that is not one (another meter, another DI, a short value)."""
    if frame.address != address.upper():
        raise DecodeError(f"reply from meter {frame.address}, asked {address}")
    if not frame.is_reply or frame.function != READ_DATA:
        raise DecodeError(f"control code {frame.control:02X} is not a reply to a read (91, B1 or D1)")
    if frame.is_abnormal:
        if len(frame.data) != 1:
            raise DecodeError(f"error reply with {len(frame.data)} data bytes, not 1")
        return ReadReply(None, frame.data[0])
    if len(frame.data) < 4:
        raise DecodeError(f"reply of {len(frame.data)} data bytes has no DI")
    di = int.from_bytes(frame.data[:4], "little")
    if di != item.di:
        raise DecodeError(f"reply for DI {di_text(di)}, asked {di_text(item.di)}")
    value = frame.data[4:]
    if len(value) != item.length:
        raise DecodeError(f"DI {di_text(di)} value of {len(value)} bytes, expected {item.length}")
    return ReadReply(decode_bcd(value, item.decimals, item.signed), None)


def decode_address_reply(frame: Frame) -> str:
    """The meter's address from its answer (``93``) to ``read_address_request``: the
    one way to learn the address of a lone meter on a line."""
    if frame.control != READ_ADDRESS_REPLY:
        raise DecodeError(f"control code {frame.control:02X} is not a reply to read address (93)")
    if len(frame.data) != 6 or not all(_is_bcd(b) for b in frame.data):
        raise DecodeError(f"read address reply data {frame.data.hex()} is not a 6-byte BCD address")
    address = decode_address(frame.data)
    if address != frame.address:
        raise DecodeError(f"read address reply names {address} in its data, {frame.address} in its header")
    return address


def read_reply(address: str, item: DataItem, value: float, preamble: bool = True) -> bytes:
    """A meter's normal answer (for the simulator and tests)."""
    data = item.di.to_bytes(4, "little") + encode_bcd(value, item.length, item.decimals, item.signed)
    return build_frame(address, READ_REPLY, data, preamble)


def error_reply(address: str, code: int, preamble: bool = True) -> bytes:
    return build_frame(address, READ_ERROR_REPLY, bytes([code]), preamble)
