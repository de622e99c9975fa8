"""The values of a point's ``simulate:`` rule: pure functions of time.

``t`` is seconds since the simulator started, so every rule begins where its docs say (a ramp
at ``min``, a toggle at false, a counter at ``start``). :func:`rule_value` is the rule's curve;
:func:`point_registers` and :func:`point_value` fit it to what the point can hold, as a device
would: a bool for a bool point, a whole raw value for an integer type (``scale``/``offset``
applied, kept in ``min``..``max`` and the raw type's range), encoded with the point codec. So
the ``simulated`` driver (which returns :func:`point_value`) and the Modbus simulator (which
serves :func:`point_registers`) report the same number at the same ``t``.

``noise`` is random but reproducible: its value in each ``every`` slot is a hash of the slot
number and a seed (:func:`seed_of` a device and point name), so two points or two devices do
not move in step, and a test can compute what a simulator serves.
"""

from __future__ import annotations

import hashlib
import math
import zlib

from edge_proxy.config import PointConfig, SimulateConfig
from edge_proxy.core import points as codec

#: Largest finite float32, the bound of a float32 point's raw value.
_FLOAT32_MAX = 3.4028234663852886e38


def seed_of(*names: str) -> int:
    """A stable seed for ``noise`` from names (a device id and a point name)."""
    return zlib.crc32("/".join(names).encode("utf-8"))


def _uniform(seed: int, slot: int) -> float:
    """A number in [0, 1) fixed by seed and slot."""
    digest = hashlib.blake2b(f"{seed}:{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def rule_value(rule: SimulateConfig, t: float, seed: int = 0) -> float:
    """The rule's value ``t`` seconds after the start (before fitting it to a point)."""
    t = max(t, 0.0)
    if rule.ramp is not None:
        r = rule.ramp
        return r.min + (r.max - r.min) * ((t % r.period) / r.period)
    if rule.sine is not None:
        s = rule.sine
        return s.min + (s.max - s.min) * (1 - math.cos(2 * math.pi * t / s.period)) / 2
    if rule.noise is not None:
        n = rule.noise
        return n.around + n.amplitude * (2 * _uniform(seed, math.floor(t / n.every)) - 1)
    if rule.toggle is not None:
        return float(math.floor(t / rule.toggle.period) % 2)
    assert rule.count is not None
    c = rule.count
    return c.start + c.step * math.floor(t / c.every)


def _int_range(kind: str) -> tuple[int, int]:
    bits = int(kind.removeprefix("u").removeprefix("int"))
    if kind.startswith("u"):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _raw(point: PointConfig, value: float) -> int | float:
    """The raw value nearest to ``value`` that the point holds within its min..max."""
    if point.min is not None:
        value = max(value, point.min)
    if point.max is not None:
        value = min(value, point.max)
    scale = 1.0 if point.scale is None else point.scale
    offset = 0.0 if point.offset is None else point.offset
    exact = (value - offset) / scale
    if point.type.startswith("float"):
        if point.type == "float32":
            return max(-_FLOAT32_MAX, min(_FLOAT32_MAX, exact))
        return exact
    raw = round(exact)
    step = 1 if scale > 0 else -1  # raw + step raises the engineering value
    if point.min is not None and raw * scale + offset < point.min - 1e-9 * abs(point.min):
        raw += step
    if point.max is not None and raw * scale + offset > point.max + 1e-9 * abs(point.max):
        raw -= step
    low, high = _int_range(point.type)
    return max(low, min(high, raw))


def _raw_spec(point: PointConfig) -> PointConfig:
    """The point without scaling or range: encoding it takes the raw value."""
    return point.model_copy(update={"scale": None, "offset": None, "min": None, "max": None})


def point_bit(point: PointConfig, t: float, seed: int = 0) -> bool:
    """The state of a bool point (a coil, a discrete input or a bit of a register) at ``t``."""
    if point.simulate is None:
        raise ValueError("the point has no simulate rule")
    return rule_value(point.simulate, t, seed) >= 0.5


def point_registers(point: PointConfig, t: float, seed: int = 0) -> list[int]:
    """The registers a register point (not a bit) holds at ``t``, in address order."""
    if point.simulate is None:
        raise ValueError("the point has no simulate rule")
    if point.type in ("bool", "string"):
        raise ValueError(f"a {point.type} point has no simulated registers")
    raw = _raw(point, rule_value(point.simulate, t, seed))
    return codec.encode_registers(_raw_spec(point), raw)


def point_value(point: PointConfig, t: float, seed: int = 0) -> bool | int | float:
    """The engineering value the point holds at ``t``: what a read of the device returns."""
    if point.type == "bool":
        return point_bit(point, t, seed)
    value = codec.decode_registers(point, point_registers(point, t, seed))
    assert not isinstance(value, str)
    return value
