"""Configuration: YAML -> validated, frozen config objects, with errors that name their path.

Loading runs in three passes so that one run reports every problem at once:

1. YAML is parsed and ``${VAR}`` / ``${VAR:-default}`` are replaced from the environment;
2. the tree is validated against the pydantic models below (shape, types, ranges);
3. cross-references are checked (unique ids, known profiles/links/drivers/points, unit clashes).

Every error is a single line ``path: problem (got value)`` so an operator can fix a device map
without reading code.
"""

from __future__ import annotations

import codecs
import math
import os
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    SecretStr,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from edge_proxy.errors import EdgeProxyError, RequestError

# ---------------------------------------------------------------------------- values

_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "k": 1000,
    "K": 1024,
    "KB": 1000,
    "M": 1024**2,
    "MB": 1000**2,
    "G": 1024**3,
    "GB": 1000**3,
}


def parse_duration(value: object) -> float:
    """Turn ``1.5``, ``"250ms"``, ``"5s"``, ``"2m"`` or ``"1h"`` into seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s or 250ms")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("expected a duration such as 5s, 250ms, 2m or a number of seconds")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: object) -> int:
    """Turn ``65536``, ``"64KiB"`` or ``"16MiB"`` into a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64KiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    else:
        raise ValueError("expected a size such as 65536, 64KiB or 16MiB")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|M|G)?\s*$"
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "seconds, or a number with a unit: 250ms, 5s, 2m, 1h",
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "bytes, or a number with a unit: 64KiB, 16MiB",
        }
    ),
]

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate_env(
    tree: object, env: Mapping[str, str], path: str = "", errors: list[str] | None = None
) -> object:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree."""
    errs = errors if errors is not None else []
    if isinstance(tree, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = env.get(name)
            # as in a shell, ${VAR:-default} also takes the default when VAR is set but empty
            if value is not None and (value or default is None):
                return value
            if default is not None:
                return default
            errs.append(
                f"{path or '<root>'}: environment variable {name} is not set "
                f"and has no default (write ${{{name}:-default}} to give one)"
            )
            return ""

        return _ENV_RE.sub(sub, tree)
    if isinstance(tree, dict):
        return {k: interpolate_env(v, env, _join(path, k), errs) for k, v in tree.items()}
    if isinstance(tree, list):
        return [interpolate_env(v, env, f"{path}[{i}]", errs) for i, v in enumerate(tree)]
    return tree


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


# ---------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EdgeConfig(_Model):
    """Who this edge is on the Gateway."""

    id: str = Field(
        min_length=1,
        description="Our clientId on the Gateway.",
        json_schema_extra={"pattern": r"^[^:\s](?:[^:]*[^:\s])?$"},
    )
    name: str | None = Field(None, description="Human name, sent in REGISTER clientInfo.")

    @field_validator("id")
    @classmethod
    def _no_colon(cls, v: str) -> str:
        if ":" in v or v.strip() != v:
            raise ValueError("must not contain ':' or surrounding spaces")
        return v


class TlsConfig(_Model):
    """TLS settings for a wss:// Gateway."""

    ca_file: str | None = Field(None, description="CA bundle that signs the Gateway certificate.")
    cert_file: str | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: str | None = Field(None, description="Private key of the client certificate.")
    verify: bool = Field(True, description="Verify the Gateway certificate and host name.")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsConfig:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file is set but cert_file is not")
        return self


class ReconnectConfig(_Model):
    """Exponential backoff with jitter between connection attempts."""

    initial: Duration = Field(0.5, description="First retry delay.")
    max: Duration = Field(30.0, description="Longest retry delay.")
    jitter: float = Field(
        0.2, ge=0.0, le=1.0, description="Random spread, a fraction of the delay."
    )

    @model_validator(mode="after")
    def _order(self) -> ReconnectConfig:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}s) is greater than max ({self.max}s)")
        if self.max <= 0:
            raise ValueError("max must be above 0")
        return self


class OutboxConfig(_Model):
    """Bounds of the queue of messages waiting for the Gateway."""

    max_messages: int = Field(10000, ge=1, description="Most messages kept while the link is down.")
    max_bytes: Size = Field(16 * 1024**2, ge=1024, description="Most bytes kept.")
    spool: str | None = Field(None, description="On-disk spool file for terminal messages.")


