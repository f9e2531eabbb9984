"""Modbus registers and bits to values, and register maps to requests. Pure: no I/O.

Decoding follows Telegraf's modbus input: a value spans 1, 2 or 4 16-bit
registers; the byte order names where the value's big-endian bytes A (most
significant), B, C, D ... arrive:

- ``ABCD``: big-endian words, big-endian bytes (the Modbus default)
- ``DCBA``: fully reversed (little-endian)
- ``BADC``: big-endian words, bytes swapped within each word
- ``CDAB``: word order swapped, bytes big-endian within each word ("word swap")

For 16-bit types only the byte order within the word matters (``AB`` for ABCD
and CDAB, ``BA`` for DCBA and BADC); 64-bit types extend the pattern to four
words (``CDAB`` -> ``GHEFCDAB``). Strings are a run of registers holding two
characters each; only the byte order within each register applies to them.

Planning merges fields of the same register type whose addresses are at most
``max_gap`` apart into one read, up to the protocol's limit per request
(125 registers, 2000 bits), so a device is read with as few requests as it allows.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, Protocol

RegisterType = Literal["holding", "input", "coil", "discrete"]
DataType = Literal[
    "INT16", "UINT16", "INT32", "UINT32", "INT64", "UINT64", "FLOAT32", "FLOAT64", "BIT", "STRING"
]  # fmt: skip
ByteOrder = Literal["ABCD", "DCBA", "BADC", "CDAB"]

REGISTER_TYPES: tuple[RegisterType, ...] = ("holding", "input", "coil", "discrete")
BIT_TYPES: frozenset[RegisterType] = frozenset({"coil", "discrete"})
# Modbus application protocol v1.1b3, 6.1-6.4: what one read may ask for.
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000
MAX_ADDRESS = 0xFFFF

FUNCTION_CODES: dict[RegisterType, int] = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}

# struct format (big-endian) and width in registers of each numeric type.
_NUMERIC: dict[DataType, tuple[str, int]] = {
    "INT16": (">h", 1),
    "UINT16": (">H", 1),
    "INT32": (">i", 2),
    "UINT32": (">I", 2),
    "INT64": (">q", 4),
    "UINT64": (">Q", 4),
    "FLOAT32": (">f", 2),
    "FLOAT64": (">d", 4),
}

EXCEPTION_CODES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class FieldLayout(Protocol):
    """What the codec needs to know about one field; ``RegisterField`` in
    config.py is one. Read-only, so frozen models and dataclasses both fit."""

    @property
    def name(self) -> str: ...
    @property
    def register_type(self) -> RegisterType: ...
    @property
    def address(self) -> int: ...
    @property
    def data_type(self) -> DataType: ...
    @property
    def byte_order(self) -> ByteOrder: ...
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...
    @property
    def length(self) -> int | None: ...
    @property
    def bit(self) -> int | None: ...


class DecodeError(ValueError):
    """A response that does not hold what the field needs (too few registers)."""


def field_width(data_type: DataType, register_type: RegisterType, length: int | None = None) -> int:
    """Registers (or bits, for coils and discrete inputs) one field occupies."""
    if register_type in BIT_TYPES or data_type == "BIT":
        return 1
    if data_type == "STRING":
        if length is None or length < 1:
            raise ValueError("STRING needs length >= 1 (registers)")
        return length
    return _NUMERIC[data_type][1]


def width_of(field: FieldLayout) -> int:
    return field_width(field.data_type, field.register_type, field.length)


def exception_text(code: int) -> str:
    """``exception code 2 (illegal data address)``."""
    meaning = EXCEPTION_CODES.get(code, "unknown")
    return f"exception code {code} ({meaning})"


# -- decoding -----------------------------------------------------------------


def _check_words(words: Sequence[int], needed: int) -> None:
    if len(words) < needed:
        raise DecodeError(f"needs {needed} registers, got {len(words)}")
    for word in words[:needed]:
        if not 0 <= word <= 0xFFFF:
            raise DecodeError(f"register value {word} is not a 16-bit word")


def registers_to_bytes(words: Sequence[int], byte_order: ByteOrder) -> bytes:
    """The value's bytes in big-endian order (A first), whatever order they came in."""
    swap_bytes = byte_order in ("DCBA", "BADC")
    swap_words = byte_order in ("DCBA", "CDAB")
    ordered = list(reversed(words)) if swap_words else list(words)
    out = bytearray()
    for word in ordered:
        high, low = word >> 8, word & 0xFF
        out += bytes((low, high)) if swap_bytes else bytes((high, low))
    return bytes(out)


def decode_number(words: Sequence[int], data_type: DataType, byte_order: ByteOrder = "ABCD") -> int | float:
    """The raw value of a numeric type (no scale or offset)."""
    if data_type not in _NUMERIC:
        raise ValueError(f"{data_type} is not a numeric type")
    fmt, width = _NUMERIC[data_type]
    _check_words(words, width)
    # 16-bit types: only the byte order within the word matters (AB or BA).
    order: ByteOrder = byte_order if width > 1 else ("BADC" if byte_order in ("DCBA", "BADC") else "ABCD")
    value: int | float = struct.unpack(fmt, registers_to_bytes(words[:width], order))[0]
    return value


