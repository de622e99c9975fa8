"""Framing of outgoing messages: compact JSON, no NaN, bounded echoes of Gateway input.

Pure code: values in, text out.
"""

from __future__ import annotations

import json
import math
from typing import Any

from edge_proxy.wire.names import TERMINAL_TYPES


def clip(value: Any, limit: int) -> Any:
    """``value`` with every string cut to ``limit`` characters and lists to 64 items."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"... ({len(value)} characters)"
    if isinstance(value, dict):
        return {k: clip(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [clip(v, limit) for v in value[:64]]
    return value


def is_terminal(msg: dict[str, Any]) -> bool:
    """Whether an outgoing message ends its requestRef (command_response or error)."""
    return msg.get("type") in TERMINAL_TYPES and "requestRef" in msg


def encode(msg: dict[str, Any]) -> str:
    """Serialise an outgoing message compactly (no NaN: they are not JSON)."""
    if any(k.startswith("_") for k in msg):
        msg = {k: v for k, v in msg.items() if not k.startswith("_")}
    try:
        text = json.dumps(
            msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
        )
    except ValueError:  # NaN or infinity from a device: not JSON, sent as null
        msg = _finite(msg)
        text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate echoed from Gateway input: escape it
        text = json.dumps(msg, separators=(",", ":"), allow_nan=False, default=str)
    return text


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
