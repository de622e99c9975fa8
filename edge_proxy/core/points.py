"""Sans-I/O encoding and decoding of typed Modbus points, and merging of point reads.

Conventions:

* ``words`` are 16-bit register values in address order, exactly as the device sent them.
* ``byte_order`` swaps the two bytes inside every register; ``word_order`` reverses the
  registers of a multi-register number ("big" = most significant register first). Strings
  honour ``byte_order`` only: their characters always run in address order.
* ``bit`` numbers the bits of the register value as transferred (bit 0 = least significant),
  ignoring ``byte_order``, so that :func:`decode_registers` and :func:`apply_bit` agree.
* engineering = raw * scale + offset. An integer-typed point decodes to ``int`` when scale and
  offset are absent or whole numbers, and to ``float`` otherwise; float types decode to ``float``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeAlias, TypeVar

BIT_TABLES = frozenset({"coil", "discrete_input"})
REGISTER_TABLES = frozenset({"input", "holding"})

Value: TypeAlias = bool | int | float | str
_T = TypeVar("_T")

# struct format (always read big-endian after reordering) and register count per numeric type
_NUMERIC: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint64": (0, (1 << 64) - 1),
}
_ADDRESS_SPACE = 1 << 16
# Decimal engineering values (23.5 with scale 0.1) are never exact in binary floating point.
_WHOLE_TOLERANCE = 1e-9


class PointValueError(ValueError):
    """A value that cannot be encoded for a point; the message says why in plain words."""


class PointSpecError(ValueError):
    """A point definition that cannot be encoded or decoded (the config should have refused it)."""


class PointSpec(Protocol):
    """The fields of a configured point that encoding and decoding need."""

    @property
    def table(self) -> str:
        """The Modbus table: coil, discrete_input, input or holding."""

    @property
    def address(self) -> int:
        """The 0-based register or bit address."""

    @property
    def type(self) -> str:
        """The value type: bool, int16 ... float64 or string."""

    @property
    def byte_order(self) -> str:
        """The order of the two bytes inside each register: big or little."""

    @property
    def word_order(self) -> str:
        """The order of the registers of a multi-register number: big or little."""

    @property
    def bit(self) -> int | None:
        """A single bit (0-15) of a register, read as bool."""

    @property
    def scale(self) -> float | None:
        """The factor in engineering = raw * scale + offset (None means 1)."""

    @property
    def offset(self) -> float | None:
        """The addend in engineering = raw * scale + offset (None means 0)."""

    @property
    def length(self) -> int | None:
        """The number of registers of a string point."""

    @property
    def min(self) -> float | None:
        """The lowest engineering value a write may set."""

    @property
    def max(self) -> float | None:
        """The highest engineering value a write may set."""


@dataclass(frozen=True)
class _Layout:
    kind: Literal["bit", "register_bit", "integer", "float", "string"]
    count: int
    fmt: str = ""
    bit: int = 0


# Layouts by point object: a point's layout is needed three times per value read (span, slice,
# decode), on every poll. Keyed by id() with the point kept alive, so a reused id never matches.
_LAYOUTS: dict[int, tuple[PointSpec, _Layout]] = {}
_LAYOUT_CACHE = 65536


def _layout(point: PointSpec) -> _Layout:
    entry = _LAYOUTS.get(id(point))
    if entry is not None and entry[0] is point:
        return entry[1]
    layout = _compute_layout(point)
    if len(_LAYOUTS) >= _LAYOUT_CACHE:  # a long run of reloads: start over
        _LAYOUTS.clear()
    _LAYOUTS[id(point)] = (point, layout)
    return layout


def _compute_layout(point: PointSpec) -> _Layout:
    table, kind = point.table, point.type
    if table in BIT_TABLES:
        if kind != "bool":
            raise PointSpecError(f"a {table} point holds a bool, not {kind}")
        if point.bit is not None:
            raise PointSpecError("bit applies to register tables only")
        layout = _Layout("bit", 1)
    elif table in REGISTER_TABLES:
        for name, order in (("byte_order", point.byte_order), ("word_order", point.word_order)):
            if order not in ("big", "little"):
                raise PointSpecError(f"{name} must be big or little, not {order!r}")
        if point.bit is not None or kind == "bool":
            if kind != "bool" or point.bit is None or not 0 <= point.bit <= 15:
                raise PointSpecError(
                    f"a bit of a register needs type bool and bit 0-15, not {kind} {point.bit}"
                )
            layout = _Layout("register_bit", 1, bit=point.bit)
        elif kind == "string":
            if point.length is None or point.length < 1:
                raise PointSpecError("a string point needs a length of at least 1 register")
            layout = _Layout("string", point.length)
        elif kind in _NUMERIC:
            fmt, count = _NUMERIC[kind]
            layout = _Layout("integer" if kind in _INT_RANGES else "float", count, fmt)
            if point.scale is not None and (point.scale == 0 or not math.isfinite(point.scale)):
                raise PointSpecError(f"scale must be a finite non-zero number, not {point.scale}")
            if point.offset is not None and not math.isfinite(point.offset):
                raise PointSpecError(f"offset must be a finite number, not {point.offset}")
        else:
            raise PointSpecError(f"unknown point type {kind!r}")
    else:
        raise PointSpecError(f"unknown table {table!r}")
    if not 0 <= point.address <= _ADDRESS_SPACE - layout.count:
        raise PointSpecError(f"{layout.count} value(s) at address {point.address} leave 0..65535")
    return layout


def register_count(point: PointSpec) -> int:
    """How many registers (or bits, for bit tables) the point spans."""
    return _layout(point).count


def _fmt(number: object) -> str:
    """Show 100.0 as 100 in messages, and every other value as Python would."""
    if isinstance(number, float) and number.is_integer() and abs(number) < 1e16:
        return str(int(number))
    return str(number)


def _whole(number: float | None) -> bool:
    return number is None or float(number).is_integer()


def _divisor(scale: float) -> int | None:
    """The whole n with scale == 1/n, if any: dividing by 10 is exact where * 0.1 is not."""
    if _whole(scale):
        return None
    inverse = 1 / scale
    if not math.isfinite(inverse):
        return None
    n = round(inverse)
    return n if n != 0 and math.isclose(inverse, n, rel_tol=1e-12) else None


def _swap(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def _words_to_bytes(point: PointSpec, words: Sequence[int], reorder: bool) -> bytes:
    ordered = [_swap(w) for w in words] if point.byte_order == "little" else list(words)
    if reorder and point.word_order == "little":
        ordered.reverse()
    return struct.pack(f">{len(ordered)}H", *ordered)


def _bytes_to_words(point: PointSpec, data: bytes, reorder: bool) -> list[int]:
    words = list(struct.unpack(f">{len(data) // 2}H", data))
    if reorder and point.word_order == "little":
        words.reverse()
    return [_swap(w) for w in words] if point.byte_order == "little" else words


def _scaled(point: PointSpec, raw: int | float) -> int | float:
    scale, offset = point.scale, point.offset
    if isinstance(raw, int) and _whole(scale) and _whole(offset):
        return raw * (1 if scale is None else int(scale)) + (0 if offset is None else int(offset))
    value = float(raw)
    if scale is not None:
        n = _divisor(scale)
        value = value / n if n else value * scale
    return value if offset is None else value + offset


def decode_registers(point: PointSpec, words: Sequence[int]) -> bool | int | float | str:
    """Decode the registers of a register-table point into its engineering value."""
    layout = _layout(point)
    if layout.kind == "bit":
        raise PointSpecError(f"a {point.table} point is read with decode_bits")
    if len(words) != layout.count:
        raise ValueError(f"expected {layout.count} register(s), got {len(words)}")
    if min(words) < 0 or max(words) > 0xFFFF:
        raise ValueError(f"register values must be 0..65535, got {list(words)}")
    if layout.kind == "register_bit":
        return bool(words[0] >> layout.bit & 1)
    data = _words_to_bytes(point, words, reorder=layout.kind != "string")
    if layout.kind == "string":
        return data.rstrip(b"\x00 ").decode("utf-8", errors="replace")
    raw: int | float = struct.unpack(">" + layout.fmt, data)[0]
    return _scaled(point, raw)


def decode_bits(point: PointSpec, bits: Sequence[bool]) -> bool:
    """Decode the single bit of a coil or discrete-input point."""
    if _layout(point).kind != "bit":
        raise PointSpecError(f"a {point.table} point is read with decode_registers")
    if len(bits) != 1:
        raise ValueError(f"expected 1 bit, got {len(bits)}")
    return bool(bits[0])


def _scaling_words(point: PointSpec) -> str:
    pairs = (("scale", point.scale), ("offset", point.offset))
    shown = [f"{name} {_fmt(v)}" for name, v in pairs if v is not None]
    return " with " + " and ".join(shown) if shown else ""


def raw_from_engineering(point: PointSpec, value: float) -> int | float:
    """Invert engineering = raw * scale + offset; integer types must land on a whole raw value."""
    layout = _layout(point)
    if layout.kind not in ("integer", "float"):
        raise PointSpecError(f"a {point.type} point has no numeric raw value")
    scale, offset = point.scale, point.offset
    if layout.kind == "integer" and isinstance(value, int) and _whole(scale) and _whole(offset):
        # Exact integer arithmetic: int64 values beyond 2**53 must not pass through float.
        step = 1 if scale is None else int(scale)
        diff = value - (0 if offset is None else int(offset))
        if diff % step:
            raise PointValueError(
                f"{value} does not land on a whole raw value{_scaling_words(point)}"
            )
        return diff // step
    try:
        raw = float(value) - (offset or 0.0)
        if scale is not None:
            n = _divisor(scale)
            raw = raw * n if n else raw / scale
    except OverflowError:
        raise PointValueError(f"{_fmt(value)} is too large for a {point.type}") from None
    if layout.kind == "float":
        return raw
    if not math.isfinite(value):
        raise PointValueError(f"expected a finite number, got {_fmt(value)}")
    if not math.isfinite(raw):
        raise PointValueError(f"{_fmt(value)} is too large for a {point.type}")
    whole = round(raw)
    if not math.isclose(raw, whole, rel_tol=_WHOLE_TOLERANCE, abs_tol=_WHOLE_TOLERANCE):
        if not _scaling_words(point):
            raise PointValueError(f"expected an integer, got {_fmt(value)}")
        raise PointValueError(
            f"{_fmt(value)} does not land on a whole raw value{_scaling_words(point)}"
        )
    return whole


def _checked_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise PointValueError(f"expected true or false, got {value!r}")


def _checked_string(value: object, count: int) -> bytes:
    if not isinstance(value, str):
        raise PointValueError(f"expected a string, got {value!r}")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise PointValueError(f"{value!r} cannot be encoded as UTF-8") from None
    if len(data) > count * 2:
        raise PointValueError(
            f"{value!r} is {len(data)} bytes, more than the {count * 2} that "
            f"{count} register(s) hold"
        )
    return data


def _checked_number(point: PointSpec, layout: _Layout, value: object) -> int | float:
    scaled = point.scale is not None or point.offset is not None
    plain_integer = layout.kind == "integer" and not scaled
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        wanted = "an integer" if plain_integer else "a number"
        raise PointValueError(f"expected {wanted}, got {value!r}")
    if isinstance(value, float):
        if layout.kind == "integer" and not math.isfinite(value):
            raise PointValueError(f"expected a finite number, got {value}")
        if plain_integer and not value.is_integer():
            raise PointValueError(f"expected an integer, got {value}")
        if math.isnan(value) and (point.min is not None or point.max is not None):
            raise PointValueError("nan cannot be checked against the allowed range")
    if point.min is not None and value < point.min:
        raise PointValueError(f"{_fmt(value)} is below the minimum {_fmt(point.min)}")
    if point.max is not None and value > point.max:
        raise PointValueError(f"{_fmt(value)} is above the maximum {_fmt(point.max)}")
    return value


def _checked_raw(point: PointSpec, layout: _Layout, value: object) -> bool | int | float | bytes:
    if layout.kind in ("bit", "register_bit"):
        return _checked_bool(value)
    if layout.kind == "string":
        return _checked_string(value, layout.count)
    number = _checked_number(point, layout, value)
    raw = raw_from_engineering(point, number)
    if isinstance(raw, int):
        low, high = _INT_RANGES[point.type]
        if not low <= raw <= high:
            shown = f"{raw}" if raw == number else f"raw value {raw} (from {_fmt(number)})"
            raise PointValueError(f"{shown} is outside the {point.type} range {low}..{high}")
        return raw
    try:
        struct.pack(">" + layout.fmt, raw)
    except OverflowError:
        raise PointValueError(f"{_fmt(number)} does not fit in a {point.type}") from None
    return raw


def check_write_value(point: PointSpec, value: object) -> None:
    """Raise PointValueError unless value is a valid engineering value to write to point."""
    _checked_raw(point, _layout(point), value)


def encode_registers(point: PointSpec, value: object) -> list[int]:
    """Encode an engineering value into the registers to write, in address order."""
    layout = _layout(point)
    if layout.kind == "register_bit":
        raise PointValueError("a bit of a register is written read-modify-write: use apply_bit")
    if layout.kind == "bit":
        raise PointValueError(f"a {point.table} point is a single bit: use encode_bit")
    raw = _checked_raw(point, layout, value)
    if isinstance(raw, bytes):
        return _bytes_to_words(point, raw.ljust(layout.count * 2, b"\x00"), reorder=False)
    return _bytes_to_words(point, struct.pack(">" + layout.fmt, raw), reorder=True)


def encode_bit(point: PointSpec, value: object) -> bool:
    """Check and convert the value to write to a coil or to a bit of a register (0/1 -> bool)."""
    layout = _layout(point)
    if layout.kind not in ("bit", "register_bit"):
        raise PointValueError(f"a {point.type} point is not a single bit: use encode_registers")
    return _checked_bool(value)


def apply_bit(word: int, bit: int, value: bool) -> int:
    """Return the register value with one bit set or cleared, for a read-modify-write."""
    if not 0 <= word <= 0xFFFF or not 0 <= bit <= 15:
        raise ValueError(f"need a register 0..65535 and a bit 0..15, got {word} and {bit}")
    return word | (1 << bit) if value else word & ~(1 << bit)


@dataclass(frozen=True)
class ReadBlock:
    """One read request: count registers (or bits) from address, covering the named points."""

    table: str
    address: int
    count: int
    names: tuple[str, ...]


def plan_reads(
    points: Mapping[str, PointSpec],
    *,
    max_gap: int = 8,
    max_registers: int = 125,
    max_bits: int = 2000,
) -> list[ReadBlock]:
    """Merge point reads into as few blocks as the limits allow, ordered by table then address.

    A point is never split across blocks. A single point wider than the limit (which the
    config forbids) gets a block of its own that exceeds the limit.
    """
    if max_gap < 0 or max_registers < 1 or max_bits < 1:
        raise ValueError("max_gap must be >= 0 and the block limits >= 1")
    spans: dict[str, list[tuple[int, int, str]]] = {}
    for name, point in points.items():
        count = register_count(point)
        spans.setdefault(point.table, []).append((point.address, point.address + count, name))
    blocks: list[ReadBlock] = []
    # Alphabetical table order is also Modbus function-code order (1, 2, 3, 4).
    for table in sorted(spans):
        limit = max_bits if table in BIT_TABLES else max_registers
        start = end = 0
        names: list[str] = []
        for address, stop, name in sorted(spans[table]):
            if names and address <= end + max_gap and (stop <= end or stop - start <= limit):
                end = max(end, stop)
                names.append(name)
                continue
            if names:
                blocks.append(ReadBlock(table, start, end - start, tuple(names)))
            start, end, names = address, stop, [name]
        blocks.append(ReadBlock(table, start, end - start, tuple(names)))
    return blocks


def slice_block(block: ReadBlock, point: PointSpec, data: Sequence[_T]) -> Sequence[_T]:
    """Return the part of a block's read data that belongs to point.

    data may be longer than the block: bit reads often come back padded to a multiple of 8.
    """
    count = register_count(point)
    start = point.address - block.address
    if point.table != block.table or start < 0 or start + count > block.count:
        raise ValueError(
            f"{point.table} {point.address} (+{count}) is outside the block "
            f"{block.table} {block.address} (+{block.count})"
        )
    if len(data) < start + count:
        raise ValueError(f"the read returned {len(data)} value(s), fewer than {block.count}")
    return data[start : start + count]


def decode_block(
    block: ReadBlock, points: Mapping[str, PointSpec], data: Sequence[int]
) -> dict[str, Value]:
    """Decode every point of a block from the data one read of the block returned."""
    values: dict[str, Value] = {}
    for name in block.names:
        point = points[name]
        part = slice_block(block, point, data)
        if block.table in BIT_TABLES:
            values[name] = decode_bits(point, [bool(b) for b in part])
        else:
            values[name] = decode_registers(point, part)
    return values


_Post: TypeAlias = "Callable[[int | float], int | float] | None"


def _post(point: PointSpec, layout: _Layout) -> _Post:
    """raw -> engineering value of a numeric point, as :func:`_scaled` does; None: the raw one."""
    scale, offset = point.scale, point.offset
    if scale is None and offset is None:
        return None
    if layout.kind == "integer" and _whole(scale) and _whole(offset):
        mul = 1 if scale is None else int(scale)
        add = 0 if offset is None else int(offset)
        return lambda raw: raw * mul + add
    return lambda raw: _scaled(point, raw)


class BlockDecoder:
    """Decodes the data of one read block into its points' values, as :func:`decode_block` does.

    Compiled once per block (a poll reads the same blocks all day): big-endian numeric points
    that do not overlap are unpacked with one ``struct`` format for the whole block (pad bytes
    over the holes); register bits, strings, other byte or word orders and overlapping points
    are decoded point by point.
    """

    __slots__ = ("_bits", "_count", "_names", "_others", "_pack", "_posts", "_struct", "block")

    def __init__(self, block: ReadBlock, points: Mapping[str, PointSpec]) -> None:
        self.block = block
        self._count = block.count
        self._bits: list[tuple[str, int]] = []
        self._others: list[tuple[str, PointSpec, int, int]] = []
        fast: list[tuple[int, str, _Layout, PointSpec]] = []
        for name in block.names:
            point = points[name]
            layout = _layout(point)
            start = point.address - block.address
            if point.table != block.table or start < 0 or start + layout.count > block.count:
                raise ValueError(
                    f"{point.table} {point.address} (+{layout.count}) is outside the block "
                    f"{block.table} {block.address} (+{block.count})"
                )
            if layout.kind == "bit":
                self._bits.append((name, start))
            elif (
                layout.kind in ("integer", "float")
                and point.byte_order == "big"
                and (layout.count == 1 or point.word_order == "big")
            ):
                fast.append((start, name, layout, point))
            else:
                self._others.append((name, point, start, layout.count))
        fmt, pos = [">"], 0
        names: list[str] = []
        posts: list[_Post] = []
        for start, name, layout, point in sorted(fast, key=lambda f: f[0]):
            if start < pos:  # overlaps the previous point: on its own
                self._others.append((name, point, start, layout.count))
                continue
            if start > pos:
                fmt.append(f"{2 * (start - pos)}x")
            fmt.append(layout.fmt)
            pos = start + layout.count
            names.append(name)
            posts.append(_post(point, layout))
        self._names = tuple(names)
        self._posts = tuple(posts)
        self._struct = struct.Struct("".join(fmt))
        self._pack = (
            struct.Struct(f">{block.count}H").pack if block.table in REGISTER_TABLES else None
        )

    def decode(self, data: Sequence[int]) -> dict[str, Value]:
        """The values of the block's points from the data one read of the block returned."""
        count = self._count
        if len(data) < count:
            raise ValueError(f"the read returned {len(data)} value(s), fewer than {count}")
        values: dict[str, Value] = {}
        for name, start in self._bits:
            values[name] = bool(data[start])
        if self._names:
            assert self._pack is not None
            words = data if len(data) == count else data[:count]
            try:
                buf = self._pack(*words)
            except struct.error:
                raise ValueError(f"register values must be 0..65535, got {list(words)}") from None
            raws = self._struct.unpack_from(buf)
            for name, post, raw in zip(self._names, self._posts, raws, strict=True):
                values[name] = raw if post is None else post(raw)
        for name, point, start, width in self._others:
            values[name] = decode_registers(point, data[start : start + width])
        return values