class GatewayConfig(_Model):
    """The upstream WebSocket session."""

    url: str = Field(
        description="ws:// or wss:// address of the Gateway.",
        json_schema_extra={"pattern": r"^wss?://[^/\s]+"},
    )
    token: SecretStr | None = Field(None, description="Bearer token; never logged.")
    tls: TlsConfig | None = Field(None, description="TLS settings for wss:// URLs.")
    heartbeat_interval: Duration = Field(30.0, gt=0, description="HEARTBEAT period.")
    ping_interval: Duration = Field(20.0, gt=0, description="WebSocket ping period.")
    ping_timeout: Duration = Field(20.0, gt=0, description="Pong wait before the link is dead.")
    open_timeout: Duration = Field(10.0, gt=0, description="Connect + handshake limit.")
    max_message_size: Size = Field(1024**2, ge=1024, description="Largest accepted frame.")
    reconnect: ReconnectConfig = ReconnectConfig()
    outbox: OutboxConfig = OutboxConfig()

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not re.match(r"^wss?://[^/\s]+", v):
            raise ValueError("expected a ws:// or wss:// URL")
        return v

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token(cls, v: object) -> object:
        return None if v == "" else v


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

    @field_validator("table", mode="before")
    @classmethod
    def _table_alias(cls, v: object) -> object:
        if isinstance(v, str) and v.strip().lower() in _TABLE_ALIASES:
            return _TABLE_ALIASES[v.strip().lower()]
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
                list(string.Formatter().parse(v))
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

    def bound_params(self) -> set[str]:
        """Names of parameters the command's templates refer to."""
        names: set[str] = set()
        for value in (self.write or {}).values():
            names |= _template_names(value)
        for step in self.steps or ():
            for value in (step.write or {}).values():
                names |= _template_names(value)
        if self.request:
            names |= _template_names(self.request)
        return names


def _template_names(value: object) -> set[str]:
    if not isinstance(value, str):
        return set()
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
    except ValueError:
        return set()
    # "{}" or "{0}" can never be filled from named parameters: report it as an unknown name
    return {f.split(".")[0].split("[")[0] or "{}" for f in fields}