def decode_string(words: Sequence[int], length: int, byte_order: ByteOrder = "ABCD") -> str:
    """Two characters per register, first character in the high byte for
    ``ABCD``/``CDAB`` and in the low byte for ``DCBA``/``BADC``. Ends at the first
    NUL; trailing spaces (a common padding) are dropped."""
    _check_words(words, length)
    swap = byte_order in ("DCBA", "BADC")
    raw = bytearray()
    for word in words[:length]:
        high, low = word >> 8, word & 0xFF
        raw += bytes((low, high)) if swap else bytes((high, low))
    text = bytes(raw).split(b"\x00", 1)[0]
    return text.decode("utf-8", errors="replace").rstrip(" ")


def register_bit(word: int, bit: int) -> bool:
    """Bit ``bit`` (0 = least significant) of one register."""
    if not 0 <= bit <= 15:
        raise ValueError(f"bit {bit} is outside 0..15")
    return bool((word >> bit) & 1)


def scaled(raw: float, scale: float = 1.0, offset: float = 0.0) -> float:
    """``raw * scale + offset``, as a float. 64-bit integers above 2**53 lose
    precision here: readings.value is float64."""
    return float(raw) * scale + offset


@dataclass(frozen=True)
class DecodedValue:
    """One field's value: ``number`` for numeric types and bits, ``text`` for
    strings. ``number`` is None when the device sent NaN or infinity."""

    number: float | None = None
    text: str | None = None


def decode_field(
    field: FieldLayout, words: Sequence[int] | None = None, bits: Sequence[bool] | None = None
) -> DecodedValue:
    """Decode ``field`` from its own registers (``words``, starting at its address)
    or, for coils and discrete inputs, its own bits (``bits[0]``)."""
    if field.register_type in BIT_TYPES:
        if not bits:
            raise DecodeError(f"field {field.name!r} needs 1 bit, got none")
        return DecodedValue(number=1.0 if bits[0] else 0.0)
    if words is None:
        raise DecodeError(f"field {field.name!r} needs registers, got none")
    if field.data_type == "BIT":
        _check_words(words, 1)
        return DecodedValue(number=1.0 if register_bit(words[0], field.bit or 0) else 0.0)
    if field.data_type == "STRING":
        return DecodedValue(text=decode_string(words, width_of(field), field.byte_order))
    value = scaled(decode_number(words, field.data_type, field.byte_order), field.scale, field.offset)
    return DecodedValue(number=value if math.isfinite(value) else None)


# -- planning -----------------------------------------------------------------


@dataclass(frozen=True)
class FieldSlice:
    """Where one field sits in a request's response: ``offset`` registers (or
    bits) from the request's start, ``width`` long."""

    field: FieldLayout
    offset: int
    width: int


# offset, width, low word first, the words' Struct, the value's Struct, scale, offset
_NumberDecoder = tuple[int, int, bool, struct.Struct, struct.Struct, float, float]


