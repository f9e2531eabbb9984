"""HJ 212-2017 frames: bytes <-> packets. Pure: no I/O, no clock.

A frame on the wire (HJ 212-2017, 6.3)::

    ##dddd<data segment>CCCC\\r\\n

``dddd`` is the data segment's length in ASCII characters (4 decimal digits),
``CCCC`` the CRC of the data segment as 4 hex digits. The data segment is
``QN=...;ST=..;CN=....;PW=......;MN=...;Flag=.;[PNUM=..;PNO=..;]CP=&&...&&``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

HEADER = b"##"
TRAILER = b"\r\n"
# "##" + 4 length digits + 4 CRC digits + CRLF around the data segment.
FRAME_OVERHEAD = 2 + 4 + 4 + 2
MAX_DATA_LENGTH = 9999  # four decimal digits

# Flag bits (HJ 212-2017 table 4): V5..V0 version, D split packet, A ack wanted.
FLAG_ACK = 0x01
FLAG_SPLIT = 0x02
VERSION_2017 = 1  # Flag's version bits for HJ 212-2017; 0 is HJ 212-2005

ST_REPLY = "91"  # system interaction: the platform's answers
CN_DATA_ACK = "9014"

_QN = re.compile(r"^[0-9]{17}$")
_ST = re.compile(r"^[0-9]{2}$")
_CN = re.compile(r"^[0-9]{4}$")
_MN = re.compile(r"^[0-9A-Za-z]{1,24}$")
_PW = re.compile(r"^[ -~]{0,9}$")


class FrameError(ValueError):
    """A frame that cannot be taken; the message says why, for ``rejected``."""


def crc16(data: bytes) -> int:
    """The standard's CRC (HJ 212-2017 appendix A): register 0xFFFF, each byte
    XORed into the register's HIGH byte shifted down (not into the low byte as
    Modbus's CRC-16 does), then eight shifts with polynomial 0xA001."""
    register = 0xFFFF
    for byte in data:
        register = (register >> 8) ^ byte
        for _ in range(8):
            carry = register & 1
            register >>= 1
            if carry:
                register ^= 0xA001
    return register


def encode_frame(data_segment: str) -> bytes:
    data = data_segment.encode("ascii")
    if len(data) > MAX_DATA_LENGTH:
        raise FrameError(f"data segment of {len(data)} characters exceeds {MAX_DATA_LENGTH}")
    return b"%s%04d%s%04X%s" % (HEADER, len(data), data, crc16(data), TRAILER)


class FrameSplitter:
    """Cuts a TCP byte stream into frames. Garbage before ``##`` is skipped
    (and reported); a length over ``max_data_length`` or a frame that does not
    end in CRLF where its length says is reported and skipped, then the
    splitter resynchronises on the next ``##``. Never holds more than one
    frame's worth of bytes."""

    def __init__(self, max_data_length: int) -> None:
        self.max_data_length = max_data_length
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes | FrameError]:
        """Complete frames (whole, with header and CRLF) and errors, in order."""
        buffer = self._buffer
        buffer += data
        out: list[bytes | FrameError] = []
        while buffer:
            start = buffer.find(HEADER)
            if start < 0:
                # Keep a trailing '#' that may start the next header.
                keep = 1 if buffer.endswith(b"#") else 0
                if len(buffer) > keep:
                    out.append(FrameError(f"garbage outside frames: {len(buffer) - keep} bytes with no ##"))
                del buffer[: len(buffer) - keep]
                break
            if start > 0:
                out.append(FrameError(f"garbage before ##: {start} bytes skipped"))
                del buffer[:start]
            if len(buffer) < 6:
                break
            digits = bytes(buffer[2:6])
            if not digits.isdigit():
                out.append(FrameError(f"bad data length: {digits!r} is not 4 decimal digits"))
                del buffer[:2]
                continue
            length = int(digits)
            if length > self.max_data_length:
                out.append(
                    FrameError(
                        f"frame too long: data length {length} over max_data_length {self.max_data_length}"
                    )
                )
                del buffer[:2]
                continue
            end = length + FRAME_OVERHEAD
            if len(buffer) < end:
                break
            frame = bytes(buffer[:end])
            if not frame.endswith(TRAILER):
                out.append(FrameError(f"bad frame end: no CRLF after data length {length} and CRC"))
                del buffer[:2]
                continue
            del buffer[:end]
            out.append(frame)
        return out


