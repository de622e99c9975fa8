"""The outbox's drop policy: what goes first when it is full, by count and by bytes."""

from __future__ import annotations

import json
from typing import Any

from edge_proxy.runtime.outbox import Outbox


def drain(box: Outbox) -> list[dict[str, Any]]:
    """Take every message as the sender would, confirming each."""
    out = []
    while (entry := box.take()) is not None:
        box.written(entry)
        box.confirm(entry.seq)
        out.append(json.loads(entry.text))
    return out


def test_outbox_drop_policy() -> None:
    box = Outbox(max_messages=6, max_bytes=1024**2)
    term = [
        {"type": "command_response", "requestRef": f"t{i}", "status": "completed"} for i in range(3)
    ]
    prog = [{"type": "progress_update", "requestRef": f"p{i}", "progress": i} for i in range(2)]
    tele = [{"type": "telemetry", "deviceId": "d", "values": {"v": i}} for i in range(2)]
    for msg in (tele[0], term[0], prog[0], tele[1], term[1], prog[1]):
        box.put(msg)
    assert box.count == 6
    box.put(term[2])  # full: the oldest telemetry goes
    assert box.dropped == {"telemetry": 1}
    box.put({"type": "device_status", "deviceId": "d"})  # the other telemetry
    box.put({"type": "ack", "requestRef": "x"})  # then progress
    assert box.dropped == {"telemetry": 2, "progress_update": 1}
    order = drain(box)
    types = [m["type"] for m in order]
    assert types == [
        "command_response",
        "command_response",
        "progress_update",
        "command_response",
        "device_status",
        "ack",
    ]
    assert [m["requestRef"] for m in order if m["type"] == "command_response"] == ["t0", "t1", "t2"]


def test_outbox_drops_terminal_last_and_counts_by_bytes() -> None:
    box = Outbox(max_messages=100, max_bytes=2048)
    big = "x" * 600
    for i in range(3):
        box.put({"type": "command_response", "requestRef": f"t{i}", "result": big})
    box.put({"type": "telemetry", "deviceId": "d", "values": {"v": big}})
    # a telemetry message never evicts a terminal one: it is dropped itself
    assert box.dropped == {"telemetry": 1}
    box.put({"type": "command_response", "requestRef": "t3", "result": big})
    assert box.dropped == {"telemetry": 1, "command_response": 1}
    assert box.bytes <= 2048
    assert drain(box)[0]["requestRef"] == "t1"
