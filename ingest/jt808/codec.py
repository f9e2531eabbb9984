"""JT/T 808-2013 and -2019 frames: bytes <-> messages. Pure: no I/O, no clock.

On the wire (JT/T 808-2019, 4.4): ``7e <escaped: header body check> 7e``;
``7e`` and ``7d`` inside are sent as ``7d 02`` and ``7d 01``; the check code
is the XOR of header and body. The header is

- 2013: id (WORD), properties (WORD), phone (BCD[6]), serial (WORD)
- 2019 (properties bit 14 set): id, properties, protocol version (BYTE),
  phone (BCD[10]), serial

then, when properties bit 13 (split) is set, packet count and index (WORDs).
Properties bits 0-9 are the body length, 10-12 the encryption (bit 10: RSA).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

FLAG = 0x7E
ESCAPE = 0x7D
LENGTH_MASK = 0x03FF
ENCRYPTION_MASK = 0x1C00
SPLIT_BIT = 0x2000
VERSION_BIT = 0x4000
MAX_BODY = LENGTH_MASK  # 1023, what the length bits can say


class FrameError(ValueError):
    """A frame that cannot be taken; the message says why, for ``rejected``."""


def escape(data: bytes) -> bytes:
    return data.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def unescape(data: bytes) -> bytes:
    if b"\x7d" not in data:
        return data
    out = bytearray()
    index = 0
    end = len(data)
    while index < end:
        byte = data[index]
        if byte == ESCAPE:
            if index + 1 >= end:
                raise FrameError("bad escape: 7d at the end of the frame")
            follower = data[index + 1]
            if follower == 0x01:
                out.append(ESCAPE)
            elif follower == 0x02:
                out.append(FLAG)
            else:
                raise FrameError(f"bad escape: 7d {follower:02x} (only 7d 01 and 7d 02 exist)")
            index += 2
        else:
            out.append(byte)
            index += 1
    return bytes(out)


def check_code(data: bytes) -> int:
    code = 0
    for byte in data:
        code ^= byte
    return code


def bcd_to_digits(data: bytes) -> str:
    digits = data.hex()
    if not digits.isdigit():
        raise FrameError(f"bad BCD: {digits} has nibbles over 9")
    return digits


def digits_to_bcd(digits: str, size: int) -> bytes:
    if not digits.isdigit() or len(digits) > size * 2:
        raise ValueError(f"{digits!r} is not at most {size * 2} digits")
    return bytes.fromhex(digits.rjust(size * 2, "0"))


class FrameSplitter:
    """Cuts a TCP byte stream at ``7e`` flags. Bytes before the first flag are
    reported; a frame longer than ``max_frame_bytes`` (escaped) is reported and
    dropped up to its closing flag, so the buffer never holds more than that."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._oversized = False

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        """Escaped frame contents (between the flags) and errors, in order."""
        out: list[bytes | FrameError] = []
        start = 0
        end = len(data)
        while start < end:
            flag = data.find(b"\x7e", start)
            if not self._in_frame:
                if flag < 0:
                    out.append(FrameError(f"garbage outside frames: {end - start} bytes with no 7e"))
                    return out
                if flag > start:
                    out.append(FrameError(f"garbage before 7e: {flag - start} bytes skipped"))
                self._in_frame = True
                start = flag + 1
                continue
            chunk_end = end if flag < 0 else flag
            if not self._oversized:
                self._buffer += data[start:chunk_end]
                if len(self._buffer) > self.max_frame_bytes:
                    out.append(FrameError(f"frame too long: over max_frame_bytes {self.max_frame_bytes}"))
                    self._oversized = True
                    self._buffer.clear()
            if flag < 0:
                return out
            start = flag + 1
            if self._oversized:
                self._oversized = False
                continue  # dropped; the next flag opens a frame
            if not self._buffer:
                # "7e 7e": a frame's end flag and the next one's start, or two
                # frames sharing one flag; either way stay in a frame.
                continue
            out.append(bytes(self._buffer))
            self._buffer.clear()
        return out


@dataclass(frozen=True)
class Header:
    message_id: int
    properties: int
    version: int | None  # protocol version (2019); None: a 2013 header
    phone: str
    serial: int
    packet_count: int | None = None
    packet_index: int | None = None

    @property
    def body_length(self) -> int:
        return self.properties & LENGTH_MASK

    @property
    def encryption(self) -> int:
        return (self.properties & ENCRYPTION_MASK) >> 10

    @property
    def is_2019(self) -> bool:
        return self.version is not None


@dataclass(frozen=True)
class Message:
    header: Header
    body: bytes


def decode_frame(escaped: bytes) -> Message:
    """A frame's content between the flags -> ``Message``."""
    data = unescape(escaped)
    if len(data) < 13:
        raise FrameError(f"frame too short: {len(data)} bytes")
    content, code = data[:-1], data[-1]
    expected = check_code(content)
    if code != expected:
        raise FrameError(f"check code mismatch: frame says {code:02x}, content gives {expected:02x}")
    message_id, properties = struct.unpack_from(">HH", content)
    if properties & VERSION_BIT:
        if len(content) < 17:
            raise FrameError(f"header too short for a 2019 header: {len(content)} bytes")
        version = content[4]
        phone = bcd_to_digits(content[5:15])
        (serial,) = struct.unpack_from(">H", content, 15)
        offset = 17
    else:
        version = None
        phone = bcd_to_digits(content[4:10])
        (serial,) = struct.unpack_from(">H", content, 10)
        offset = 12
    count = index = None
    if properties & SPLIT_BIT:
        if len(content) < offset + 4:
            raise FrameError("header too short: split flag set but no packet count and index")
        count, index = struct.unpack_from(">HH", content, offset)
        offset += 4
        if not 1 <= index <= count:
            raise FrameError(f"bad packet index: {index} of {count}")
    body = content[offset:]
    header = Header(message_id, properties, version, phone, serial, count, index)
    if len(body) != header.body_length:
        raise FrameError(
            f"body length mismatch: properties say {header.body_length} bytes, frame has {len(body)}"
        )
    if header.encryption:
        raise FrameError(f"encrypted body: encryption bits {header.encryption:03b} (RSA is not supported)")
    return Message(header, body)


def encode_message(
    message_id: int,
    phone: str,
    serial: int,
    body: bytes,
    version: int | None = None,
) -> bytes:
    """A whole escaped frame with flags. ``version`` None: a 2013 header."""
    if len(body) > MAX_BODY:
        raise ValueError(f"body of {len(body)} bytes does not fit the length bits")
    properties = len(body)
    if version is None:
        header = (
            struct.pack(">HH", message_id, properties) + digits_to_bcd(phone, 6) + struct.pack(">H", serial)
        )
    else:
        properties |= VERSION_BIT
        header = (
            struct.pack(">HHB", message_id, properties, version)
            + digits_to_bcd(phone, 10)
            + struct.pack(">H", serial)
        )
    content = header + body
    return b"\x7e" + escape(content + bytes([check_code(content)])) + b"\x7e"