class LineConfig(_Model):
    """Framing of a text line protocol."""

    terminator: str = Field("\r\n", min_length=1, description="End of every line, both ways.")
    encoding: str = Field("ascii", description="Text encoding of the lines.")
    max_line: Size = Field(4096, ge=16, description="Longest reply line accepted.")

    @field_validator("encoding")
    @classmethod
    def _codec(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown text encoding {v!r}") from None
        return v


class PollConfig(_Model):
    """Periodic reads sent to the Gateway as telemetry."""

    interval: Duration = Field(gt=0, description="How often the points are read.")
    points: list[str] = Field(min_length=1, description="Points sent as telemetry.")


class ProfileConfig(_Model):
    """What a kind of device can do."""

    description: str | None = Field(None, description="Free text.")
    points: dict[str, PointConfig] = Field({}, description="Typed values of the device, by name.")
    commands: dict[str, CommandConfig] = Field({}, description="Commands, by commandCode.")
    line: LineConfig | None = Field(None, description="Framing, for text line protocols.")
    poll: PollConfig | None = Field(None, description="Periodic telemetry reads.")


class LinkConfig(BaseModel):
    """A physical connection shared by the devices that name it; drivers may add keys."""

    model_config = ConfigDict(extra="allow", frozen=True)

    driver: str = Field(min_length=1)
    host: str | None = Field(None, description="TCP host name or address (TCP drivers).")
    port: int | str | None = Field(
        None,
        description="TCP port, or serial device path.",
        json_schema_extra={"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]},
    )
    baudrate: int = Field(9600, gt=0, description="Serial line speed.")
    bytesize: int = Field(8, ge=5, le=8, description="Serial data bits.")
    parity: Annotated[
        Literal["N", "E", "O", "M", "S"],
        WithJsonSchema({"enum": ["N", "E", "O", "M", "S", "n", "e", "o", "m", "s"]}),
    ] = Field("N", description="N, E or O (M and S where the port supports them).")
    stopbits: Annotated[float, WithJsonSchema({"enum": [1, 1.5, 2]})] = Field(
        1, description="Serial stop bits."
    )
    timeout: Duration = Field(1.0, gt=0, description="Per-transaction timeout.")
    connect_timeout: Duration | None = Field(None, gt=0, description="Default: timeout.")
    turnaround: Duration = Field(0.0, description="Quiet time between two transactions.")
    offline_after: int = Field(3, ge=1, description="Failures in a row before offline.")
    health_interval: Duration = Field(30.0, gt=0, description="Idle device check period.")
    reconnect: ReconnectConfig = Field(
        ReconnectConfig(), description="Backoff between attempts to reopen the connection."
    )

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, v: float) -> float:
        if v not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return v

    @field_validator("port", mode="before")
    @classmethod
    def _port_number(cls, v: object) -> object:
        # "${PLC_PORT:-502}" arrives as a string; a serial device path is never all digits
        if isinstance(v, str) and v.strip().isdigit():
            return int(v)
        return v

    @field_validator("parity", mode="before")
    @classmethod
    def _parity_upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @property
    def extra_keys(self) -> dict[str, Any]:
        """Driver-specific keys not known to the core."""
        return dict(self.model_extra or {})


def _link_kind(value: object) -> str:
    return "named" if isinstance(value, str) else "inline"


# A tagged union, so that errors come from the branch the value is and paths stay plain.
LinkRef = Annotated[
    Annotated[str, Tag("named")] | Annotated[LinkConfig, Tag("inline")],
    Discriminator(_link_kind),
]
_UNION_TAGS = {"named", "inline"}


class DeviceConfig(_Model):
    """One field device."""

    id: str = Field(
        min_length=1,
        description="Unique; the part after ':' in targetClientId.",
        json_schema_extra={"pattern": r"^[^:,*\s](?:[^:,*]*[^:,*\s])?$"},
    )
    type: str = Field("device", min_length=1, description="deviceType on the wire.")
    profile: str = Field(description="A name from profiles.")
    link: LinkRef = Field(description="A name from links, or an inline link mapping.")
    unit: int | None = Field(None, ge=0, le=247, description="Modbus unit id; default 1.")
    enabled: bool = Field(True, description="false: configured but not started (disabled).")
    name: str | None = Field(None, description="Human name.")
    description: str | None = Field(None, description="Free text.")

    @field_validator("id")
    @classmethod
    def _id_chars(cls, v: str) -> str:
        if ":" in v or "," in v or "*" in v or v.strip() != v:
            raise ValueError("must not contain ':', ',', '*' or surrounding spaces")
        return v


class CommandsConfig(_Model):
    """Limits and memory of the command engine."""

    dedup_window: Duration = Field(600.0, description="How long a finished requestRef is kept.")
    dedup_max: int = Field(100000, ge=1, description="Most requestRefs remembered.")
    max_queued_per_link: int = Field(1000, ge=1, description="Commands in progress per link.")
    max_queued: int = Field(10000, ge=1, description="Commands in progress in all.")
    max_batch_targets: int = Field(5000, ge=1, description="Targets of one BATCH.")
    max_steps: int = Field(100, ge=1, description="Steps of one COMPLEX command.")
    default_timeout: Duration = Field(5.0, gt=0, description="When a COMMAND has no timeout.")
    shutdown_grace: Duration = Field(10.0, description="In-flight wait on SIGINT/SIGTERM.")
    aging: Duration = Field(2.0, gt=0, description="Queue wait that lifts a command one priority.")


class MetricsConfig(_Model):
    """Local HTTP endpoint for /metrics and /healthz."""

    listen: str | None = Field(
        None, description="host:port for /metrics and /healthz, e.g. 127.0.0.1:9108; off if unset."
    )
    stall_after: Duration = Field(
        5.0, gt=0, description="/healthz answers 503 when the event loop has not run this long."
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ValueError("expected host:port, e.g. 127.0.0.1:9108")
        return v

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ControlConfig(_Model):
    """The local control socket used by ``edge-proxy status`` and ``edge-proxy call``."""

    socket: str | None = Field(
        None, description="Unix socket path; default: edge-proxy-<edge id>.sock in the temp dir."
    )
    enabled: bool = Field(True, description="Serve the control socket at all.")


class Config(_Model):
    """The whole configuration file."""

    edge: EdgeConfig
    gateway: GatewayConfig
    links: dict[str, LinkConfig] = Field({}, description="Physical connections, by name.")
    profiles: dict[str, ProfileConfig] = Field({}, description="Kinds of device, by name.")
    devices: list[DeviceConfig] = Field([], description="The field devices.")
    commands: CommandsConfig = CommandsConfig()
    metrics: MetricsConfig = MetricsConfig()
    control: ControlConfig = ControlConfig()

    def control_socket(self) -> str:
        """Where the control socket is (configured, or in the temp directory)."""
        import tempfile

        if self.control.socket:
            return self.control.socket
        return str(Path(tempfile.gettempdir()) / f"edge-proxy-{self.edge.id}.sock")

    def link_of(self, device: DeviceConfig) -> LinkConfig:
        """The link mapping a device uses, named or inline."""
        return device.link if isinstance(device.link, LinkConfig) else self.links[device.link]

    def link_name_of(self, device: DeviceConfig) -> str:
        """A stable name for a device's link (inline links are named after their device)."""
        return device.link if isinstance(device.link, str) else f"{device.id}/link"


# ---------------------------------------------------------------------------- loading


class ConfigError(EdgeProxyError):
    """A configuration that cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


def _loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS or "[" in str(part):
            continue
        else:
            out = _join(out, part)
    return out or "<root>"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_validation(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = _loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            out.append(f"{loc}: unknown key (check its spelling)")
        elif err["type"] == "missing":
            out.append(f"{loc}: required key is missing")
        else:
            out.append(f"{loc}: {msg} (got {_short(err.get('input'))})")
    return out


DriverChecker = Callable[[str, LinkConfig], list[str]]
ProfileChecker = Callable[[str, "ProfileConfig"], list[str]]


def validate_tree(
    tree: object,
    check_link: DriverChecker | None = None,
    check_profile: ProfileChecker | None = None,
) -> Config:
    """Validate an already-interpolated tree; raise ConfigError listing every problem."""
    if not isinstance(tree, dict):
        raise ConfigError([f"<root>: expected a mapping of sections (got {_short(tree)})"])
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        # the full cross-check needs a valid config; the name references can be checked anyway
        raise ConfigError(_format_validation(exc) + _raw_references(tree)) from None
    errors = cross_check(config, check_link, check_profile)
    if errors:
        raise ConfigError(errors)
    return config


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    check_link: DriverChecker | None = None,
    check_profile: ProfileChecker | None = None,
) -> Config:
    """Read, interpolate and validate a YAML config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start}: {bad!r})"]) from None
    return load_config_text(text, env, check_link, source=str(path), check_profile=check_profile)


