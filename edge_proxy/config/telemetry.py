"""The telemetry keys: a profile's poll groups (``telemetry:``) and the top-level ``telemetry:``.

A group names either ``points`` (a list, or ``"*"`` for every readable point of the profile)
or ``command``, a profile command that writes nothing. What the group's names refer to (known,
readable points; a command that exists and writes nothing) needs the whole profile and is
checked in :mod:`edge_proxy.config.checks`. The report rules themselves are in
:mod:`edge_proxy.core.report`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, Protocol

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from edge_proxy.config.values import DURATION_PATTERN, Duration, _Model, parse_duration

#: The shortest poll interval accepted, in seconds.
MIN_INTERVAL = 0.01

#: A poll interval: a Duration of at least :data:`MIN_INTERVAL` (10 ms).
Interval = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": MIN_INTERVAL},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "seconds (at least 10ms), or a number with a unit: 250ms, 5s, 2m",
        }
    ),
]


class _Readable(Protocol):
    """A point as a group sees it (``PointConfig``; named here to keep the import order)."""

    @property
    def readable(self) -> bool:
        """Whether reads are allowed."""
        ...


class _HasPoints(Protocol):
    """A profile as a group sees it (``ProfileConfig``)."""

    @property
    def points(self) -> Mapping[str, _Readable]:
        """The profile's points, by name, in file order."""
        ...


class TelemetryGroupConfig(_Model):
    """One poll group of a profile: which points (or command), how often, and when reported."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["points"]}, {"required": ["command"]}]}
    )

    name: str = Field(
        "default", min_length=1, description='Sent as "group"; unique in the profile.'
    )
    interval: Interval = Field(description="How often the group is read (at least 10ms).")
    points: list[str] | Literal["*"] | None = Field(
        None, description='Points read, or "*": every readable point. Or command instead.'
    )
    command: str | None = Field(
        None,
        description="Instead of points: a profile command that writes nothing, run each "
        "cycle; its result values are the group's values.",
    )
    report: Literal["change", "always"] = Field(
        "change", description="change: points that moved beyond their deadband; always: all."
    )
    heartbeat: Duration = Field(
        0.0, description="A snapshot (every point) at least this often; 0: never by time."
    )
    min_interval: Duration = Field(
        0.0, description="At most one on-change message per this time per device; 0: no limit."
    )

    @field_validator("interval")
    @classmethod
    def _not_too_fast(cls, v: float) -> float:
        if v < MIN_INTERVAL - 1e-12:
            raise ValueError("an interval under 10 ms is too short: 10ms at least")
        return v

    @field_validator("points", mode="before")
    @classmethod
    def _list_or_star(cls, v: object) -> object:
        if isinstance(v, str) and v != "*":
            raise ValueError('expected a list of point names or "*" (every readable point)')
        if isinstance(v, list) and not v:
            raise ValueError('points is empty: name at least one point, or "*"')
        return v

    @model_validator(mode="after")
    def _points_or_command(self) -> TelemetryGroupConfig:
        if (self.points is None) == (self.command is None):
            if self.command is not None:
                raise ValueError("a group takes points or command, not both")
            raise ValueError("a group needs points or command: neither is given")
        return self

    def point_names(self, profile: _HasPoints) -> list[str]:
        """The points the group reads: ``"*"`` is every readable point in profile order.

        A command group reads no points of its own: its values are the command's result.
        """
        if self.points == "*":
            return [name for name, point in profile.points.items() if point.readable]
        return list(self.points or ())


class TelemetryConfig(_Model):
    """How telemetry is kept while the Gateway is down."""

    buffer: Literal["latest", "queue"] = Field(
        "latest",
        description="latest: each point's latest value, one snapshot after REGISTER; "
        "queue: every message queued in the outbox (telemetry dropped first when full).",
    )
