"""A point's ``simulate:`` rule: the curves as pure functions of time, how a value lands on what
the point can hold, the checks at load time (with paths), and the line simulator's replies."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from edge_proxy.config import ConfigError, PointConfig, ProfileConfig, load_config_text
from edge_proxy.core import points as codec
from edge_proxy.core.simulation_rules import (
    point_bit,
    point_registers,
    point_value,
    rule_value,
    seed_of,
)
from edge_proxy_drivers.line.simulator import LineDeviceSim


def point(simulate: dict[str, Any], **keys: Any) -> PointConfig:
    return PointConfig.model_validate({"simulate": simulate, **keys})


def rule(simulate: dict[str, Any]) -> Any:
    found = point(simulate, type="float64").simulate
    assert found is not None
    return found


# ---------------------------------------------------------------------------- the curves


def test_ramp_rises_from_min_to_max_over_the_period_then_starts_again() -> None:
    ramp = rule({"ramp": {"min": 10, "max": 20, "period": "10s"}})
    assert [rule_value(ramp, t) for t in (0, 2.5, 5, 7.5)] == [10, 12.5, 15, 17.5]
    assert rule_value(ramp, 9.999) == pytest.approx(20, abs=0.01)
    assert rule_value(ramp, 10) == 10 and rule_value(ramp, 32.5) == 12.5
    assert rule_value(ramp, -3) == 10  # before the start: the start


def test_sine_is_min_at_the_start_and_max_half_a_period_later() -> None:
    sine = rule({"sine": {"min": 18, "max": 24, "period": "1m"}})
    assert rule_value(sine, 0) == pytest.approx(18)
    assert rule_value(sine, 15) == pytest.approx(21)
    assert rule_value(sine, 30) == pytest.approx(24)
    assert rule_value(sine, 60) == pytest.approx(18)
    values = [rule_value(sine, t / 10) for t in range(600)]
    assert min(values) >= 18 and max(values) <= 24


def test_noise_stays_in_its_band_holds_each_slot_and_differs_by_seed() -> None:
    noise = rule({"noise": {"around": 20, "amplitude": 0.5, "every": "500ms"}})
    values = [rule_value(noise, t / 10, seed=7) for t in range(2000)]
    assert all(19.5 <= v <= 20.5 for v in values)
    assert len(set(values)) > 300  # a new value per slot, hardly ever the same twice
    assert rule_value(noise, 1.0, 7) == rule_value(noise, 1.49, 7)  # one slot, one value
    assert rule_value(noise, 1.0, 7) != rule_value(noise, 1.5, 7)
    assert rule_value(noise, 1.0, 7) == rule_value(noise, 1.0, 7)  # reproducible
    assert rule_value(noise, 1.0, 7) != rule_value(noise, 1.0, 8)
    assert abs(sum(values) / len(values) - 20) < 0.05  # centred on around
    assert seed_of("pillar-001", "t") == seed_of("pillar-001", "t") != seed_of("pillar-002", "t")
    flat = rule({"noise": {"around": 3, "amplitude": 0}})
    assert {rule_value(flat, t) for t in range(10)} == {3}


def test_toggle_alternates_each_period_and_count_steps() -> None:
    toggle = rule({"toggle": {"period": "5s"}})
    assert [rule_value(toggle, t) for t in (0, 4.99, 5, 9.99, 10)] == [0, 0, 1, 1, 0]
    count = rule({"count": {"start": 100, "step": 3, "every": "2s"}})
    assert [rule_value(count, t) for t in (0, 1.9, 2, 7)] == [100, 100, 103, 109]
    down = rule({"count": {"step": -1}})
    assert rule_value(down, 5.5) == -5


# ---------------------------------------------------------------------------- fit to a point


def test_a_scaled_integer_lands_on_a_whole_raw_value_through_the_codec() -> None:
    temp = point(
        {"ramp": {"min": -5, "max": 30, "period": 10}}, table="input", type="int16", scale=0.1
    )
    assert point_registers(temp, 0) == [(-50) & 0xFFFF]
    assert point_value(temp, 0) == -5.0
    assert point_value(temp, 5) == 12.5
    assert point_registers(temp, 5) == codec.encode_registers(temp, 12.5)
    assert point_value(temp, 2.5) == pytest.approx(3.8)  # 3.75 -> raw 38 (nearest whole)
    # what a read of the registers gives is what the simulated driver returns
    for t in (0.3, 1.7, 4.4, 9.9):
        assert codec.decode_registers(temp, point_registers(temp, t)) == point_value(temp, t)


def test_multi_register_orders_and_floats() -> None:
    energy = point({"count": {"step": 1000}}, type="uint32", word_order="little")
    assert point_registers(energy, 70_000) == [70_000_000 & 0xFFFF, 70_000_000 >> 16]
    assert point_value(energy, 70_000) == 70_000_000
    level = point({"sine": {"min": 0, "max": 1, "period": 4}}, type="float32")
    assert point_value(level, 1) == pytest.approx(0.5)
    assert isinstance(point_value(level, 1), float)


def test_a_counter_stops_at_the_points_max_and_at_the_types_range() -> None:
    capped = point({"count": {"step": 10}}, max=55)
    assert [point_value(capped, t) for t in (0, 5, 6, 100)] == [0, 50, 55, 55]
    u16 = point({"count": {"step": 1000}})
    assert point_value(u16, 1000) == 65535
    negative = point({"count": {"step": -1}})  # uint16 cannot go below 0
    assert point_value(negative, 5) == 0
    inverse = point({"count": {"step": -1}}, type="int16", scale=-0.5, min=-2)
    assert [point_value(inverse, t) for t in (1, 3)] == [-1, -2]  # raw 2, then 4: at min
    assert point_registers(inverse, 3) == [4]


def test_bools_come_from_toggle_on_coils_inputs_and_register_bits() -> None:
    coil = point({"toggle": {"period": 1}}, table="coil")
    bit = point({"toggle": {"period": 1}}, table="holding", bit=3)
    for p in (coil, bit):
        assert [point_value(p, t) for t in (0, 1, 2)] == [False, True, False]
        assert point_bit(p, 1.5) is True
    with pytest.raises(ValueError, match="no simulated registers"):
        point_registers(coil, 0)
    numeric = point({"toggle": {"period": 1}})
    assert [point_value(numeric, t) for t in (0, 1)] == [0, 1]
    with pytest.raises(ValueError, match="no simulate rule"):
        point_value(PointConfig(), 0)


# ---------------------------------------------------------------------------- load-time checks

CONFIG = """
edge: {id: e}
gateway: {url: "ws://127.0.0.1:9"}
links: {s: {driver: simulated}}
profiles:
  p:
    points:
