"""A point's ``simulate:`` key: how a simulator moves the point's value over time.

Exactly one rule per point, each a mapping of its own settings::

    simulate: {ramp: {min: 0, max: 100, period: 60s}}     # min to max over period, again and again
    simulate: {sine: {min: 18, max: 24, period: 10m}}     # a smooth wave from min to max and back
    simulate: {noise: {around: 20, amplitude: 0.5}}       # a random value, a new one every 1s
    simulate: {toggle: {period: 5s}}                      # false, then true, each for period
    simulate: {count: {step: 1, every: 1s}}               # start + step per `every`: a counter

Only ``edge-proxy simulate`` and the ``simulated`` driver read it; a real device ignores it.
What a rule gives at a time is in :mod:`edge_proxy.core.simulation_rules`; which rules fit which
point (a bool takes ``toggle``; a string none; a rule's range inside the point's ``min``..``max``)
is checked by :meth:`SimulateConfig.check_point`, called from the point's own validation.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from edge_proxy.config.values import PositiveDuration, _Model

#: The rule names, in the order the docs list them.
RULES = ("ramp", "sine", "noise", "toggle", "count")


class RangeRule(_Model):
    """A rule that moves between min and max once per period (ramp, sine)."""

    min: float = Field(allow_inf_nan=False, description="Lowest value.")
    max: float = Field(allow_inf_nan=False, description="Highest value.")
    period: PositiveDuration = Field(description="Time of one whole cycle.")

    @model_validator(mode="after")
    def _ordered(self) -> RangeRule:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min:g}) must be below max ({self.max:g})")
        return self


class NoiseRule(_Model):
    """A random value within around ± amplitude, a new one every `every`."""

    around: float = Field(allow_inf_nan=False, description="Middle of the values.")
    amplitude: float = Field(ge=0, allow_inf_nan=False, description="Largest distance from around.")
    every: PositiveDuration = Field(1.0, description="How long each value holds.")


class ToggleRule(_Model):
    """False (0) for one period, then true (1) for one period, and so on."""

    period: PositiveDuration = Field(description="How long each state holds.")


class CountRule(_Model):
    """A counter: start, plus step every `every`; it stops at the point's min, max or type."""

    start: float = Field(0.0, allow_inf_nan=False, description="The value at the start.")
    step: float = Field(
        1.0, allow_inf_nan=False, description="Added every `every` (negative counts down)."
    )
    every: PositiveDuration = Field(1.0, description="How often step is added.")


class SimulateConfig(_Model):
    """How a simulator moves a point's value over time: exactly one rule."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": [name]} for name in RULES]})

    ramp: RangeRule | None = Field(
        None, description="Rises from min to max over period, then starts again at min."
    )
    sine: RangeRule | None = Field(
        None, description="A smooth wave: min at the start, max half a period later."
    )
    noise: NoiseRule | None = Field(None, description="A random value around a middle.")
    toggle: ToggleRule | None = Field(
        None, description="Alternates false and true (0 and 1), each for period."
    )
    count: CountRule | None = Field(None, description="A counter, e.g. an energy meter.")

    @model_validator(mode="after")
    def _one_rule(self) -> SimulateConfig:
        given = [name for name in RULES if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"one rule per point, not {len(given)} ({' and '.join(given)})")
        if not given:
            raise ValueError("give one rule: ramp, sine, noise, toggle or count")
        return self

    @property
    def rule(self) -> str:
        """The name of the rule given."""
        return next(name for name in RULES if getattr(self, name) is not None)

    def bounds(self) -> tuple[float, float] | None:
        """The lowest and highest value the rule gives; None for a counter (no end)."""
        if self.ramp is not None:
            return self.ramp.min, self.ramp.max
        if self.sine is not None:
            return self.sine.min, self.sine.max
        if self.noise is not None:
            return (
                self.noise.around - self.noise.amplitude,
                self.noise.around + self.noise.amplitude,
            )
        if self.toggle is not None:
            return 0.0, 1.0
        return None

    def check_point(self, kind: str | None, low: float | None, high: float | None) -> None:
        """ValueError unless the rule fits a point of type ``kind`` with min ``low``, max ``high``.

        A string point takes no rule, a bool point only ``toggle``; a rule's values must lie in
        the point's min..max where those are set (a counter is stopped at them instead).
        """
        if kind == "string":
            raise ValueError("a string point cannot be simulated")
        if kind == "bool" and self.rule != "toggle":
            raise ValueError(f"a bool point takes toggle, not {self.rule}")
        bounds = self.bounds() if kind != "bool" else None
        if bounds is None:
            return
        if low is not None and bounds[0] < low:
            raise ValueError(
                f"{self.rule} goes down to {bounds[0]:g}, below the point's min {low:g}"
            )
        if high is not None and bounds[1] > high:
            raise ValueError(
                f"{self.rule} goes up to {bounds[1]:g}, above the point's max {high:g}"
            )
