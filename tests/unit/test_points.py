"""Tests of the sans-I/O Modbus point codec and read planner."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_proxy.core.points import (
    BIT_TABLES,
    REGISTER_TABLES,
    BlockDecoder,
    PointSpec,
    PointSpecError,
    PointValueError,
    ReadBlock,
    apply_bit,
    check_write_value,
    decode_bits,
    decode_block,
    decode_registers,
    encode_bit,
    encode_registers,
    plan_reads,
    raw_from_engineering,
    register_count,
    slice_block,
)


@dataclass(frozen=True)
class Point:
    table: str = "holding"
    address: int = 0
    type: str = "uint16"
    byte_order: str = "big"
    word_order: str = "big"
    bit: int | None = None
    scale: float | None = None
    offset: float | None = None
    length: int | None = None
    min: float | None = None
    max: float | None = None


# Checked by mypy: a frozen dataclass satisfies the read-only Protocol.
_SPEC: PointSpec = Point()

ORDERS = [(b, w) for b in ("big", "little") for w in ("big", "little")]
NUMERIC_TYPES = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
INT_BOUNDS = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
NO_DB = settings(database=None)


def pt(type: str = "uint16", byte: str = "big", word: str = "big", **kw: object) -> Point:
    return replace(Point(type=type, byte_order=byte, word_order=word), **kw)  # type: ignore[arg-type]


def coil(address: int, table: str = "coil") -> Point:
    return Point(table=table, address=address, type="bool")


# --- known register images (computed with struct, see each comment) ----------------------------

KNOWN: list[tuple[Point, object, list[int]]] = [
    (pt("uint16"), 0x1234, [0x1234]),
    (pt("uint16", "little"), 0x1234, [0x3412]),
    (pt("int16"), -2, [0xFFFE]),
    (pt("int16"), -32768, [0x8000]),
    (pt("int16", "little"), -100, [0x9CFF]),  # >h -100 = ff9c
    (pt("float32"), 1.5, [0x3FC0, 0x0000]),  # >f 1.5 = 3fc00000
    (pt("float32", "big", "little"), 1.5, [0x0000, 0x3FC0]),
    (pt("float32", "little", "big"), 1.5, [0xC03F, 0x0000]),
    (pt("float32", "little", "little"), 1.5, [0x0000, 0xC03F]),
    (pt("float32"), -0.0, [0x8000, 0x0000]),
    (pt("int32"), -2, [0xFFFF, 0xFFFE]),
    (pt("int32", "big", "little"), -2, [0xFFFE, 0xFFFF]),
    (pt("uint32"), 0x12345678, [0x1234, 0x5678]),
    (pt("uint32", "little"), 0x12345678, [0x3412, 0x7856]),
    (pt("uint32", "big", "little"), 0x12345678, [0x5678, 0x1234]),
    (pt("uint32", "little", "little"), 0x12345678, [0x7856, 0x3412]),
    (pt("float64"), 1.5, [0x3FF8, 0x0000, 0x0000, 0x0000]),  # >d 1.5 = 3ff8 0...
    (pt("float64", "big", "little"), -2.5, [0x0000, 0x0000, 0x0000, 0xC004]),  # >d -2.5 = c004 0...
    (pt("int64"), -2, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]),
    (pt("int64", "big", "little"), 0x0102030405060708, [0x0708, 0x0506, 0x0304, 0x0102]),
    (pt("int64", "little", "little"), 0x0102030405060708, [0x0807, 0x0605, 0x0403, 0x0201]),
    (pt("int64", "little", "big"), 0x0102030405060708, [0x0201, 0x0403, 0x0605, 0x0807]),
    (pt("uint64"), 0xFEDCBA9876543210, [0xFEDC, 0xBA98, 0x7654, 0x3210]),
    (pt("uint64"), 2**64 - 1, [0xFFFF] * 4),
    (pt("string", length=2), "AB", [0x4142, 0x0000]),
    (pt("string", length=2), "ABCD", [0x4142, 0x4344]),
    (pt("string", "little", length=2), "ABC", [0x4241, 0x0043]),
    # word_order does not apply to strings: characters stay in address order
    (pt("string", "big", "little", length=2), "ABC", [0x4142, 0x4300]),
    (pt("string", length=2), "é", [0xC3A9, 0x0000]),  # UTF-8 of U+00E9 = c3 a9
]


@pytest.mark.parametrize(("point", "value", "words"), KNOWN)
def test_encode_known(point: Point, value: object, words: list[int]) -> None:
    assert encode_registers(point, value) == words


@pytest.mark.parametrize(("point", "value", "words"), KNOWN)
def test_decode_known(point: Point, value: object, words: list[int]) -> None:
    decoded = decode_registers(point, words)
    assert decoded == value
    assert type(decoded) is type(value)
    if isinstance(value, float) and isinstance(decoded, float):
        assert math.copysign(1, decoded) == math.copysign(1, value)


def test_float32_decodes_to_the_stored_single_precision_value() -> None:
    # >f 123.456 = 42f6e979, which is 123.45600128173828 as a double
    assert decode_registers(pt("float32"), [0x42F6, 0xE979]) == 123.45600128173828
    assert encode_registers(pt("float32"), 123.456) == [0x42F6, 0xE979]


@pytest.mark.parametrize(
    ("point", "words", "expected"),
    [
        (pt("bool", bit=3), [0x0008], True),
        (pt("bool", bit=2), [0x0008], False),
        (pt("bool", bit=0), [0x0001], True),
        (pt("bool", bit=15), [0x8000], True),
        (pt("bool", bit=15), [0x7FFF], False),
        # bit numbers the word as transferred; byte_order does not move it
        (pt("bool", "little", bit=3), [0x0008], True),
        (pt("uint16", scale=0.1), [235], 23.5),
        (pt("int16", scale=0.1), [0xFF9C], -10.0),
        (pt("uint16", scale=0.1), [3], 0.3),  # divides by 10, so not 0.30000000000000004
        (pt("uint16", scale=0.01), [1234], 12.34),
        (pt("uint16", offset=-40), [100], 60),
        (pt("uint16", scale=10), [7], 70),
        (pt("uint16", scale=2.0, offset=-1.0), [7], 13),  # whole float scale and offset: int
        (pt("uint16", scale=0.5, offset=0.25), [3], 1.75),
        (pt("int16", scale=0.1, offset=-40), [650], 25.0),
        (pt("uint16", offset=0.5), [1], 1.5),
        (pt("float32", scale=2), [0x3FC0, 0x0000], 3.0),
        (pt("float32", offset=1), [0x3FC0, 0x0000], 2.5),
        (pt("string", length=3), [0x4142, 0x2020, 0x0000], "AB"),  # trailing spaces and NULs
        (pt("string", length=2), [0x2041, 0x0000], " A"),  # leading space kept
        (pt("string", length=1), [0x0000], ""),
        (pt("string", length=1), [0xFF41], "\ufffdA"),  # bad UTF-8 does not raise
    ],
)
def test_decode_cases(point: Point, words: list[int], expected: object) -> None:
    decoded = decode_registers(point, words)
    assert decoded == expected
    assert type(decoded) is type(expected)


def test_decode_float_nan_passes_through() -> None:
    value = decode_registers(pt("float32"), [0x7FC0, 0x0000])  # >f nan = 7fc00000
    assert isinstance(value, float)
    assert math.isnan(value)


def test_decode_unscaled_float_stays_float() -> None:
    assert type(decode_registers(pt("float64"), [0x3FF0, 0, 0, 0])) is float  # 1.0


@pytest.mark.parametrize(
    ("point", "words"),
    [
        (pt("uint16"), []),
        (pt("uint32"), [1]),
        (pt("uint16"), [1, 2]),
        (pt("string", length=2), [1]),
    ],
)
def test_decode_wrong_word_count(point: Point, words: list[int]) -> None:
    with pytest.raises(ValueError, match="expected"):
        decode_registers(point, words)


@pytest.mark.parametrize("word", [-1, 0x10000])
def test_decode_word_out_of_range(word: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decode_registers(pt("uint16"), [word])


def test_decode_bits() -> None:
    assert decode_bits(coil(0), [True]) is True
    assert decode_bits(coil(0, "discrete_input"), [False]) is False
    with pytest.raises(ValueError, match="expected 1 bit"):
        decode_bits(coil(0), [True, False])
    with pytest.raises(PointSpecError, match="decode_registers"):
        decode_bits(pt("uint16"), [True])
    with pytest.raises(PointSpecError, match="decode_bits"):
        decode_registers(coil(0), [1])


@pytest.mark.parametrize(
    ("point", "count"),
    [
        (coil(5), 1),
        (coil(5, "discrete_input"), 1),
        (pt("bool", bit=4), 1),
        (pt("int16"), 1),
        (pt("uint16"), 1),
        (pt("int32"), 2),
        (pt("uint32"), 2),
        (pt("float32"), 2),
        (pt("int64"), 4),
        (pt("uint64"), 4),
        (pt("float64"), 4),
        (pt("string", length=7), 7),
    ],
)
def test_register_count(point: Point, count: int) -> None:
    assert register_count(point) == count


# --- write checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "value", "message"),
    [
        (pt("uint16", max=100), 140, "140 is above the maximum 100"),
        (pt("int16", min=-10.0), -11, "-11 is below the minimum -10"),
        (pt("float32", max=1.5), 1.75, "1.75 is above the maximum 1.5"),
        (pt("uint16", scale=0.1, max=50), 50.5, "50.5 is above the maximum 50"),
        (pt("uint16"), "abc", "expected an integer, got 'abc'"),
        (pt("uint16"), None, "expected an integer, got None"),
        (pt("uint16"), True, "expected an integer, got True"),
        (pt("int32"), False, "expected an integer, got False"),
        (pt("uint16"), 2.5, "expected an integer, got 2.5"),
        (pt("float32"), "1.5", "expected a number, got '1.5'"),
        (pt("float64"), True, "expected a number, got True"),
        (pt("uint16", scale=0.1), "1", "expected a number, got '1'"),
        (pt("uint16", scale=0.1), 2.55, "2.55 does not land on a whole raw value with scale 0.1"),
        (pt("uint16", scale=10), 25, "25 does not land on a whole raw value with scale 10"),
        (pt("int16", offset=0.5), 2, "2 does not land on a whole raw value with offset 0.5"),
        (
            pt("int16", scale=0.5, offset=1),
            1.2,
            "1.2 does not land on a whole raw value with scale 0.5 and offset 1",
        ),
        (pt("uint16"), 70000, "70000 is outside the uint16 range 0..65535"),
        (pt("uint16"), -1, "-1 is outside the uint16 range 0..65535"),
        (pt("int16"), 40000, "40000 is outside the int16 range -32768..32767"),
        (pt("int16"), 32768.0, "32768 is outside the int16 range -32768..32767"),
        (pt("uint32"), 2**32, "4294967296 is outside the uint32 range 0..4294967295"),
        (pt("int64"), 2**63, "outside the int64 range"),
        (pt("uint64"), -1, "outside the uint64 range"),
        (pt("uint64"), 1e20, "outside the uint64 range"),
        (pt("uint16", scale=0.1), 6553.6, "raw value 65536 (from 6553.6) is outside the uint16"),
        (pt("float32"), 1e39, "1e+39 does not fit in a float32"),
        (pt("float32"), 10**400, "is too large for a float32"),
        (pt("float64"), 10**400, "is too large for a float64"),
        (pt("uint16", scale=0.1), 10**400, "is too large for a uint16"),
        (pt("uint16", scale=1e-300), 1e300, "is too large for a uint16"),
        (pt("uint16"), math.nan, "expected a finite number, got nan"),
        (pt("int32"), math.inf, "expected a finite number, got inf"),
        (pt("int32", scale=0.1), -math.inf, "expected a finite number, got -inf"),
        (pt("float32", max=10), math.nan, "nan cannot be checked against the allowed range"),
        (pt("float32", min=0), -math.inf, "-inf is below the minimum 0"),
        (pt("string", length=2), "ABCDE", "'ABCDE' is 5 bytes, more than the 4 that 2 register"),
        (pt("string", length=1), "éé", "is 4 bytes, more than the 2"),
        (pt("string", length=2), 12, "expected a string, got 12"),
        (pt("string", length=2), "\ud800", "cannot be encoded as UTF-8"),
        (pt("bool", bit=1), 2, "expected true or false, got 2"),
        (pt("bool", bit=1), 1.0, "expected true or false, got 1.0"),
        (pt("bool", bit=1), "true", "expected true or false, got 'true'"),
        (coil(0), None, "expected true or false, got None"),
    ],
)
def test_write_errors(point: Point, value: object, message: str) -> None:
    with pytest.raises(PointValueError) as info:
        check_write_value(point, value)
    assert message in str(info.value)
    if point.bit is None and point.table in REGISTER_TABLES:
        with pytest.raises(PointValueError):
            encode_registers(point, value)


def test_point_value_error_is_a_value_error() -> None:
    assert issubclass(PointValueError, ValueError)
    assert not issubclass(PointSpecError, PointValueError)


@pytest.mark.parametrize(
    ("point", "value"),
    [
        (pt("uint16", min=0, max=100), 100),
        (pt("uint16", min=0, max=100), 0),
        (pt("uint16"), 3.0),  # a float with a whole value is an integer
        (pt("uint16", scale=0.1), 23.5),
        (pt("uint16", scale=0.1), 23),
        (pt("uint16", scale=0.01), 1.15),  # 1.15 / 0.01 = 114.99999999999999
        (pt("int16", scale=0.1, offset=-40), -40.3),
        (pt("float32"), 7),
        (pt("float32"), math.inf),
        (pt("float64"), math.nan),
        (pt("string", length=2), ""),
        (pt("string", length=2), "ABCD"),
        (pt("bool", bit=1), True),
        (pt("bool", bit=1), 0),
        (coil(0), 1),
        (coil(0), False),
        (pt("int64"), 2**63 - 1),
        (pt("uint64"), 2**64 - 1),
    ],
)
def test_write_accepted(point: Point, value: object) -> None:
    check_write_value(point, value)


def test_encode_scaled_values() -> None:
    assert encode_registers(pt("uint16", scale=0.1), 23.5) == [235]
    assert encode_registers(pt("uint16", scale=0.01), 1.15) == [115]
    assert encode_registers(pt("int16", scale=0.1), -10) == [0xFF9C]
    assert encode_registers(pt("uint16", offset=-40), 60) == [100]
    assert encode_registers(pt("uint16", scale=10, offset=5), 75) == [7]
    assert encode_registers(pt("float32", scale=2), 3.0) == [0x3FC0, 0x0000]
    assert encode_registers(pt("int16", offset=-40), -32800) == [0x8008]  # raw -32760


def test_int64_is_exact_beyond_float_precision() -> None:
    value = 2**62 + 1  # not representable as a double
    words = encode_registers(pt("int64"), value)
    assert words == [0x4000, 0x0000, 0x0000, 0x0001]
    assert decode_registers(pt("int64"), words) == value
    assert decode_registers(pt("int64", scale=1, offset=1), words) == value + 1


def test_encode_bit_points_is_refused() -> None:
    with pytest.raises(PointValueError, match="use apply_bit"):
        encode_registers(pt("bool", bit=3), True)
    with pytest.raises(PointValueError, match="use encode_bit"):
        encode_registers(coil(0), True)


def test_encode_bit() -> None:
    assert encode_bit(coil(0), 1) is True
    assert encode_bit(coil(0), False) is False
    assert encode_bit(pt("bool", bit=2), 0) is False
    with pytest.raises(PointValueError, match="expected true or false"):
        encode_bit(coil(0), 3)
    with pytest.raises(PointValueError, match="encode_registers"):
        encode_bit(pt("uint16"), True)


@pytest.mark.parametrize(
    ("point", "value", "raw"),
    [
        (pt("uint16"), 5, 5),
        (pt("uint16"), 5.0, 5),
        (pt("uint16", scale=0.1), 23.5, 235),
        (pt("uint16", scale=0.1), 0.3, 3),
        (pt("uint16", scale=3), 9, 3),
        (pt("int16", scale=-0.5), 2, -4),
        (pt("int16", scale=-10), 20, -2),
        (pt("uint16", offset=-40), 60, 100),
        (pt("uint16", scale=0.1, offset=-40), -16.5, 235),
        (pt("uint16", scale=0.1), 1e-12, 0),  # within tolerance of zero
        (pt("float32", scale=0.5), 1.5, 3.0),
        (pt("float64", offset=1), 2, 1.0),
        (pt("uint16"), 70000, 70000),  # the raw range is checked by check_write_value
    ],
)
def test_raw_from_engineering(point: Point, value: float, raw: float) -> None:
    result = raw_from_engineering(point, value)
    assert result == raw
    assert type(result) is type(raw)


def test_raw_from_engineering_rejects() -> None:
    with pytest.raises(PointValueError, match=r"whole raw value with scale 0\.1"):
        raw_from_engineering(pt("uint16", scale=0.1), 0.35000001)
    with pytest.raises(PointValueError, match=r"expected an integer, got 2\.5"):
        raw_from_engineering(pt("uint16"), 2.5)
    with pytest.raises(PointSpecError, match="no numeric raw value"):
        raw_from_engineering(pt("string", length=1), 1)


# --- point definitions that the config should have refused -------------------------------------


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (pt("int128"), "unknown point type 'int128'"),
        (Point(table="holding_registers"), "unknown table 'holding_registers'"),
        (Point(table="coil", type="uint16"), "a coil point holds a bool, not uint16"),
        (Point(table="coil", type="bool", bit=1), "bit applies to register tables only"),
        (pt("bool"), "a bit of a register needs type bool and bit 0-15"),
        (pt("uint16", bit=3), "a bit of a register needs type bool"),
        (pt("bool", bit=16), "bit 0-15"),
        (pt("string"), "a string point needs a length"),
        (pt("string", length=0), "a string point needs a length"),
        (pt("uint16", scale=0), "scale must be a finite non-zero number"),
        (pt("uint16", scale=math.nan), "scale must be a finite non-zero number"),
        (pt("uint16", offset=math.inf), "offset must be a finite number"),
        (pt("uint16", "middle"), "byte_order must be big or little, not 'middle'"),
        (pt("uint32", word="BIG"), "word_order must be big or little"),
        (pt("uint32", address=65535), "leave 0..65535"),
        (pt("uint16", address=-1), "leave 0..65535"),
    ],
)
def test_spec_errors(point: Point, message: str) -> None:
    with pytest.raises(PointSpecError) as info:
        register_count(point)
    assert message in str(info.value)
    with pytest.raises(PointSpecError):
        check_write_value(point, 1)


def test_last_addresses_are_usable() -> None:
    assert register_count(pt("uint32", address=65534)) == 2
    assert register_count(coil(65535)) == 1


# --- apply_bit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "bit", "value", "expected"),
    [
        (0x0000, 3, True, 0x0008),
        (0x0008, 3, True, 0x0008),
        (0xFFFF, 3, False, 0xFFF7),
        (0x0008, 3, False, 0x0000),
        (0x1234, 0, True, 0x1235),
        (0x0000, 15, True, 0x8000),
        (0xFFFF, 15, False, 0x7FFF),
        (0x8001, 0, False, 0x8000),
    ],
)
def test_apply_bit(word: int, bit: int, value: bool, expected: int) -> None:
    assert apply_bit(word, bit, value) == expected


@pytest.mark.parametrize(("word", "bit"), [(0, 16), (0, -1), (0x10000, 0), (-1, 0)])
def test_apply_bit_rejects(word: int, bit: int) -> None:
    with pytest.raises(ValueError, match="need a register"):
        apply_bit(word, bit, True)


@NO_DB
@given(word=st.integers(0, 0xFFFF), bit=st.integers(0, 15), value=st.booleans())
def test_apply_bit_then_decode(word: int, bit: int, value: bool) -> None:
    new = apply_bit(word, bit, value)
    assert decode_registers(pt("bool", bit=bit), [new]) is value
    assert new & ~(1 << bit) == word & ~(1 << bit)  # other bits untouched


# --- round trips -------------------------------------------------------------------------------


def values_of(kind: str) -> st.SearchStrategy[int | float]:
    if kind in INT_BOUNDS:
        return st.integers(*INT_BOUNDS[kind])
    return st.floats(width=32 if kind == "float32" else 64, allow_nan=False)


@pytest.mark.parametrize(("byte", "word"), ORDERS)
@pytest.mark.parametrize("kind", NUMERIC_TYPES)
@NO_DB
@given(data=st.data())
def test_round_trip_value(kind: str, byte: str, word: str, data: st.DataObject) -> None:
    point = pt(kind, byte, word)
    value = data.draw(values_of(kind))
    words = encode_registers(point, value)
    assert len(words) == register_count(point)
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode_registers(point, words) == value


@pytest.mark.parametrize(("byte", "word"), ORDERS)
@pytest.mark.parametrize("kind", NUMERIC_TYPES)
@NO_DB
@given(data=st.data())
def test_round_trip_words(kind: str, byte: str, word: str, data: st.DataObject) -> None:
    point = pt(kind, byte, word)
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4))
    words = (words * 4)[: register_count(point)]
    value = decode_registers(point, words)
    if isinstance(value, float) and math.isnan(value):
        return  # a NaN payload need not survive the trip through a Python float
    assert encode_registers(point, value) == words


@pytest.mark.parametrize(("byte", "word"), ORDERS)
@pytest.mark.parametrize("kind", NUMERIC_TYPES)
def test_matches_struct_reference(kind: str, byte: str, word: str) -> None:
    fmt = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I"}
    fmt |= {"int64": "q", "uint64": "Q", "float32": "f", "float64": "d"}
    value: int | float = (
        1.25 if kind.startswith("float") else 0x0102030405060708 % (INT_BOUNDS[kind][1] + 1)
    )
    big = struct.pack(">" + fmt[kind], value)
    regs = [big[i] << 8 | big[i + 1] for i in range(0, len(big), 2)]
    if word == "little":
        regs.reverse()
    if byte == "little":
        regs = [(r & 0xFF) << 8 | r >> 8 for r in regs]
    assert encode_registers(pt(kind, byte, word), value) == regs


@pytest.mark.parametrize("byte", ["big", "little"])
@pytest.mark.parametrize("word", ["big", "little"])
@NO_DB
@given(
    text=st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=8),
    length=st.integers(1, 12),
)
def test_round_trip_string(byte: str, word: str, text: str, length: int) -> None:
    point = pt("string", byte, word, length=length)
    if len(text.encode("utf-8")) > 2 * length:
        with pytest.raises(PointValueError, match="bytes, more than"):
            encode_registers(point, text)
        return
    words = encode_registers(point, text)
    assert len(words) == length
    assert decode_registers(point, words) == text.rstrip(" ")  # trailing spaces are padding


SCALES = [0.1, 0.01, 0.001, 0.5, 0.25, 2, 10, -0.1, 1.5, 0.3]
OFFSETS = [None, 0, 2.5, -40, 0.1]


@pytest.mark.parametrize("kind", ["int16", "uint16", "int32", "uint32"])
@NO_DB
@given(
    data=st.data(),
    scale=st.sampled_from(SCALES),
    offset=st.sampled_from(OFFSETS),
    byte=st.sampled_from(["big", "little"]),
    word=st.sampled_from(["big", "little"]),
)
def test_round_trip_scaled_raw(
    kind: str, data: st.DataObject, scale: float, offset: float | None, byte: str, word: str
) -> None:
    point = pt(kind, byte, word, scale=scale, offset=offset)
    raw = data.draw(st.integers(*INT_BOUNDS[kind]))
    words = encode_registers(pt(kind, byte, word), raw)
    value = decode_registers(point, words)
    assert encode_registers(point, value) == words
    assert isinstance(value, (int, float))
    assert raw_from_engineering(point, value) == raw


@NO_DB
@given(raw=st.integers(0, 0xFFFF), scale=st.sampled_from(SCALES), offset=st.sampled_from(OFFSETS))
def test_decoded_type_follows_scale(raw: int, scale: float, offset: float | None) -> None:
    value = decode_registers(pt("uint16", scale=scale, offset=offset), [raw])
    integral = float(scale).is_integer() and (offset is None or float(offset).is_integer())
    assert type(value) is (int if integral else float)


# --- read planning -----------------------------------------------------------------------------


def regs(*addresses: int, kind: str = "uint16", table: str = "holding") -> dict[str, Point]:
    return {f"p{a}": Point(table=table, address=a, type=kind) for a in addresses}


def shape(blocks: list[ReadBlock]) -> list[tuple[str, int, int]]:
    return [(b.table, b.address, b.count) for b in blocks]


def test_plan_empty() -> None:
    assert plan_reads({}) == []


def test_plan_contiguous() -> None:
    blocks = plan_reads(regs(2, 0, 1))
    assert blocks == [ReadBlock("holding", 0, 3, ("p0", "p1", "p2"))]


def test_plan_gap_at_most_max_gap_is_merged() -> None:
    # p0 spans 0; the next free address is 1; 8 unused addresses (1..8) then p9
    assert shape(plan_reads(regs(0, 9))) == [("holding", 0, 10)]
    assert shape(plan_reads(regs(0, 9), max_gap=7)) == [("holding", 0, 1), ("holding", 9, 1)]


def test_plan_gap_above_max_gap_is_split() -> None:
    blocks = plan_reads(regs(0, 10))
    assert blocks == [ReadBlock("holding", 0, 1, ("p0",)), ReadBlock("holding", 10, 1, ("p10",))]


def test_plan_max_gap_zero_merges_only_touching() -> None:
    assert shape(plan_reads(regs(0, 1, 3), max_gap=0)) == [("holding", 0, 2), ("holding", 3, 1)]


def test_plan_gap_measured_from_end_of_wide_point() -> None:
    points = {"f": pt("float64", address=0), "u": pt("uint16", address=12)}  # f spans 0..3
    assert shape(plan_reads(points)) == [("holding", 0, 13)]
    points = {"f": pt("float64", address=0), "u": pt("uint16", address=13)}
    assert shape(plan_reads(points)) == [("holding", 0, 4), ("holding", 13, 1)]


def test_plan_register_limit() -> None:
    blocks = plan_reads(regs(*range(126)))
    assert shape(blocks) == [("holding", 0, 125), ("holding", 125, 1)]
    assert blocks[0].names == tuple(f"p{a}" for a in range(125))
    assert shape(plan_reads(regs(*range(125)))) == [("holding", 0, 125)]
    assert shape(plan_reads(regs(0, 124))) == [("holding", 0, 1), ("holding", 124, 1)]
    assert shape(plan_reads(regs(0, 124), max_gap=200)) == [("holding", 0, 125)]
    assert shape(plan_reads(regs(0, 125), max_gap=200)) == [("holding", 0, 1), ("holding", 125, 1)]


def test_plan_custom_register_limit() -> None:
    assert shape(plan_reads(regs(*range(5)), max_registers=2)) == [
        ("holding", 0, 2),
        ("holding", 2, 2),
        ("holding", 4, 1),
    ]


def test_plan_bit_limit() -> None:
    points = {f"c{a}": coil(a) for a in range(2001)}
    assert shape(plan_reads(points)) == [("coil", 0, 2000), ("coil", 2000, 1)]
    assert shape(plan_reads(points, max_bits=1000)) == [
        ("coil", 0, 1000),
        ("coil", 1000, 1000),
        ("coil", 2000, 1),
    ]
    # register tables use max_registers: 2001 registers need 17 blocks of at most 125
    assert len(plan_reads(regs(*range(2001)))) == 17


def test_plan_mixed_tables_in_function_code_order() -> None:
    points: dict[str, Point] = {
        "i": Point(table="input", address=0),
        "h": Point(table="holding", address=0),
        "d": coil(0, "discrete_input"),
        "c": coil(0),
        "h2": Point(table="holding", address=1),
    }
    assert plan_reads(points) == [
        ReadBlock("coil", 0, 1, ("c",)),
        ReadBlock("discrete_input", 0, 1, ("d",)),
        ReadBlock("holding", 0, 2, ("h", "h2")),
        ReadBlock("input", 0, 1, ("i",)),
    ]
    assert {b.table for b in plan_reads(points)} == BIT_TABLES | REGISTER_TABLES


def test_plan_overlapping_points() -> None:
    points = {
        "alarm": pt("bool", address=10, bit=0),
        "ready": pt("bool", address=10, bit=1),
        "status": pt("uint16", address=10),
        "fault": pt("bool", address=10, bit=15),
        "total": pt("uint32", address=9),
    }
    blocks = plan_reads(points)
    assert blocks == [ReadBlock("holding", 9, 2, ("total", "alarm", "fault", "ready", "status"))]
    data = [0x0001, 0x8001]
    assert decode_block(blocks[0], points, data) == {
        "total": 0x00018001,
        "alarm": True,
        "fault": True,
        "ready": False,
        "status": 0x8001,
    }


def test_plan_never_splits_a_point_at_the_limit() -> None:
    points = regs(*range(124))
    points["f"] = pt("float32", address=124)  # spans 124 and 125: one past the limit
    blocks = plan_reads(points)
    assert shape(blocks) == [("holding", 0, 124), ("holding", 124, 2)]
    assert blocks[1].names == ("f",)
    points["g"] = pt("float64", address=123)  # overlaps p123 and f
    blocks = plan_reads(points)
    for block in blocks:
        for name in block.names:
            point = points[name]
            assert block.address <= point.address
            assert point.address + register_count(point) <= block.address + block.count
            assert block.count <= 125


def test_plan_oversized_point_gets_its_own_block() -> None:
    points = {
        "before": pt("uint16", address=0),
        "big": pt("string", address=1, length=200),
        "inside": pt("uint16", address=50),
        "after": pt("uint16", address=201),
    }
    assert plan_reads(points) == [
        ReadBlock("holding", 0, 1, ("before",)),
        ReadBlock("holding", 1, 200, ("big", "inside")),
        ReadBlock("holding", 201, 1, ("after",)),
    ]


def test_plan_is_deterministic() -> None:
    points = regs(30, 1, 500, 2) | {"c": coil(7)} | regs(4, table="input")
    shuffled = dict(reversed(list(points.items())))
    assert plan_reads(points) == plan_reads(shuffled)
    assert shape(plan_reads(points)) == [
        ("coil", 7, 1),
        ("holding", 1, 2),
        ("holding", 30, 1),
        ("holding", 500, 1),
        ("input", 4, 1),
    ]


def test_plan_rejects_bad_limits() -> None:
    for kwargs in ({"max_gap": -1}, {"max_registers": 0}, {"max_bits": 0}):
        with pytest.raises(ValueError, match="max_gap"):
            plan_reads({}, **kwargs)


def test_plan_rejects_bad_points() -> None:
    with pytest.raises(PointSpecError):
        plan_reads({"x": pt("string")})


@NO_DB
@given(
    spans=st.lists(
        st.tuples(st.integers(0, 400), st.sampled_from(["uint16", "uint32", "float64"])),
        max_size=40,
    ),
    max_gap=st.integers(0, 10),
    limit=st.integers(4, 30),
)
def test_plan_properties(spans: list[tuple[int, str]], max_gap: int, limit: int) -> None:
    points = {f"p{i}": pt(kind, address=a) for i, (a, kind) in enumerate(spans)}
    blocks = plan_reads(points, max_gap=max_gap, max_registers=limit)
    names = [n for b in blocks for n in b.names]
    assert sorted(names) == sorted(points)
    assert [(b.table, b.address) for b in blocks] == sorted((b.table, b.address) for b in blocks)
    for block in blocks:
        assert block.count <= limit
        for name in block.names:
            point = points[name]
            assert block.address <= point.address
            assert point.address + register_count(point) <= block.address + block.count


# --- slicing -----------------------------------------------------------------------------------


def test_slice_block() -> None:
    points = {"a": pt("uint16", address=10), "b": pt("uint32", address=12)}
    (block,) = plan_reads(points)
    data = [1, 2, 3, 4]
    assert slice_block(block, points["a"], data) == [1]
    assert slice_block(block, points["b"], data) == [3, 4]
    assert decode_block(block, points, data) == {"a": 1, "b": 0x00030004}


def test_slice_block_bits_padded_to_a_byte() -> None:
    points = {"x": coil(3), "y": coil(5)}
    (block,) = plan_reads(points)
    assert (block.address, block.count) == (3, 3)
    bits = [True, False, False, False, False, False, False, False]  # a read of 3 padded to 8
    assert slice_block(block, points["y"], bits) == [False]
    assert decode_block(block, points, bits) == {"x": True, "y": False}


def test_slice_block_rejects() -> None:
    block = ReadBlock("holding", 10, 2, ("a",))
    with pytest.raises(ValueError, match="outside the block"):
        slice_block(block, pt("uint16", address=9), [1, 2])
    with pytest.raises(ValueError, match="outside the block"):
        slice_block(block, pt("uint32", address=11), [1, 2])
    with pytest.raises(ValueError, match="outside the block"):
        slice_block(block, Point(table="input", address=10), [1, 2])
    with pytest.raises(ValueError, match="fewer than"):
        slice_block(block, pt("uint16", address=11), [1])


# --- the compiled block decoder ----------------------------------------------------------------

REGISTER_KINDS = [*NUMERIC_TYPES, "string", "bool"]


@st.composite
def register_points(draw: st.DrawFn) -> dict[str, Point]:
    """Up to 12 holding points within 40 registers: every type, order, scale; holes, overlaps."""
    points: dict[str, Point] = {}
    for i in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(REGISTER_KINDS))
        byte, word = draw(st.sampled_from(ORDERS))
        extra: dict[str, object] = {}
        if kind == "bool":
            extra["bit"] = draw(st.integers(0, 15))
        elif kind == "string":
            extra["length"] = draw(st.integers(1, 4))
        else:
            extra["scale"] = draw(st.sampled_from([None, 1, 10, 0.1, 0.01, 2.5, -1]))
            extra["offset"] = draw(st.sampled_from([None, 0, 5, -3.5]))
        points[f"p{i}"] = pt(kind, byte, word, address=100 + draw(st.integers(0, 36)), **extra)
    return points


@NO_DB
@given(points=register_points(), data=st.data())
def test_block_decoder_agrees_with_decode_block(
    points: dict[str, Point], data: st.DataObject
) -> None:
    for block in plan_reads(points, max_gap=draw_gap(data)):
        words = data.draw(
            st.lists(st.integers(0, 0xFFFF), min_size=block.count, max_size=block.count)
        )
        expected = decode_block(block, points, words)
        got = BlockDecoder(block, points).decode(words)
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            if isinstance(value, float) and math.isnan(value):
                assert isinstance(got[name], float) and math.isnan(got[name])  # type: ignore[arg-type]
            else:
                assert got[name] == value and type(got[name]) is type(value), name


def draw_gap(data: st.DataObject) -> int:
    return data.draw(st.sampled_from([0, 8, 40]))


def test_block_decoder_bits_and_bad_data() -> None:
    points = {"x": coil(3), "y": coil(5)}
    (block,) = plan_reads(points)
    bits = [1, 0, 1, 0, 0, 0, 0, 0]  # a read of 3 padded to 8
    assert BlockDecoder(block, points).decode(bits) == {"x": True, "y": True}
    regs = {"a": pt("uint16", address=10), "b": pt("int32", address=12, scale=0.5)}
    (block,) = plan_reads(regs)
    decoder = BlockDecoder(block, regs)
    assert decoder.decode([7, 0, 0xFFFF, 0xFFFE]) == {"a": 7, "b": -1.0}
    with pytest.raises(ValueError, match="fewer than"):
        decoder.decode([1, 2, 3])
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        decoder.decode([1, 2, 3, 0x10000])
    with pytest.raises(ValueError, match="outside the block"):
        BlockDecoder(ReadBlock("holding", 10, 2, ("b",)), regs)