%s
devices: [{id: d1, type: t, profile: p, link: s}]
"""


def errors(points: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(CONFIG % points, env={})
    return info.value.located


def test_the_example_rules_load() -> None:
    points = """\
      level: {simulate: {ramp: {min: 0, max: 100, period: 60s}}}
      temp:  {type: float32, simulate: {noise: {around: 20, amplitude: 0.5}}}
      door:  {table: coil, simulate: {toggle: {period: 5s}}}
      wave:  {min: 0, max: 10, simulate: {sine: {min: 0, max: 10, period: 10m}}}
      meter: {type: uint32, max: 1000, simulate: {count: {step: 3, every: 250ms}}}
      plain: {address: 9}"""
    config = load_config_text(CONFIG % points, env={})
    found = config.profiles["p"].points
    assert found["level"].simulate is not None and found["level"].simulate.rule == "ramp"
    noise = found["temp"].simulate
    assert noise is not None and noise.noise is not None and noise.noise.every == 1.0
    meter = found["meter"].simulate
    assert meter is not None and meter.count is not None and meter.count.every == 0.25
    assert found["plain"].simulate is None


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        (
            "      a: {max: 50, simulate: {ramp: {min: 0, max: 100, period: 1s}}}",
            "profiles.p.points.a.simulate (line 8): ramp goes up to 100, above the point's max 50",
        ),
        (
            "      a: {min: 19.8, simulate: {noise: {around: 20, amplitude: 0.5}}}",
            "profiles.p.points.a.simulate (line 8): noise goes down to 19.5, below",
        ),
        (
            "      a: {table: coil, simulate: {ramp: {min: 0, max: 1, period: 1s}}}",
            "profiles.p.points.a.simulate (line 8): a bool point takes toggle, not ramp",
        ),
        (
            "      a: {type: string, length: 2, simulate: {toggle: {period: 1s}}}",
            "profiles.p.points.a.simulate (line 8): a string point cannot be simulated",
        ),
        (
            "      a: {simulate: {ramp: {min: 5, max: 5, period: 1s}}}",
            "profiles.p.points.a.simulate.ramp (line 8): min (5) must be below max (5)",
        ),
        (
            "      a: {simulate: {sine: {min: 0, max: 5, period: 0s}}}",
            "profiles.p.points.a.simulate.sine.period (line 8):",
        ),
        (
            "      a: {simulate: {noise: {around: 1, amplitude: -1}}}",
            "profiles.p.points.a.simulate.noise.amplitude (line 8):",
        ),
        (
            "      a: {simulate: {toggle: {}}}",
            "profiles.p.points.a.simulate.toggle.period (line 8):",
        ),
        (
            "      a: {simulate: {}}",
            "profiles.p.points.a.simulate (line 8): give one rule: ramp, sine, noise, toggle",
        ),
        (
            "      a: {simulate: {toggle: {period: 1s}, count: {}}}",
            "profiles.p.points.a.simulate (line 8): one rule per point, not 2 (toggle and count)",
        ),
        (
            "      a: {simulate: {wobble: {period: 1s}}}",
            "profiles.p.points.a.simulate.wobble (line 8):",
        ),
        (
            "      a: {simulate: {count: {step: .inf}}}",
            "profiles.p.points.a.simulate.count.step (line 8):",
        ),
    ],
)
def test_a_rule_that_does_not_fit_is_refused_with_its_path(points: str, expected: str) -> None:
    found = errors(points)
    assert any(line.startswith(expected) for line in found), found


# ---------------------------------------------------------------------------- line replies


def test_the_line_simulator_fills_a_reply_field_from_its_points_rule() -> None:
    profile = ProfileConfig.model_validate(
        {
            "line": {"terminator": "\r\n"},
            "points": {"door_state": {"simulate": {"toggle": {"period": "1s"}}}},
            "commands": {
                "STATUS": {
                    "request": "STS?",
                    "expect": "^STS (?P<door_state>\\d) (?P<brightness>\\d+)$",
                },
                "SET": {
                    "params": {"brightness": {"type": "int", "required": True}},
                    "request": "BRT {brightness:03d}",
                },
            },
        }
    )
    sim = LineDeviceSim(profile, device_id="txt-1")
    sim.answer("BRT 042")
    # the clock starts with the simulator: move its start to be at a known phase of the rule
    sim.started = time.monotonic() - 0.2
    assert sim.answer("STS?") == "STS 0 42"
    sim.started = time.monotonic() - 1.2
    assert sim.answer("STS?") == "STS 1 42"  # a bool rule fills a digit, not "True"


def test_rules_are_pure_functions_of_time() -> None:
    temp = point({"sine": {"min": 0, "max": 100, "period": 8}}, scale=0.5)
    once = [point_value(temp, t / 4) for t in range(64)]
    again = [point_value(temp, t / 4) for t in range(64)]
    assert once == again
    assert max(once) == 100 and min(once) == 0
    assert all(math.isclose(v * 2, round(v * 2)) for v in once)  # whole raw values of 0.5