def load_config_text(
    text: str,
    env: Mapping[str, str] | None = None,
    check_link: DriverChecker | None = None,
    source: str = "<config>",
    check_profile: ProfileChecker | None = None,
) -> Config:
    """Parse and validate YAML text (see load_config)."""
    try:
        tree = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        problem = " ".join(str(problem).split())
        raise ConfigError([f"{source}:{where} not valid YAML: {problem}"]) from None
    errors: list[str] = []
    tree = interpolate_env(tree, os.environ if env is None else env, "", errors)
    if errors:
        raise ConfigError(errors)
    return validate_tree(tree, check_link, check_profile)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (the last would win silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, (str, int, float, bool)):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (it appears twice in one mapping)",
                    key_node.start_mark,
                )
            seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _raw_references(tree: dict[Any, Any]) -> list[str]:
    """Name references of a tree that failed validation: ids, profiles, links."""
    errors: list[str] = []
    devices = tree.get("devices")
    raw_profiles, raw_links = tree.get("profiles"), tree.get("links")
    profiles: dict[Any, Any] = raw_profiles if isinstance(raw_profiles, dict) else {}
    links: dict[Any, Any] = raw_links if isinstance(raw_links, dict) else {}
    if not isinstance(devices, list):
        return errors
    seen: dict[object, int] = {}
    for i, dev in enumerate(devices):
        if not isinstance(dev, dict):
            continue
        at = f"devices[{i}]"
        dev_id = dev.get("id")
        if isinstance(dev_id, str):
            if dev_id in seen:
                errors.append(f"{at}.id: {dev_id!r} is already used by devices[{seen[dev_id]}]")
            seen.setdefault(dev_id, i)
        profile = dev.get("profile")
        if isinstance(profile, str) and profile not in profiles:
            known = ", ".join(sorted(map(str, profiles))) or "none defined"
            errors.append(f"{at}.profile: unknown profile {profile!r} (known: {known})")
        link = dev.get("link")
        if isinstance(link, str) and link not in links:
            known = ", ".join(sorted(map(str, links))) or "none defined"
            errors.append(f"{at}.link: unknown link {link!r} (known: {known})")
    return errors


def _link_identity(config: Config, device: DeviceConfig) -> tuple[object, ...]:
    """What makes two devices share a connection (as Driver.share_key decides it)."""
    link = config.link_of(device)
    if isinstance(link.port, str):
        return ("serial", link.port)
    if link.host:
        return (link.driver, link.host, link.port)
    return ("named", config.link_name_of(device))


