"""Config trees and Gateway frames for tests: pure builders, no I/O."""

from __future__ import annotations

import copy
from typing import Any

from edge_proxy.config import Config, validate_tree
from edge_proxy.drivers import registry

PILLAR_PROFILE: dict[str, Any] = {
    "points": {
        "door_state": {"table": "holding", "address": 100, "type": "uint16", "access": "r"},
        "brightness": {"table": "holding", "address": 101, "access": "rw", "min": 0, "max": 100},
        "temperature": {"table": "input", "address": 0, "type": "int16", "scale": 0.1},
        "relay": {"table": "coil", "address": 0, "access": "rw"},
        "door_cmd": {"table": "holding", "address": 103, "access": "w"},
        "mode": {"table": "holding", "address": 104, "access": "rw"},
        "status_word": {"table": "holding", "address": 105},
    },
    "commands": {
        "SET_BRIGHTNESS": {
            "params": {"brightness": {"type": "int", "min": 0, "max": 100, "required": True}},
            "write": {"brightness": "{brightness}"},
        },
        "OPEN_DOOR": {"write": {"door_cmd": 1}},
        "STATUS": {"read": ["door_state", "brightness", "temperature"]},
        "COMMISSION": {
            "steps": [{"write": {"mode": 2}}, {"delay": "50ms"}, {"read": ["status_word"]}]
        },
    },
}


def line_profile(health: dict[str, str]) -> dict[str, Any]:
    """The pillar-ascii text profile the line test devices answer, with its ``health`` request."""
    return {
        "line": {"terminator": "\r\n"},
        "commands": {
            "SET_BRIGHTNESS": {
                "params": {"brightness": {"type": "int", "min": 0, "max": 100, "required": True}},
                "request": "BRT {brightness:03d}",
                "expect": "^OK$",
            },
            "STATUS": {
                "request": "STS?",
                "expect": "^STS (?P<door_state>\\d) (?P<brightness>\\d+)$",
            },
            "health": health,
        },
    }


#: An address the test Modbus servers (tests/integration/modbus_servers.py) leave undefined.
UNDEFINED_ADDRESS = 1000

# Every point type, laid out without gaps so that one read per table covers them all.
TYPES_PROFILE: dict[str, Any] = {
    "points": {
        "i16": {"table": "holding", "address": 0, "type": "int16", "access": "rw"},
        "u16": {"table": "holding", "address": 1, "type": "uint16", "access": "rw"},
        "i32": {"table": "holding", "address": 2, "type": "int32", "access": "rw"},
        "u32": {
            "table": "holding",
            "address": 4,
            "type": "uint32",
            "word_order": "little",
            "access": "rw",
        },
        "i64": {"table": "holding", "address": 6, "type": "int64", "access": "rw"},
        "u64": {
            "table": "holding",
            "address": 10,
            "type": "uint64",
            "byte_order": "little",
            "access": "rw",
        },
        "f32": {"table": "holding", "address": 14, "type": "float32", "access": "rw"},
        "f64": {
            "table": "holding",
            "address": 16,
            "type": "float64",
            "byte_order": "little",
            "word_order": "little",
            "access": "rw",
        },
        "text": {"table": "holding", "address": 20, "type": "string", "length": 4, "access": "rw"},
        "scaled": {
            "table": "holding",
            "address": 24,
            "type": "int16",
            "scale": 0.1,
            "offset": -5,
            "access": "rw",
        },
        "flag": {"table": "holding", "address": 25, "bit": 3, "access": "rw"},
        "relay": {"table": "coil", "address": 3, "access": "rw"},
        "door": {"table": "discrete_input", "address": 5},
        "temp": {"table": "input", "address": 2, "type": "int16", "scale": 0.5},
        "missing": {"table": "holding", "address": UNDEFINED_ADDRESS},
    },
    "commands": {},
}


def base_tree(url: str = "ws://127.0.0.1:9", **over: Any) -> dict[str, Any]:
    """A valid config tree with two simulated pillars on one link and one slow one."""
    tree: dict[str, Any] = {
        "edge": {"id": "edge-001", "name": "test edge"},
        "gateway": {
            "url": url,
            "heartbeat_interval": "30s",
            "reconnect": {"initial": "50ms", "max": "200ms", "jitter": 0.1},
        },
        "links": {
            "sim": {"driver": "simulated", "health_interval": "30s"},
            "slow": {"driver": "simulated", "latency": "300ms"},
        },
        "profiles": {"pillar": copy.deepcopy(PILLAR_PROFILE)},
        "devices": [
            {"id": "pillar-001", "type": "pillar", "profile": "pillar", "link": "sim", "unit": 1},
            {"id": "pillar-002", "type": "pillar", "profile": "pillar", "link": "sim", "unit": 2},
            {"id": "pillar-slow", "type": "pillar", "profile": "pillar", "link": "slow"},
        ],
        # tests that want the control socket give it a path of their own
        "control": {"enabled": False},
    }
    for key, value in over.items():
        tree[key] = value
    return tree


def make_config(tree: dict[str, Any]) -> Config:
    """Validate a tree with the real driver registry."""
    return validate_tree(tree, registry.check_link)


def is_terminal(frame: dict[str, Any]) -> bool:
    """command_response or error."""
    return frame.get("type") in ("command_response", "error")


def command(
    ref: str,
    device: str = "pillar-001",
    code: str | None = None,
    *,
    op: str | None = None,
    params: dict[str, Any] | None = None,
    ctype: str = "SIMPLE",
    edge: str = "edge-001",
    **extra: Any,
) -> dict[str, Any]:
    """A COMMAND frame."""
    cmd: dict[str, Any] = {"commandType": ctype, "parameters": params or {}}
    if code is not None:
        cmd["commandCode"] = code
    if op is not None:
        cmd["operationType"] = op
    msg: dict[str, Any] = {
        "type": "COMMAND",
        "requestRef": ref,
        "targetClientId": f"{edge}:{device}",
        "command": cmd,
        "timestamp": "2024-01-20T10:00:00.000Z",
        "version": "1.0",
    }
    msg.update(extra)
    return msg
