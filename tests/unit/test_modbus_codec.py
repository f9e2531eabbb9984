"""Modbus codec: every type in every byte order, scale and offset, strings,
bits; request planning. No I/O."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from citylake.ingest.modbus.codec import (
    ByteOrder,
    DataType,
    DecodeError,
    ModbusRequest,
    RegisterType,
    decode_field,
    decode_number,
    decode_string,
    exception_text,
    plan_requests,
    register_bit,
    registers_to_bytes,
    scaled,
)

ORDERS: tuple[ByteOrder, ...] = ("ABCD", "DCBA", "BADC", "CDAB")
# Where the value's big-endian bytes (A = most significant) arrive on the wire,
# as Telegraf documents the orders for 2-, 4- and 8-byte values.
WIRE_PATTERNS: dict[int, dict[ByteOrder, str]] = {
    2: {"ABCD": "AB", "CDAB": "AB", "DCBA": "BA", "BADC": "BA"},
    4: {"ABCD": "ABCD", "DCBA": "DCBA", "BADC": "BADC", "CDAB": "CDAB"},
    8: {"ABCD": "ABCDEFGH", "DCBA": "HGFEDCBA", "BADC": "BADCFEHG", "CDAB": "GHEFCDAB"},
}
FORMATS: dict[DataType, str] = {
    "INT16": ">h", "UINT16": ">H", "INT32": ">i", "UINT32": ">I",
    "INT64": ">q", "UINT64": ">Q", "FLOAT32": ">f", "FLOAT64": ">d",
}  # fmt: skip
VALUES: dict[DataType, list[float]] = {
    "INT16": [0, 1, -1, -300, 32767, -32768],
    "UINT16": [0, 1, 4660, 65535],
    "INT32": [0, -1, -123456789, 2**31 - 1, -(2**31)],
    "UINT32": [0, 305419896, 4_000_000_000, 2**32 - 1],
    "INT64": [0, -1, -9876543210123, 2**62],
    "UINT64": [0, 72623859790382856, 2**53],
    "FLOAT32": [0.0, -1.5, 21.5, 3.1415927410125732, -1.0e-3],
    "FLOAT64": [0.0, -2.5, -1234.5678, 1.0e300],
}


def wire_words(data_type: DataType, value: float, order: ByteOrder) -> list[int]:
    """The registers a device sends for ``value`` in ``order`` (the test's own encoder)."""
    packed = struct.pack(FORMATS[data_type], value)
    letters = "ABCDEFGH"[: len(packed)]
    wire = bytes(packed[letters.index(c)] for c in WIRE_PATTERNS[len(packed)][order])
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]


@dataclass(frozen=True)
class F:
    """A field as the codec sees it (RegisterField has the same attributes)."""

    name: str
    register_type: RegisterType = "holding"
    address: int = 0
    data_type: DataType = "UINT16"
    byte_order: ByteOrder = "ABCD"
    scale: float = 1.0
    offset: float = 0.0
    length: int | None = None
    bit: int | None = None


# -- decoding -----------------------------------------------------------------


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("data_type", list(FORMATS))
def test_every_type_in_every_byte_order(data_type: DataType, order: ByteOrder) -> None:
    for value in VALUES[data_type]:
        words = wire_words(data_type, value, order)
        decoded = decode_number(words, data_type, order)
        if data_type == "FLOAT32":
            assert decoded == struct.unpack(">f", struct.pack(">f", value))[0]
        else:
            assert decoded == value, (data_type, order, value, words)


