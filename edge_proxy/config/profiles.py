"""The ``profiles:`` section: what a kind of device can do (points, commands, telemetry).

Also :func:`check_param`, the one check of a command parameter against its declaration,
shared by the config (a parameter's ``default``) and the planner (a COMMAND's values).
"""

from __future__ import annotations

import codecs
import math
import re
import string
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from edge_proxy.config.simulation import SimulateConfig
from edge_proxy.config.telemetry import TelemetryGroupConfig
from edge_proxy.config.values import Duration, Size, _Model
from edge_proxy.errors import EdgeProxyError, RequestError

_TABLE_ALIASES = {
    "coil": "coil",
    "coils": "coil",
    "discrete_input": "discrete_input",
    "discrete_inputs": "discrete_input",
    "di": "discrete_input",
    "input": "input",
    "ir": "input",
    "input_register": "input",
    "input_registers": "input",
    "holding": "holding",
    "hr": "holding",
    "holding_register": "holding",
    "holding_registers": "holding",
}
#: The value types a point can hold.
PointType = Literal[
    "bool",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
    "string",
]


_REGISTER_TABLES: list[JsonValue] = [
    k for k, v in _TABLE_ALIASES.items() if v in ("input", "holding")
]
_READ_ONLY_TABLES: list[JsonValue] = [
    k for k, v in _TABLE_ALIASES.items() if v in ("input", "discrete_input")
]
_BIT_TABLES: list[JsonValue] = [
    k for k, v in _TABLE_ALIASES.items() if v in ("coil", "discrete_input")
]
#: JSON Schema pattern of a percentage deadband above 0 (``"2%"``, ``"0.5%"``).
PERCENT_PATTERN = r"^\s*(?=[^1-9]*[1-9])\d+(\.\d+)?\s*%\s*$"
_DEADBAND_FORM = 'expected a number >= 0 or a percentage of the min..max span such as "2%"'


