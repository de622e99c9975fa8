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


# keys the runtime attaches to a message on its way to the outbox; never sent
PRIVATE_KEYS = frozenset({"_text", "_ticket", "_spool_id", "_targets", "_later"})


def encode(msg: dict[str, Any]) -> str:
    """Serialise an outgoing message compactly (no NaN: they are not JSON)."""
    if not PRIVATE_KEYS.isdisjoint(msg):
        msg = {k: v for k, v in msg.items() if k not in PRIVATE_KEYS}
    try:
        text = json.dumps(
            msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str
        )
    except ValueError:  # NaN or infinity from a device: not JSON, sent as null
        msg = _finite(msg)
        text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, default=str)
    if text.isascii():
        return text
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


def size(msg: dict[str, Any]) -> int:
    """The encoded size of a message in bytes."""
    return text_size(encode(msg))


def text_size(text: str) -> int:
    """The UTF-8 size of encoded text (its length, for the usual ASCII-only message)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def fit_encoded(
    msg: dict[str, Any], max_frame: int
) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """:func:`fit_terminal`, encoding the message once when it fits: (msg, text, full)."""
    text = encode(msg)
    if text_size(text) <= max_frame:
        return msg, text, None
    cut, full = fit_terminal(msg, max_frame)
    return cut, encode(cut), full


def _item_sizes(items: list[Any]) -> list[int]:
    # each item's encoded size plus the comma that separates it from the next
    return [
        len(json.dumps(i, separators=(",", ":"), default=str).encode("utf-8")) + 1 for i in items
    ]


def how_many_fit(base: int, items: list[Any], max_frame: int) -> int:
    """How many of ``items``, in order, fit in a list inside a frame of ``base`` bytes."""
    room = max_frame - base
    n = 0
    for item_size in _item_sizes(items):
        if item_size > room:
            break
        room -= item_size
        n += 1
    return n


def fit_terminal(
    msg: dict[str, Any], max_frame: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A terminal that fits ``max_frame``, and the full ``result.results`` if it had to be cut.

    As protocol.md's guarantee 5 says: ``result.results`` is cut down to the failed targets
    (as many as fit), with ``result.truncated: true`` and ``result.omitted``, the number of
    targets left out. A result without ``results`` that still does not fit is replaced by
    ``{"truncated": true}``.
    """
    if size(msg) <= max_frame:
        return msg, None
    result = msg.get("result")
    full = result.get("results") if isinstance(result, dict) else None
    if not isinstance(result, dict) or not isinstance(full, dict):
        cut = {**msg, "result": {"truncated": True}}
        return cut, None
    failed = [
        (k, v)
        for k, v in full.items()
        if not (isinstance(v, dict) and v.get("status") == "completed")
    ]
    probe = {**msg, "result": {**result, "results": {}, "truncated": True, "omitted": len(full)}}
    keep = how_many_fit(size(probe), [{k: v} for k, v in failed], max_frame)
    kept = dict(failed[:keep])
    cut = {
        **msg,
        "result": {**result, "results": kept, "truncated": True, "omitted": len(full) - keep},
    }
    return cut, full


def fit_list(
    msg: dict[str, Any], path: tuple[str, ...], max_frame: int
) -> tuple[dict[str, Any], int]:
    """``msg`` with the list at ``path`` (e.g. ``("clientInfo", "devices")``) cut to fit.

    Returns the message and how many items it kept (the list is not copied when all fit).
    """
    if size(msg) <= max_frame:
        parent: Any = msg
        for key in path:
            parent = parent[key]
        return msg, len(parent)
    *outer, last = path

    def with_items(items: list[Any]) -> dict[str, Any]:
        out = dict(msg)
        node = out
        for key in outer:
            node[key] = dict(node[key])
            node = node[key]
        node[last] = items
        return out

    node = msg
    for key in outer:
        node = node[key]
    items = list(node[last])
    keep = how_many_fit(size(with_items([])), items, max_frame)
    return with_items(items[:keep]), keep


def split_mapping(msg: dict[str, Any], key: str, max_frame: int) -> list[dict[str, Any]]:
    """``msg`` as several messages whose mapping at ``key`` together holds every item.

    Each part fits ``max_frame`` (an item too large for any frame on its own gets a part of
    its own). A message that fits is returned alone, unchanged.
    """
    if size(msg) <= max_frame:
        return [msg]
    base = size({**msg, key: {}})
    parts: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    room = max_frame - base
    for name, value in msg[key].items():
        item = len(json.dumps({name: value}, separators=(",", ":"), default=str).encode()) - 1
        if current and item > room:
            parts.append({**msg, key: current})
            current, room = {}, max_frame - base
        current[name] = value
        room -= item
    if current:
        parts.append({**msg, key: current})
    return parts