@dataclass(frozen=True)
class Packet:
    """One decoded data segment."""

    qn: str | None
    st: str
    cn: str
    pw: str
    mn: str
    flag: int
    pnum: int | None
    pno: int | None
    # CP's groups (';'-separated) of key=value pairs (','-separated), in order.
    groups: list[dict[str, str]] = field(default_factory=list)

    @property
    def wants_ack(self) -> bool:
        return bool(self.flag & FLAG_ACK)

    @property
    def version(self) -> int:
        return self.flag >> 2

    def cp_value(self, key: str) -> str | None:
        for group in self.groups:
            if key in group:
                return group[key]
        return None


def _pairs(text: str, separators: str, where: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for part in re.split(f"[{separators}]", text):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise FrameError(f"bad {where}: {part[:40]!r} is not key=value")
        pairs.append((key, value))
    return pairs


def decode_frame(frame: bytes) -> Packet:
    """A whole frame (as ``FrameSplitter`` returns it) -> ``Packet``."""
    length = int(frame[2:6])
    data = frame[6 : 6 + length]
    crc_text = frame[6 + length : 10 + length]
    try:
        crc = int(crc_text, 16)
    except ValueError:
        raise FrameError(f"bad CRC: {crc_text!r} is not 4 hex digits") from None
    expected = crc16(data)
    if crc != expected:
        raise FrameError(f"CRC mismatch: frame says {crc:04X}, data segment gives {expected:04X}")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise FrameError(f"not ASCII: data segment byte {exc.start}") from None
    return decode_segment(text)


def decode_segment(text: str) -> Packet:
    head, cp_marker, rest = text.partition("CP=&&")
    if not cp_marker:
        raise FrameError("no CP: the data segment has no CP=&&...&&")
    if not rest.endswith("&&"):
        raise FrameError("bad CP: CP does not end with &&")
    cp = rest[:-2]
    header = dict(_pairs(head, ";", "header"))
    for key in ("ST", "CN", "MN"):
        if key not in header:
            raise FrameError(f"incomplete header: no {key}")
    qn = header.get("QN")
    if qn is not None and not _QN.match(qn):
        raise FrameError(f"bad QN: {qn[:30]!r} is not 17 digits (YYYYMMDDhhmmsszzz)")
    st, cn, mn, pw = header["ST"], header["CN"], header["MN"], header.get("PW", "")
    if not _ST.match(st):
        raise FrameError(f"bad ST: {st[:10]!r} is not 2 digits")
    if not _CN.match(cn):
        raise FrameError(f"bad CN: {cn[:10]!r} is not 4 digits")
    if not _MN.match(mn):
        raise FrameError(f"bad MN: {mn[:30]!r} is not 1 to 24 letters and digits")
    if not _PW.match(pw):
        raise FrameError("bad PW: longer than 9 characters or not printable")
    flag = _int_field(header, "Flag", 0, 0, 255) or 0
    pnum = _int_field(header, "PNUM", None, 1, 9999)
    pno = _int_field(header, "PNO", None, 1, 9999)
    groups = [dict(_pairs(group, ",", "CP")) for group in cp.split(";") if group]
    return Packet(qn, st, cn, pw, mn, flag, pnum, pno, groups)


def _int_field(header: dict[str, str], key: str, default: int | None, low: int, high: int) -> int | None:
    text = header.get(key)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise FrameError(f"bad {key}: {text[:10]!r} is not a number from {low} to {high}")
    return int(text)


def data_ack(packet: Packet) -> bytes:
    """The platform's data answer (CN 9014, ST 91) to a packet whose Flag
    asked for one: same QN, PW and MN, Flag with the 2017 version and no A."""
    qn = f"QN={packet.qn};" if packet.qn else ""
    flag = VERSION_2017 << 2
    segment = f"{qn}ST={ST_REPLY};CN={CN_DATA_ACK};PW={packet.pw};MN={packet.mn};Flag={flag};CP=&&&&"
    return encode_frame(segment)


def encode_packet(
    qn: str | None,
    st: str,
    cn: str,
    pw: str,
    mn: str,
    flag: int,
    cp: str,
) -> bytes:
    """A station's frame (the simulator and tests): ``cp`` is CP's content without the &&."""
    qn_part = f"QN={qn};" if qn else ""
    return encode_frame(f"{qn_part}ST={st};CN={cn};PW={pw};MN={mn};Flag={flag};CP=&&{cp}&&")
