"""Values shared by every config section: durations, sizes, ``${VAR}`` and the model base.

A duration is a number of seconds or a string with a unit (``250ms``, ``5s``, ``2m``, ``1h``);
a size is a number of bytes or a string with a unit (``64KiB``, ``16MiB``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

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


#: JSON Schema pattern of a duration string.
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"
#: JSON Schema pattern of a size string.
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|M|G)?\s*$"
#: JSON Schema pattern of a duration string that is not zero.
POSITIVE_DURATION_PATTERN = r"^\s*(?=[^1-9]*[1-9])\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"


def _number_or_unit(number: dict[str, object], pattern: str, description: str) -> WithJsonSchema:
    """The JSON Schema of a value written as a number or as a string with a unit."""
    return WithJsonSchema(
        {
            "anyOf": [number, {"type": "string", "pattern": pattern}],
            "description": description,
        }
    )


#: Seconds as a float, written as a number or with a unit (``250ms``, ``5s``, ``2m``, ``1h``).
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    _number_or_unit(
        {"type": "number", "minimum": 0},
        DURATION_PATTERN,
        "seconds, or a number with a unit: 250ms, 5s, 2m, 1h",
    ),
]
#: A Duration above 0, for delays that 0 would turn into a busy loop (reconnect backoff).
PositiveDuration = Annotated[
    Duration,
    Field(gt=0),
    _number_or_unit(
        {"type": "number", "exclusiveMinimum": 0},
        POSITIVE_DURATION_PATTERN,
        "seconds above 0, or a number with a unit: 250ms, 5s, 2m, 1h",
    ),
]
#: Bytes as an int, written as a number or with a unit (``64KiB``, ``16MiB``).
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    _number_or_unit(
        {"type": "integer", "minimum": 0},
        SIZE_PATTERN,
        "bytes, or a number with a unit: 64KiB, 16MiB",
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
        return {k: interpolate_env(v, env, join_path(path, k), errs) for k, v in tree.items()}
    if isinstance(tree, list):
        return [interpolate_env(v, env, f"{path}[{i}]", errs) for i, v in enumerate(tree)]
    return tree


def join_path(path: str, key: object) -> str:
    """The path of ``key`` inside ``path``, as errors name it: ``gateway.tls``, ``devices[2]``."""
    return f"{path}.{key}" if path else str(key)


class _Model(BaseModel):
    """Base of every config section: unknown keys are errors, loaded objects are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
