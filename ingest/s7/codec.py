"""S7 tag addresses, read plans and big-endian decoding to ``readings``
values. Pure: no I/O and no snap7 import, so the config validates without
the protocol library and every rule is unit-tested on plain bytes.

S7 stores numbers big-endian (REAL is IEEE 754 single, INT 16-bit and DINT
32-bit two's complement, WORD/DWORD unsigned); a BOOL is bit 0..7 of a byte.
Addresses are written as STEP 7 shows them: ``DB1.DBD0`` (REAL/DINT/DWORD),
``DB1.DBW4`` (INT/WORD), ``DB1.DBB8`` (BYTE), ``DB1.DBX10.3`` (BOOL),
``MD0``, ``MW4``, ``MB8``, ``M2.1`` for the merker (flag) area.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# type -> (size in bytes, struct format, the address width letters it fits)
TYPES: dict[str, tuple[int, str, str]] = {
    "BOOL": (1, "", "X"),
    "BYTE": (1, ">B", "B"),
    "INT": (2, ">h", "W"),
    "WORD": (2, ">H", "W"),
    "DINT": (4, ">i", "D"),
    "DWORD": (4, ">I", "D"),
    "REAL": (4, ">f", "D"),
}
_DB = re.compile(r"^DB(\d+)\.DB([XBWD])(\d+)(?:\.(\d))?$")
_MK = re.compile(r"^M([BWD]?)(\d+)(?:\.(\d))?$")
MAX_READ = 65535  # one plan's span, bytes: beyond that a config error, not a request


class UnsupportedValue(ValueError):
    """A value that cannot become a reading; the message is the ``rejected.reason``."""


@dataclass(frozen=True)
class TagAddress:
    area: str  # "DB" or "MK"
    db: int  # 0 for the merker area
    byte: int
    bit: int | None
    width: str  # X, B, W or D

    @property
    def size(self) -> int:
        return {"X": 1, "B": 1, "W": 2, "D": 4}[self.width]


def parse_address(text: str, type_name: str) -> TagAddress:
    """``DB1.DBD0`` as a ``TagAddress``; ``ValueError`` naming the problem,
    also when the address width does not fit ``type_name``."""
    address = text.strip().upper()
    db_match = _DB.match(address)
    if db_match is not None:
        db, width, byte, bit = (
            int(db_match.group(1)),
            db_match.group(2),
            int(db_match.group(3)),
            db_match.group(4),
        )
        area = "DB"
        if db < 1:
            raise ValueError(f"address {text!r}: data blocks are numbered from 1")
    else:
        mk_match = _MK.match(address)
        if mk_match is None:
            raise ValueError(
                f"address {text!r}: expected DB<n>.DBX<byte>.<bit>, DB<n>.DB[B|W|D]<byte>, "
                "M<byte>.<bit> or M[B|W|D]<byte>"
            )
        area, db = "MK", 0
        width = mk_match.group(1) or "X"
        byte, bit = int(mk_match.group(2)), mk_match.group(3)
    if (width == "X") != (bit is not None):
        raise ValueError(f"address {text!r}: a bit address (X) and only it has .<bit>")
    if bit is not None and int(bit) > 7:
        raise ValueError(f"address {text!r}: bit {bit} is beyond 7")
    if type_name not in TYPES:
        raise ValueError(f"type {type_name!r}: expected one of {', '.join(TYPES)}")
    if TYPES[type_name][2] != width:
        raise ValueError(
            f"address {text!r} is {width}-wide; {type_name} needs a {TYPES[type_name][2]} address"
        )
    return TagAddress(area, db, byte, None if bit is None else int(bit), width)


@dataclass(frozen=True)
class ReadSpan:
    """One read request: a contiguous byte range of one area (and DB)."""

    area: str
    db: int
    start: int
    size: int


def plan_reads(addresses: Sequence[TagAddress], max_gap: int = 32) -> list[ReadSpan]:
    """As few reads as cover every tag: tags of one area and DB whose byte
    ranges are at most ``max_gap`` bytes apart share a read."""
    spans: list[ReadSpan] = []
    keyed = sorted({(a.area, a.db, a.byte, a.byte + a.size) for a in addresses})
    for area, db, start, end in keyed:
        last = spans[-1] if spans else None
        if (
            last is not None
            and (last.area, last.db) == (area, db)
            and start <= last.start + last.size + max_gap
        ):
            spans[-1] = ReadSpan(area, db, last.start, max(last.size, end - last.start))
        else:
            spans.append(ReadSpan(area, db, start, end - start))
    for span in spans:
        if span.size > MAX_READ:
            raise ValueError(f"{span.area}{span.db or ''}: one read of {span.size} bytes is too large")
    return spans


def decode(data: bytes, offset: int, address: TagAddress, type_name: str) -> float:
    """The value of one tag from the bytes of its span (``offset``: where the span starts)."""
    at = address.byte - offset
    size, fmt, _ = TYPES[type_name]
    if at < 0 or at + size > len(data):
        raise UnsupportedValue(f"{len(data)} bytes read do not hold byte {address.byte} (+{size})")
    if type_name == "BOOL":
        return float((data[at] >> (address.bit or 0)) & 1)
    (value,) = struct.unpack_from(fmt, data, at)
    if type_name == "REAL":
        number = float(value)
        if not math.isfinite(number):
            raise UnsupportedValue(f"REAL {number} is not a finite number")
        return float(str(np.float32(number)))  # 21.3 as stored, not 21.299999237060547
    return float(value)