class PointConfig(_Model):
    """A typed value on a device (a Modbus register, bits, or a simulated value)."""

    # the rules of _coherent that one point's own keys can express, for editors
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"type": {"const": "string"}}, "required": ["type"]},
                    "then": {"required": ["length"]},
                },
                {
                    "if": {
                        "properties": {
                            "type": {"const": "bool"},
                            "table": {"enum": _REGISTER_TABLES},
                        },
                        "required": ["type", "table"],
                    },
                    "then": {"required": ["bit"]},
                },
                {
                    "if": {
                        "properties": {"table": {"enum": _READ_ONLY_TABLES}},
                        "required": ["table"],
                    },
                    "then": {"properties": {"access": {"const": "r"}}},
                },
                {
                    "if": {
                        "properties": {"type": {"enum": ["bool", "string"]}},
                        "required": ["type"],
                    },
                    "then": {"not": {"required": ["deadband"]}},
                },
                {
                    "if": {"properties": {"table": {"enum": _BIT_TABLES}}, "required": ["table"]},
                    "then": {"not": {"required": ["deadband"]}},
                },
                {
                    "if": {"properties": {"type": {"const": "string"}}, "required": ["type"]},
                    "then": {"not": {"required": ["simulate"]}},
                },
                {
                    "if": {
                        "properties": {"deadband": {"type": "string"}},
                        "required": ["deadband"],
                    },
                    "then": {"required": ["min", "max"]},
                },
            ]
        }
    )

    table: Annotated[
        Literal["coil", "discrete_input", "input", "holding"],
        WithJsonSchema({"enum": sorted(_TABLE_ALIASES)}),
    ] = Field("holding", description="coil, discrete_input, input or holding (aliases accepted).")
    address: int = Field(0, ge=0, le=65535, description="0-based register or bit address.")
    type: PointType = Field(
        "uint16", description="Value type; uint16 for registers, bool for bits."
    )
    length: int | None = Field(None, ge=1, le=123, description="String length in registers.")
    byte_order: Literal["big", "little"] = Field(
        "big", description="Byte order inside each 16-bit register."
    )
    word_order: Literal["big", "little"] = Field(
        "big", description="Register order of multi-register values (big: high word first)."
    )
    bit: int | None = Field(None, ge=0, le=15, description="One bit of a register, as bool.")
    scale: float | None = Field(None, description="engineering = raw * scale + offset.")
    offset: float | None = Field(None, description="Added after scaling.")
    access: Literal["r", "rw", "w"] = Field(
        "r", description="r (read only), rw, or w (write only)."
    )
    min: float | None = Field(None, description="Lowest value a write may set.")
    max: float | None = Field(None, description="Highest value a write may set.")
    unit: str | None = Field(None, description="Engineering unit, reported in QUERY.")
    description: str | None = Field(None, description="Free text, reported in QUERY.")
    deadband: Annotated[
        float | str | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "number", "minimum": 0},
                    {"type": "string", "pattern": PERCENT_PATTERN},
                ]
            }
        ),
    ] = Field(
        None,
        description='Telemetry report: change: a number is an absolute change; "2%" a share '
        "of the min..max span (both set). Default: any change is reported.",
    )
    simulate: SimulateConfig | None = Field(
        None,
        description="For edge-proxy simulate and the simulated driver: how the value moves "
        "over time (ramp, sine, noise, toggle or count). Real devices ignore it.",
    )

    @field_validator("table", mode="before")
    @classmethod
    def _table_alias(cls, v: object) -> object:
        if isinstance(v, str) and v.strip().lower() in _TABLE_ALIASES:
            return _TABLE_ALIASES[v.strip().lower()]
        return v

    @field_validator("deadband", mode="before")
    @classmethod
    def _deadband(cls, v: object, info: ValidationInfo) -> object:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError(_DEADBAND_FORM)
        text = v.strip() if isinstance(v, str) else None
        try:
            number = float(text.removesuffix("%") if text is not None else v)
        except ValueError:
            raise ValueError(_DEADBAND_FORM) from None
        percent = text is not None and text.endswith("%")
        if not math.isfinite(number) or number < 0 or (percent and number == 0):
            raise ValueError(
                "a percentage deadband must be above 0%" if percent else _DEADBAND_FORM
            )
        kind = info.data.get("type")
        if kind in ("bool", "string"):
            raise ValueError(f"a {kind} point takes no deadband: it is reported on any change")
        if percent and (info.data.get("min") is None or info.data.get("max") is None):
            raise ValueError(
                "a percentage deadband needs both min and max on the point "
                "(it is a share of their span)"
            )
        return text if percent else number

    @field_validator("simulate")
    @classmethod
    def _simulate_fits(cls, v: SimulateConfig | None, info: ValidationInfo) -> object:
        if v is not None:
            v.check_point(info.data.get("type"), info.data.get("min"), info.data.get("max"))
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("type") is None:
            table = _TABLE_ALIASES.get(str(data.get("table", "holding")).lower(), "holding")
            bitwise = table in ("coil", "discrete_input") or data.get("bit") is not None
            data = {**data, "type": "bool" if bitwise else "uint16"}
        return data

    @model_validator(mode="after")
    def _coherent(self) -> PointConfig:
        bit_table = self.table in ("coil", "discrete_input")
        if bit_table and self.type != "bool":
            raise ValueError(f"a {self.table} point holds a bool, not {self.type}")
        if bit_table and self.bit is not None:
            raise ValueError("bit applies to register tables only")
        if self.bit is not None and self.type != "bool":
            raise ValueError(f"a point with bit is a bool, not {self.type}")
        if not bit_table and self.bit is None and self.type == "bool":
            raise ValueError("a bool in a register table needs bit: 0-15")
        if self.type == "string" and self.length is None:
            raise ValueError("a string point needs length (in registers)")
        if self.type != "string" and self.length is not None:
            raise ValueError("length applies to string points only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        if self.scale == 0:
            raise ValueError("scale cannot be 0")
        if self.table in ("input", "discrete_input") and self.access != "r":
            article = "an" if self.table == "input" else "a"
            raise ValueError(f"{article} {self.table} point is read-only; access must be r")
        width = {"int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4}
        span = self.length if self.type == "string" else width.get(self.type, 1)
        if self.address + (span or 1) - 1 > 65535:
            raise ValueError(
                f"the point runs past address 65535 ({span} registers from {self.address})"
            )
        for name in ("scale", "offset", "min", "max"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        return self

    @property
    def readable(self) -> bool:
        """Whether reads are allowed."""
        return "r" in self.access

    @property
    def writable(self) -> bool:
        """Whether writes are allowed."""
        return "w" in self.access

    def deadband_value(self) -> float:
        """The deadband in engineering units (a percentage taken of max - min); 0.0 unset."""
        if isinstance(self.deadband, str):
            if self.min is None or self.max is None:
                return 0.0  # refused at load; a model built by hand gets no deadband
            return (self.max - self.min) * float(self.deadband.removesuffix("%")) / 100
        return 0.0 if self.deadband is None else float(self.deadband)


#: The types a command parameter can declare.
ParamType = Literal["int", "float", "number", "bool", "string"]


def param_error(message: str, fieldname: str) -> RequestError:
    """An INVALID_PARAMETERS error naming the offending field."""
    return RequestError("INVALID_PARAMETERS", message, {"field": fieldname})


def check_param(name: str, spec: ParamConfig, value: Any, where: str) -> Any:
    """Check one parameter against its declaration; return the value to use."""
    at = f"{where}.{name}"
    kind = spec.type
    if kind == "bool":
        if not isinstance(value, bool):
            raise param_error(f"{name}: expected true or false, got {value!r}", at)
    elif kind == "string":
        if not isinstance(value, str):
            raise param_error(f"{name}: expected a string, got {value!r}", at)
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise param_error(f"{name}: expected a number, got {value!r}", at)
        if not math.isfinite(value):
            raise param_error(f"{name}: {value!r} is not a finite number", at)
        if kind == "int" and isinstance(value, float):
            if not value.is_integer():
                raise param_error(f"{name}: expected an integer, got {value!r}", at)
            value = int(value)
        if spec.min is not None and value < spec.min:
            raise param_error(f"{name}: {value!r} is below the minimum {spec.min:g}", at)
        if spec.max is not None and value > spec.max:
            raise param_error(f"{name}: {value!r} is above the maximum {spec.max:g}", at)
    if spec.choices is not None and value not in spec.choices:
        raise param_error(f"{name}: {value!r} is not one of {spec.choices!r}", at)
    return value


class ParamConfig(_Model):
    """One declared parameter of a profile command."""

    type: ParamType = Field("number", description="int, float, number, bool or string.")
    min: float | None = Field(None, description="Lowest accepted value.")
    max: float | None = Field(None, description="Highest accepted value.")
    required: bool = Field(False, description="A command without it is refused.")
    default: Any = Field(None, description="Used when the command does not give it.")
    choices: list[Any] | None = Field(None, description="The only values accepted.")
    description: str | None = Field(None, description="Free text.")

    @field_validator("type", mode="before")
    @classmethod
    def _type_alias(cls, v: object) -> object:
        aliases = {"integer": "int", "str": "string", "boolean": "bool", "double": "float"}
        return aliases.get(v, v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _range(self) -> ParamConfig:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min:g}) is greater than max ({self.max:g})")
        if self.default is not None:
            try:
                check_param("default", self, self.default, "default")
            except EdgeProxyError as exc:
                raise ValueError(f"default {exc.message.removeprefix('default: ')}") from None
        return self


class StepConfig(_Model):
    """One step of a named multi-step command: exactly one of write, read, delay, command."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": [k]} for k in ("write", "read", "delay", "command")]
        }
    )

    write: dict[str, Any] | None = Field(
        None, description="Points to write; values may bind {params}."
    )
    read: list[str] | None = Field(None, description="Points to read.")
    delay: Duration | None = Field(None, description="A pause.")
    command: str | None = Field(None, description="Run another command of the same profile.")
    continue_on_error: bool = Field(
        False, alias="continueOnError", description="Go on with the next step if this one fails."
    )

    @model_validator(mode="after")
    def _one_action(self) -> StepConfig:
        if self.write is not None and not self.write:
            raise ValueError("write is empty")
        if self.read is not None and not self.read:
            raise ValueError("read is empty")
        given = [k for k in ("write", "read", "delay", "command") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a step needs exactly one of write, read, delay, command"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class CommandConfig(_Model):
    """A profile command: point writes/reads, steps, or a line-protocol request."""

    description: str | None = Field(None, description="Free text, reported in QUERY.")
    params: dict[str, ParamConfig] = Field({}, description="Declared parameters.")
    write: dict[str, Any] | None = Field(
        None, description="Points to write; values may bind {params}."
    )
    read: list[str] | None = Field(None, description="Points to read (after the write, if both).")
    steps: list[StepConfig] | None = Field(None, description="A named multi-step command.")
    request: str | None = Field(None, description="Line protocol request template.")
    expect: str | None = Field(None, description="Regular expression the reply must match.")
    timeout: Duration | None = Field(None, description="Per-command reply timeout override.")

    @field_validator("expect")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @field_validator("request")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                template_fields(v)
            except ValueError as exc:
                raise ValueError(f"not a valid request template: {exc}") from None
        return v

    @model_validator(mode="after")
    def _has_action(self) -> CommandConfig:
        if self.write is not None and not self.write:
            raise ValueError("write is empty")
        if self.read is not None and not self.read:
            raise ValueError("read is empty")
        if self.steps is not None and not self.steps:
            raise ValueError("steps is empty")
        if self.steps is not None and (self.write or self.read or self.request):
            raise ValueError("steps cannot be combined with write, read or request")
        if self.request is not None and (self.write or self.read):
            raise ValueError("request cannot be combined with write or read")
        if self.expect is not None and self.request is None:
            raise ValueError("expect needs request")
        if self.write is None and self.read is None and self.steps is None and not self.request:
            raise ValueError("a command needs write, read, steps or request")
        return self

    def templates(self) -> list[tuple[str, str]]:
        """Every template of the command with its path below the command (``write.level``).

        A written string is a template when it has a ``{``; a request always is one.
        """
        out: list[tuple[str, str]] = []
        for point, value in (self.write or {}).items():
            if isinstance(value, str) and "{" in value:
                out.append((f"write.{point}", value))
        for j, step in enumerate(self.steps or ()):
            for point, value in (step.write or {}).items():
                if isinstance(value, str) and "{" in value:
                    out.append((f"steps[{j}].write.{point}", value))
        if self.request is not None:
            out.append(("request", self.request))
        return out

    def bound_params(self) -> set[str]:
        """Names of parameters the command's templates refer to (malformed ones left out)."""
        names: set[str] = set()
        for _, template in self.templates():
            try:
                names |= template_fields(template)
            except ValueError:
                continue
        return names


def template_fields(template: str) -> set[str]:
    """The parameter names a format template refers to; ValueError if it is malformed.

    Nested fields of a format spec (``{value:{width}}``) count too. ``{}`` or ``{0}`` can
    never be filled from named parameters: they are returned as ``{}`` and ``0``.
    """
    names: set[str] = set()
    for _, field, spec, _ in string.Formatter().parse(template):
        if field is None:
            continue
        names.add(field.split(".")[0].split("[")[0] or "{}")
        if spec and "{" in spec:
            names |= template_fields(spec)
    return names


class LineConfig(_Model):
    """Framing of a text line protocol."""

    terminator: str = Field(
        "\r\n",
        description="End of every line, both ways; not empty.",
        json_schema_extra={"minLength": 1},
    )
    encoding: str = Field("ascii", description="Text encoding of the lines.")
    max_line: Size = Field(4096, ge=16, description="Longest reply line accepted.")

    @field_validator("terminator")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v:
            raise ValueError("the terminator is empty: a line end that can never be matched")
        return v

    @field_validator("encoding")
    @classmethod
    def _codec(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r}") from None
        return v


class ProfileConfig(_Model):
    """What a kind of device can do."""

    description: str | None = Field(None, description="Free text.")
    points: dict[str, PointConfig] = Field({}, description="Typed values of the device, by name.")
    commands: dict[str, CommandConfig] = Field({}, description="Commands, by commandCode.")
    line: LineConfig | None = Field(None, description="Framing, for text line protocols.")
    telemetry: list[TelemetryGroupConfig] = Field(
        [], description="Poll groups: every device of the profile reads each and reports it."
    )
    # ``poll:`` of earlier versions: refused with an error that names its replacement
    poll_retired: SkipJsonSchema[None] = Field(None, alias="poll", exclude=True, repr=False)

    @field_validator("poll_retired", mode="before")
    @classmethod
    def _poll_is_replaced(cls, v: object) -> None:
        raise ValueError(
            "poll: is replaced by telemetry:, a list of poll groups "
            "(telemetry: [{interval: 10s, points: [...]}])"
        )