@pytest.mark.parametrize(
    ("data_type", "order", "words", "expected"),
    [
        # Hand-written vectors, independent of the encoder above.
        ("INT16", "ABCD", [0xFFFE], -2),
        ("INT16", "DCBA", [0xFEFF], -2),
        ("UINT16", "BADC", [0x3412], 0x1234),
        ("UINT16", "CDAB", [0x1234], 0x1234),
        ("UINT32", "ABCD", [0x1234, 0x5678], 0x12345678),
        ("UINT32", "DCBA", [0x7856, 0x3412], 0x12345678),
        ("UINT32", "BADC", [0x3412, 0x7856], 0x12345678),
        ("UINT32", "CDAB", [0x5678, 0x1234], 0x12345678),
        ("INT32", "ABCD", [0xF8A4, 0x32EB], -123456789),
        ("FLOAT32", "ABCD", [0xBFC0, 0x0000], -1.5),
        ("FLOAT32", "DCBA", [0x0000, 0xC0BF], -1.5),
        ("FLOAT32", "BADC", [0xC0BF, 0x0000], -1.5),
        ("FLOAT32", "CDAB", [0x0000, 0xBFC0], -1.5),
        ("UINT64", "ABCD", [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708),
        ("UINT64", "DCBA", [0x0807, 0x0605, 0x0403, 0x0201], 0x0102030405060708),
        ("UINT64", "BADC", [0x0201, 0x0403, 0x0605, 0x0807], 0x0102030405060708),
        ("UINT64", "CDAB", [0x0708, 0x0506, 0x0304, 0x0102], 0x0102030405060708),
        ("INT64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
        ("FLOAT64", "ABCD", [0xC004, 0, 0, 0], -2.5),
        ("FLOAT64", "CDAB", [0, 0, 0, 0xC004], -2.5),
    ],
)
def test_known_vectors(data_type: DataType, order: ByteOrder, words: list[int], expected: float) -> None:
    assert decode_number(words, data_type, order) == expected


def test_registers_to_bytes_reorders_to_big_endian() -> None:
    assert registers_to_bytes([0x0102, 0x0304], "ABCD") == b"\x01\x02\x03\x04"
    assert registers_to_bytes([0x0403, 0x0201], "DCBA") == b"\x01\x02\x03\x04"
    assert registers_to_bytes([0x0201, 0x0403], "BADC") == b"\x01\x02\x03\x04"
    assert registers_to_bytes([0x0304, 0x0102], "CDAB") == b"\x01\x02\x03\x04"


def test_extra_registers_are_ignored_and_missing_ones_refused() -> None:
    assert decode_number([0x0001, 0xFFFF], "UINT16") == 1
    with pytest.raises(DecodeError, match="needs 2 registers, got 1"):
        decode_number([1], "INT32")
    with pytest.raises(DecodeError, match="not a 16-bit word"):
        decode_number([70000], "UINT16")
    with pytest.raises(ValueError, match="not a numeric type"):
        decode_number([1], "STRING")


def test_scale_and_offset() -> None:
    assert scaled(250, 0.1, -5.0) == 250 * 0.1 - 5.0
    field = F("pressure", data_type="INT16", scale=0.01)
    assert decode_field(field, words=[0x10000 - 250]).number == -2.5
    celsius = F("temp", data_type="UINT16", scale=0.1, offset=-40.0)
    assert decode_field(celsius, words=[650]).number == 650 * 0.1 - 40.0
    big = F("energy", data_type="UINT32", byte_order="CDAB", scale=0.001)
    assert decode_field(big, words=[34464, 1]).number == 100000 * 0.001


def test_non_finite_floats_decode_to_no_value() -> None:
    nan = F("level", data_type="FLOAT32")
    assert decode_field(nan, words=[0x7FC0, 0]).number is None
    inf = F("level", data_type="FLOAT32", byte_order="CDAB")
    assert decode_field(inf, words=[0, 0xFF80]).number is None


def test_strings() -> None:
    ps200 = [0x5053, 0x2D32, 0x3030, 0x0000]  # "PS-200\0\0"
    assert decode_string(ps200, 4) == "PS-200"
    assert decode_string(ps200, 4, "CDAB") == "PS-200"  # word order never applies to strings
    swapped = [0x5350, 0x322D, 0x3030, 0x0000]
    assert decode_string(swapped, 4, "DCBA") == "PS-200"
    assert decode_string(swapped, 4, "BADC") == "PS-200"
    assert decode_string([0x4142, 0x2020], 2) == "AB"  # space padding dropped
    assert decode_string([0x4142, 0x0043], 2) == "AB"  # ends at the first NUL
    assert decode_string([0x4142, 0x4344, 0x4546], 2) == "ABCD"  # only its own registers
    field = F("model", data_type="STRING", length=4)
    assert decode_field(field, words=ps200).text == "PS-200"
    with pytest.raises(DecodeError, match="needs 4 registers"):
        decode_string([0x4142], 4)


def test_bits() -> None:
    assert register_bit(0b1001, 0) is True
    assert register_bit(0b1001, 3) is True
    assert register_bit(0b1001, 1) is False
    assert register_bit(0x8000, 15) is True
    with pytest.raises(ValueError, match=r"outside 0\.\.15"):
        register_bit(1, 16)
    alarm = F("overheat", data_type="BIT", bit=3)
    assert decode_field(alarm, words=[0b1000]).number == 1.0
    assert decode_field(alarm, words=[0b0111]).number == 0.0
    coil = F("running", register_type="coil", data_type="BIT")
    assert decode_field(coil, bits=[True]).number == 1.0
    assert decode_field(coil, bits=[False]).number == 0.0
    with pytest.raises(DecodeError, match="needs 1 bit"):
        decode_field(coil, bits=[])


def test_exception_text() -> None:
    assert exception_text(2) == "exception code 2 (illegal data address)"
    assert exception_text(11) == "exception code 11 (gateway target device failed to respond)"
    assert exception_text(99) == "exception code 99 (unknown)"


# -- planning -----------------------------------------------------------------


def spans(requests: list[ModbusRequest]) -> list[tuple[str, int, int]]:
    return [(r.register_type, r.address, r.count) for r in requests]


def test_contiguous_fields_merge_with_offsets() -> None:
    fields = [
        F("c", address=3),
        F("a", address=0, data_type="INT16"),
        F("b", address=1, data_type="INT32"),
    ]
    [request] = plan_requests(fields)
    assert (request.register_type, request.address, request.count) == ("holding", 0, 4)
    assert [(s.field.name, s.offset, s.width) for s in request.fields] == [
        ("a", 0, 1),
        ("b", 1, 2),
        ("c", 3, 1),
    ]
    assert request.describe() == "holding 0..3"
    assert request.function_code == 3
    assert request.pdu() == bytes([3, 0, 0, 0, 4])


def test_gap_limit() -> None:
    # A gap of exactly max_gap unread registers still merges; one more splits.
    assert spans(plan_requests([F("a", address=0), F("b", address=11)], max_gap=10)) == [("holding", 0, 12)]
    assert spans(plan_requests([F("a", address=0), F("b", address=12)], max_gap=10)) == [
        ("holding", 0, 1),
        ("holding", 12, 1),
    ]
    assert spans(plan_requests([F("a", address=0), F("b", address=2)], max_gap=0)) == [
        ("holding", 0, 1),
        ("holding", 2, 1),
    ]
    assert spans(plan_requests([F("a", address=0), F("b", address=1)], max_gap=0)) == [("holding", 0, 2)]


def test_register_types_are_read_separately_in_a_fixed_order() -> None:
    fields = [
        F("d", register_type="discrete", data_type="BIT"),
        F("i", register_type="input"),
        F("c", register_type="coil", data_type="BIT"),
        F("h", register_type="holding"),
    ]
    requests = plan_requests(fields)
    assert [r.register_type for r in requests] == ["holding", "input", "coil", "discrete"]
    assert [r.function_code for r in requests] == [3, 4, 1, 2]


def test_125_register_limit() -> None:
    fields = [F(f"r{i}", address=i) for i in range(126)]
    assert spans(plan_requests(fields)) == [("holding", 0, 125), ("holding", 125, 1)]
    # A value is never split across requests: the FLOAT32 at 124..125 starts a new one.
    fields = [*(F(f"r{i}", address=i) for i in range(124)), F("f", address=124, data_type="FLOAT32")]
    assert spans(plan_requests(fields)) == [("holding", 0, 124), ("holding", 124, 2)]
    assert spans(plan_requests([F(f"r{i}", address=i) for i in range(25)], max_regs=10)) == [
        ("holding", 0, 10),
        ("holding", 10, 10),
        ("holding", 20, 5),
    ]


def test_2000_bit_limit() -> None:
    coils = [F(f"c{i}", register_type="coil", address=i, data_type="BIT") for i in range(2001)]
    assert spans(plan_requests(coils)) == [("coil", 0, 2000), ("coil", 2000, 1)]
    few = [F(f"d{i}", register_type="discrete", address=i * 5, data_type="BIT") for i in range(3)]
    assert spans(plan_requests(few, max_gap=4)) == [("discrete", 0, 11)]
    assert spans(plan_requests(few, max_bits=6, max_gap=4)) == [("discrete", 0, 6), ("discrete", 10, 1)]


def test_one_request_per_field() -> None:
    fields = [F("a", address=0), F("b", address=1), F("c", address=2, data_type="FLOAT32")]
    assert spans(plan_requests(fields, one_per_field=True)) == [
        ("holding", 0, 1),
        ("holding", 1, 1),
        ("holding", 2, 2),
    ]


def test_overlapping_fields_share_registers() -> None:
    fields = [
        F("dry_run", address=110, data_type="BIT", bit=0),
        F("overheat", address=110, data_type="BIT", bit=3),
        F("status", address=110),
        F("pair", address=109, data_type="UINT32"),
    ]
    [request] = plan_requests(fields)
    assert (request.address, request.count) == (109, 2)
    values = {f.name: v.number for f, v in request.decode([0x0001, 0b1001], None)}
    assert values == {"pair": float(0x00010009), "dry_run": 1.0, "overheat": 1.0, "status": 9.0}


def test_request_decodes_every_field_from_one_answer() -> None:
    fields = [
        F("flow", address=100, scale=0.1),
        F("runtime", address=104, data_type="UINT32", byte_order="CDAB"),
        F("model", address=108, data_type="STRING", length=2),
    ]
    [request] = plan_requests(fields)
    words = [1234, 0, 0, 0, 34464, 1, 0, 0, 0x5053, 0x2D32]
    decoded = {f.name: (v.number, v.text) for f, v in request.decode(words, None)}
    assert decoded == {"flow": (1234 * 0.1, None), "runtime": (100000.0, None), "model": (None, "PS-2")}
    with pytest.raises(DecodeError, match=r"holding 100\.\.109: 9 registers in the answer, 'model' needs 10"):
        request.decode(words[:9], None)
    [bits] = plan_requests([F("on", register_type="coil", address=7, data_type="BIT")])
    assert [v.number for _, v in bits.decode(None, [True])] == [1.0]


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match=r"max_regs 126 is outside 1\.\.125"):
        plan_requests([F("a")], max_regs=126)
    with pytest.raises(ValueError, match=r"max_bits 2001 is outside 1\.\.2000"):
        plan_requests([F("a")], max_bits=2001)
    with pytest.raises(ValueError, match="spans 20 registers, more than 10"):
        plan_requests([F("s", data_type="STRING", length=20)], max_regs=10)
    with pytest.raises(ValueError, match="ends beyond address 65535"):
        plan_requests([F("f", address=65534, data_type="FLOAT64")])


def test_empty_map_plans_nothing() -> None:
    assert plan_requests([]) == []


@pytest.mark.parametrize("order", ORDERS)
def test_numbers_give_what_decode_gives_and_leave_the_rest_to_it(order: ByteOrder) -> None:
    fields = [
        F(t, address=10 * i, data_type=t, byte_order=order, scale=0.5, offset=1.0)
        for i, t in enumerate(FORMATS)
    ]
    [request] = plan_requests(fields, max_gap=10)
    words = [0] * request.count
    for i, data_type in enumerate(FORMATS):
        value = VALUES[data_type][-1]
        encoded = wire_words(data_type, value, order)
        words[10 * i : 10 * i + len(encoded)] = encoded
    nan = wire_words("FLOAT32", float("nan"), order)
    words[60 : 60 + len(nan)] = nan  # FLOAT32 sits at 60: NaN is no value
    expected = [v.number for _, v in request.decode(words, None)]
    assert request.numbers(words) == expected
    assert expected[6] is None and len(expected) == len(FORMATS)
    assert request.numbers(words[:-1]) is None  # short: decode names the field
    assert request.numbers([*words[:-1], 0x10000]) is None  # not a word: decode names it
    [mixed] = plan_requests([F("flow"), F("model", address=1, data_type="STRING", length=2)])
    assert mixed.numbers([1, 0x5053, 0x2D32]) is None