@dataclass(frozen=True)
class ModbusRequest:
    """One read: ``count`` registers (or bits) of ``register_type`` from ``address``."""

    register_type: RegisterType
    address: int
    count: int
    fields: tuple[FieldSlice, ...]

    @property
    def function_code(self) -> int:
        return FUNCTION_CODES[self.register_type]

    @property
    def last_address(self) -> int:
        return self.address + self.count - 1

    @property
    def reads_bits(self) -> bool:
        return self.register_type in BIT_TYPES

    def describe(self) -> str:
        """``holding 100..109``: how reasons and logs name the request."""
        return f"{self.register_type} {self.address}..{self.last_address}"

    def pdu(self) -> bytes:
        """The request PDU (function code, address, count), for ``raw`` records."""
        return struct.pack(">BHH", self.function_code, self.address, self.count)

    @cached_property
    def _number_decoders(self) -> tuple[_NumberDecoder, ...] | None:
        """Per field (offset, width, reversed words, pack, unpack, scale, offset)
        when every field of a register read is a number: ``numbers`` then
        decodes with two struct calls a field. None for bits and strings."""
        if self.reads_bits:
            return None
        decoders = []
        for part in self.fields:
            layout = part.field
            if layout.data_type not in _NUMERIC:
                return None
            fmt, width = _NUMERIC[layout.data_type]
            order = layout.byte_order
            # A little-endian word is a byte swap within the word; CDAB and DCBA
            # send the low word first.
            pack = struct.Struct(("<" if order in ("DCBA", "BADC") else ">") + "H" * width)
            swap_words = order in ("DCBA", "CDAB")
            decoders.append(
                (part.offset, width, swap_words, pack, struct.Struct(fmt), layout.scale, layout.offset)
            )
        return tuple(decoders)

    def numbers(self, words: Sequence[int] | None) -> list[float | None] | None:
        """Every field's value (None for NaN or infinity) when all of them are
        numbers and the answer holds them, the same values ``decode`` gives;
        None otherwise (``decode`` then decodes, or names what is wrong)."""
        decoders = self._number_decoders
        if decoders is None or words is None or len(words) < self.count:
            return None
        values: list[float | None] = []
        isfinite = math.isfinite
        try:
            for start, width, swap_words, pack, unpack, scale, offset in decoders:
                field_words = words[start : start + width]
                if swap_words:
                    field_words = field_words[::-1]
                value = float(unpack.unpack(pack.pack(*field_words))[0]) * scale + offset
                values.append(value if isfinite(value) else None)
        except struct.error:  # a word outside 0..0xFFFF: decode names it
            return None
        return values

    def decode(
        self, words: Sequence[int] | None, bits: Sequence[bool] | None
    ) -> list[tuple[FieldLayout, DecodedValue]]:
        """Every field of this request from its response. Raises ``DecodeError``
        naming the field if the response is short."""
        got = len(bits or []) if self.reads_bits else len(words or [])
        unit = "bits" if self.reads_bits else "registers"
        values: list[tuple[FieldLayout, DecodedValue]] = []
        for part in self.fields:
            end = part.offset + part.width
            if got < end:
                name = part.field.name
                raise DecodeError(f"{self.describe()}: {got} {unit} in the answer, {name!r} needs {end}")
            if self.reads_bits:
                values.append((part.field, decode_field(part.field, bits=(bits or [])[part.offset : end])))
            else:
                values.append((part.field, decode_field(part.field, words=(words or [])[part.offset : end])))
        return values


@dataclass(frozen=True)
class ModbusRequestPlan:
    """The requests that read one device's whole register map, in order."""

    requests: tuple[ModbusRequest, ...]

    @property
    def field_count(self) -> int:
        return sum(len(r.fields) for r in self.requests)

    def __len__(self) -> int:
        return len(self.requests)


def _limit(register_type: RegisterType, max_regs: int, max_bits: int) -> int:
    return max_bits if register_type in BIT_TYPES else max_regs


def plan_requests(
    fields: Sequence[FieldLayout],
    max_gap: int = 10,
    max_regs: int = MAX_REGISTERS_PER_READ,
    max_bits: int = MAX_BITS_PER_READ,
    one_per_field: bool = False,
) -> list[ModbusRequest]:
    """Requests covering ``fields``: grouped by register type (in the order
    holding, input, coil, discrete), sorted by address, neighbours at most
    ``max_gap`` registers (or bits) apart merged while the request stays within
    ``max_regs`` registers or ``max_bits`` bits. Overlapping fields share
    registers. ``one_per_field``: one request per field, for devices that refuse
    reads spanning unmapped addresses."""
    if not 1 <= max_regs <= MAX_REGISTERS_PER_READ:
        raise ValueError(f"max_regs {max_regs} is outside 1..{MAX_REGISTERS_PER_READ}")
    if not 1 <= max_bits <= MAX_BITS_PER_READ:
        raise ValueError(f"max_bits {max_bits} is outside 1..{MAX_BITS_PER_READ}")
    if max_gap < 0:
        raise ValueError(f"max_gap {max_gap} is negative")
    requests: list[ModbusRequest] = []
    for register_type in REGISTER_TYPES:
        limit = _limit(register_type, max_regs, max_bits)
        group = sorted(
            (f for f in fields if f.register_type == register_type), key=lambda f: (f.address, -width_of(f))
        )
        for field in group:
            width = width_of(field)
            if width > limit:
                raise ValueError(
                    f"field {field.name!r} spans {width} registers, more than {limit} per request"
                )
            if field.address + width - 1 > MAX_ADDRESS:
                raise ValueError(f"field {field.name!r} ends beyond address {MAX_ADDRESS}")
        requests.extend(_merge(register_type, group, max_gap, limit, one_per_field))
    return requests


def _merge(
    register_type: RegisterType, group: Sequence[FieldLayout], max_gap: int, limit: int, one_per_field: bool
) -> list[ModbusRequest]:
    requests: list[ModbusRequest] = []
    start, end = 0, -1  # current request covers start..end inclusive
    members: list[FieldLayout] = []

    def close() -> None:
        if members:
            slices = tuple(FieldSlice(f, f.address - start, width_of(f)) for f in members)
            requests.append(ModbusRequest(register_type, start, end - start + 1, slices))

    for field in group:
        field_end = field.address + width_of(field) - 1
        new_end = max(end, field_end)
        fits = bool(members) and not one_per_field and field.address - end - 1 <= max_gap
        if fits and new_end - start + 1 <= limit:
            members.append(field)
            end = new_end
            continue
        close()
        start, end, members = field.address, field_end, [field]
    close()
    return requests