def cross_check(
    config: Config,
    check_link: DriverChecker | None = None,
    check_profile: ProfileChecker | None = None,
) -> list[str]:
    """Check references between sections; return one line per problem."""
    errors: list[str] = []
    profile_checked: set[tuple[str, str]] = set()
    for pname, profile in config.profiles.items():
        errors += _check_profile(f"profiles.{pname}", profile, config.commands.max_steps)

    seen_ids: dict[str, int] = {}
    units: dict[tuple[object, ...], dict[int, str]] = {}
    port_drivers: dict[str, str] = {}
    for i, dev in enumerate(config.devices):
        at = f"devices[{i}]"
        if dev.id in seen_ids:
            errors.append(f"{at}.id: {dev.id!r} is already used by devices[{seen_ids[dev.id]}]")
        else:
            seen_ids[dev.id] = i
        if dev.profile not in config.profiles:
            known = ", ".join(sorted(config.profiles)) or "none defined"
            errors.append(f"{at}.profile: unknown profile {dev.profile!r} (known: {known})")
        if isinstance(dev.link, str) and dev.link not in config.links:
            known = ", ".join(sorted(config.links)) or "none defined"
            errors.append(f"{at}.link: unknown link {dev.link!r} (known: {known})")
            continue
        link = config.link_of(dev)
        if isinstance(link.port, str) and dev.enabled:
            # one serial port is one connection: two protocols cannot share it
            other = port_drivers.setdefault(link.port, link.driver)
            if other != link.driver:
                errors.append(
                    f"{at}.link: port {link.port} is already used by driver {other!r} "
                    f"(a serial port carries one protocol; got {link.driver!r})"
                )
        if isinstance(dev.link, LinkConfig) and check_link is not None:
            errors += [f"{at}.link{m}" for m in check_link(link.driver, link)]
        pair = (link.driver, dev.profile)
        if (
            check_profile is not None
            and dev.enabled
            and dev.profile in config.profiles
            and pair not in profile_checked
        ):
            profile_checked.add(pair)
            errors += [
                f"profiles.{dev.profile}{m} (for driver {link.driver!r}, used by {at})"
                for m in check_profile(link.driver, config.profiles[dev.profile])
            ]
        if dev.enabled:
            unit = 1 if dev.unit is None else dev.unit
            by_unit = units.setdefault(_link_identity(config, dev), {})
            if unit in by_unit and link.driver.startswith("modbus"):
                errors.append(
                    f"{at}.unit: unit {unit} is already used on this link by {by_unit[unit]!r}"
                )
            by_unit.setdefault(unit, dev.id)
    if check_link is not None:
        for name, link in config.links.items():
            errors += [f"links.{name}{m}" for m in check_link(link.driver, link)]
    return errors


def _check_points_used(
    at: str, names: Iterable[str], profile: ProfileConfig, *, write: bool
) -> list[str]:
    errors = []
    for name in names:
        point = profile.points.get(name)
        if point is None:
            errors.append(f"{at}: point {name!r} is not declared in the profile's points")
        elif write and not point.writable:
            errors.append(f"{at}: point {name!r} is not writable (access: {point.access})")
        elif not write and not point.readable:
            errors.append(f"{at}: point {name!r} is write-only (access: {point.access})")
    return errors


def _check_profile(at: str, profile: ProfileConfig, max_steps: int) -> list[str]:
    errors: list[str] = []
    for cname, cmd in profile.commands.items():
        cat = f"{at}.commands.{cname}"
        for pname in cmd.bound_params() - set(cmd.params):
            errors.append(f"{cat}: refers to parameter {{{pname}}} that params does not declare")
        if cmd.write is not None:
            errors += _check_points_used(f"{cat}.write", cmd.write, profile, write=True)
        if cmd.read is not None:
            errors += _check_points_used(f"{cat}.read", cmd.read, profile, write=False)
        if cmd.request is not None and profile.line is None:
            errors.append(f"{cat}.request: the profile needs a line: section for requests")
        if cmd.steps is not None and len(cmd.steps) > max_steps:
            errors.append(f"{cat}.steps: {len(cmd.steps)} steps is above max_steps {max_steps}")
        for j, step in enumerate(cmd.steps or ()):
            sat = f"{cat}.steps[{j}]"
            if step.write is not None:
                errors += _check_points_used(f"{sat}.write", step.write, profile, write=True)
            if step.read is not None:
                errors += _check_points_used(f"{sat}.read", step.read, profile, write=False)
            if step.command is not None:
                target = profile.commands.get(step.command)
                if target is None:
                    errors.append(f"{sat}.command: unknown command {step.command!r}")
                elif target.steps is not None:
                    errors.append(f"{sat}.command: {step.command!r} has steps itself (no nesting)")
    if profile.poll is not None:
        errors += _check_points_used(f"{at}.poll.points", profile.poll.points, profile, write=False)
    return errors
