"""SIMPLE commands end to end, and every rejection code, over a real WebSocket Gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_proxy.config import Config
from edge_proxy.ops.daemon import Daemon
from tests.builders import base_tree, command, is_terminal, make_config
from tests.integration.support import Gateway, edge_cmd

EdgeFactory = Callable[[Config], Awaitable[Daemon]]


def sim_values(daemon: Daemon, device: str) -> dict[str, Any]:
    adapter = daemon.devices[device].adapter
    values: dict[str, Any] = adapter.values  # type: ignore[union-attr]
    return values


async def exactly_one_terminal(gateway: Gateway, ref: str) -> dict[str, Any]:
    term = await gateway.terminal(ref)
    # a later probe frame proves nothing else for ``ref`` was still on its way
    probe = f"probe-after-{ref}"
    await gateway.send({"type": "QUERY", "requestRef": probe, "query": "devices"})
    await gateway.terminal(probe)
    frames = gateway.of(ref)
    assert sum(1 for f in frames if is_terminal(f)) == 1, frames
    return term


async def test_simple_generic_read(gateway: Gateway, edge: Daemon) -> None:
    sim_values(edge, "pillar-001")["brightness"] = 42
    await gateway.send(
        command("r1", op="read", params={"points": ["brightness", "door_state"]}, callback="cb-1")
    )
    term = await exactly_one_terminal(gateway, "r1")
    frames = gateway.of("r1")
    assert frames[0]["type"] == "ack" and frames[0]["status"] == "accepted"
    assert frames[0]["targets"] == ["pillar-001"]
    assert term["type"] == "command_response" and term["status"] == "completed"
    assert term["result"] == {"values": {"brightness": 42, "door_state": 0}}
    assert term["callback"] == "cb-1"
    assert isinstance(term["durationMs"], int) and term["durationMs"] >= 0
    assert term["clientId"] == "edge-001" and term["version"] == "1.0"


async def test_simple_generic_write(gateway: Gateway, edge: Daemon) -> None:
    await gateway.send(command("w1", op="write", params={"values": {"brightness": 55}}))
    term = await exactly_one_terminal(gateway, "w1")
    assert term["status"] == "completed"
    assert term["result"] == {"values": {"brightness": 55}}
    assert sim_values(edge, "pillar-001")["brightness"] == 55
    assert "callback" not in term


async def test_profile_commands(gateway: Gateway, edge: Daemon) -> None:
    await gateway.send(
        command("p1", code="SET_BRIGHTNESS", op="execute", params={"brightness": 50})
    )
    assert (await exactly_one_terminal(gateway, "p1"))["result"] == {"values": {"brightness": 50}}
    await gateway.send(command("p2", code="STATUS"))
    term = await exactly_one_terminal(gateway, "p2")
    assert term["result"]["values"] == {"door_state": 0, "brightness": 50, "temperature": 0}
    await gateway.send(command("p3", code="OPEN_DOOR"))
    assert (await exactly_one_terminal(gateway, "p3"))["status"] == "completed"
    assert sim_values(edge, "pillar-001")["door_cmd"] == 1


async def test_named_multi_step_command_reports_progress(gateway: Gateway, edge: Daemon) -> None:
    sim_values(edge, "pillar-002")["status_word"] = 7
    await gateway.send(command("c1", "pillar-002", "COMMISSION"))
    term = await exactly_one_terminal(gateway, "c1")
    assert term["status"] == "completed"
    assert [s["status"] for s in term["result"]["steps"]] == ["completed"] * 3
    assert term["result"]["values"] == {"mode": 2, "status_word": 7}
    progress = [f["progress"] for f in gateway.of("c1") if f["type"] == "progress_update"]
    assert progress and progress == sorted(progress) and progress[-1] == 100


async def test_timeout_gets_exactly_one_terminal(gateway: Gateway, edge: Daemon) -> None:
    await gateway.send(
        command("to1", "pillar-slow", op="write", params={"values": {"mode": 9}}, timeout=100)
    )
    term = await exactly_one_terminal(gateway, "to1")
    assert term["status"] == "timeout"
    assert term["durationMs"] >= 100


async def test_command_expiring_in_queue_never_reaches_device(
    gateway: Gateway, edge: Daemon
) -> None:
    await gateway.send(
        command("q1", "pillar-slow", op="write", params={"values": {"mode": 1}}, timeout=5000)
    )
    await gateway.send(
        command("q2", "pillar-slow", op="write", params={"values": {"mode": 2}}, timeout=100)
    )
    t2 = await gateway.terminal("q2")
    assert t2["status"] == "timeout"
    t1 = await gateway.terminal("q1")
    assert t1["status"] == "completed"
    assert sim_values(edge, "pillar-slow")["mode"] == 1


async def test_cancel_queued_and_running(gateway: Gateway, edge: Daemon) -> None:
    await gateway.send(command("k1", "pillar-slow", op="write", params={"values": {"mode": 1}}))
    await gateway.send(command("k2", "pillar-slow", op="write", params={"values": {"mode": 2}}))
    await gateway.wait(lambda f: f.get("requestRef") == "k2" and f["type"] == "ack")
    await gateway.send({"type": "cancel", "requestRef": "k2"})
    await gateway.send({"type": "CANCEL", "requestRef": "unknown-ref"})  # a no-op
    assert (await gateway.terminal("k2"))["status"] == "cancelled"
    assert (await gateway.terminal("k1"))["status"] == "completed"
    assert sim_values(edge, "pillar-slow")["mode"] == 1
    assert not [f for f in gateway.of("unknown-ref")]


async def test_query_devices_and_device(gateway: Gateway, edge: Daemon) -> None:
    await gateway.send({"type": "QUERY", "requestRef": "qd", "query": "devices"})
    term = await gateway.terminal("qd")
    devices = {d["deviceId"]: d for d in term["result"]["devices"]}
    assert set(devices) == {"pillar-001", "pillar-002", "pillar-slow"}
    assert {"status", "lastError", "lastSeen", "counters"} <= set(devices["pillar-001"])
    await gateway.send(
        {"type": "QUERY", "requestRef": "q1", "query": "device", "deviceId": "pillar-002"}
    )
    term = await gateway.terminal("q1")
    assert term["result"]["device"]["deviceId"] == "pillar-002"
    assert "brightness" in term["result"]["device"]["points"]


async def test_duplicate_request_ref_is_not_run_twice(gateway: Gateway, edge: Daemon) -> None:
    msg = command("dup", "pillar-slow", op="write", params={"values": {"mode": 3}})
    await gateway.send(msg)
    await gateway.send(msg)  # while running
    await gateway.wait(
        lambda f: f.get("requestRef") == "dup" and f["type"] == "command_response", count=2
    )
    sim_values(edge, "pillar-slow")["mode"] = 0
    await gateway.send(msg)  # after it finished
    await gateway.wait(
        lambda f: f.get("requestRef") == "dup" and f["type"] == "command_response", count=3
    )
    acks = [f["status"] for f in gateway.of("dup") if f["type"] == "ack"]
    assert acks == ["accepted", "duplicate", "duplicate"]
    assert sim_values(edge, "pillar-slow")["mode"] == 0  # not executed again


# ---------------------------------------------------------------- rejections

REJECTIONS: list[tuple[str, Any, str]] = [
    ("not json", '{"type": "COMMAND", "requestRef": "bad-1", ', "MALFORMED_MESSAGE"),
    ("not an object", "[1, 2, 3]", "MALFORMED_MESSAGE"),
    (
        "too large",
        json.dumps({**command("big-1", op="read"), "pad": "x" * (1024**2 + 10)}),
        "MALFORMED_MESSAGE",
    ),
    ("no command object", {**command("inv-1"), "command": "read"}, "INVALID_COMMAND"),
    ("bad priority", {**command("inv-2", op="read"), "priority": "asap"}, "INVALID_COMMAND"),
    ("version 2", {**command("ver-1", op="read"), "version": "2.0"}, "UNSUPPORTED_VERSION"),
    ("unknown type", {"type": "REBOOT", "requestRef": "typ-1"}, "UNKNOWN_MESSAGE_TYPE"),
    ("other edge", command("edge-1", op="read", edge="edge-999"), "WRONG_EDGE"),
    ("unknown device", command("dev-1", "pillar-404", op="read"), "UNKNOWN_DEVICE"),
    ("unknown command", command("cmd-1", code="SELF_DESTRUCT"), "UNSUPPORTED_COMMAND"),
    (
        "out of range",
        command("par-1", code="SET_BRIGHTNESS", params={"brightness": 140}),
        "INVALID_PARAMETERS",
    ),
    (
        "misspelt param",
        command("par-2", code="SET_BRIGHTNESS", params={"brightnes": 40}),
        "INVALID_PARAMETERS",
    ),
    ("missing param", command("par-3", code="SET_BRIGHTNESS", params={}), "INVALID_PARAMETERS"),
    (
        "wrong type",
        command("par-4", code="SET_BRIGHTNESS", params={"brightness": "50"}),
        "INVALID_PARAMETERS",
    ),
    (
        "write out of point range",
        command("par-5", op="write", params={"values": {"brightness": 101}}),
        "INVALID_PARAMETERS",
    ),
    (
        "read-only point",
        command("acc-1", op="write", params={"values": {"door_state": 1}}),
        "ACCESS_DENIED",
    ),
    (
        "write-only point",
        command("acc-2", op="read", params={"points": ["door_cmd"]}),
        "ACCESS_DENIED",
    ),
]


@pytest.mark.parametrize(("name", "frame", "code"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
async def test_rejections(gateway: Gateway, edge: Daemon, name: str, frame: Any, code: str) -> None:
    before = dict(sim_values(edge, "pillar-001"))
    await gateway.send(frame if isinstance(frame, str) else json.dumps(frame))
    err = (await gateway.wait(lambda f: f["type"] == "error"))[0]
    assert err["code"] == code, err
    assert err["message"]
    ref = frame["requestRef"] if isinstance(frame, dict) else None
    if name in ("not json", "too large"):
        ref = "bad-1" if name == "not json" else "big-1"
    if ref is not None:
        assert err["requestRef"] == ref
        assert not [f for f in gateway.of(ref) if f["type"] == "ack"]
    assert sim_values(edge, "pillar-001") == before
    # the daemon still works
    await gateway.send(command("after", op="read", params={"points": ["mode"]}))
    assert (await gateway.terminal("after"))["status"] == "completed"


async def test_overloaded(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    tree = base_tree(gateway.url)
    tree["commands"] = {"max_queued_per_link": 2}
    daemon = await edge_factory(make_config(tree))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    for i in range(4):
        await gateway.send(command(f"ov{i}", "pillar-slow", op="read", params={"points": ["mode"]}))
    # the limit counts the command on the wire and the one waiting behind it
    for ref in ("ov0", "ov1"):
        assert (await gateway.terminal(ref))["status"] == "completed"
    for ref in ("ov2", "ov3"):
        term = await gateway.terminal(ref)
        assert term["type"] == "error" and term["code"] == "OVERLOADED"
        assert not [f for f in gateway.of(ref) if f["type"] == "ack"]
    assert all(link.reserved == 0 for link in daemon.links.values())


# ---------------------------------------------------------------- the process


async def test_sigterm_finishes_in_flight_then_closes_1001(
    gateway: Gateway, tmp_path: Path
) -> None:
    tree = base_tree(gateway.url)
    tree["links"]["slow"]["latency"] = "700ms"
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    proc = subprocess.Popen(
        edge_cmd("run", "--config", str(cfg)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER", timeout=20)
        await gateway.send(
            command("inflight", "pillar-slow", op="write", params={"values": {"mode": 4}})
        )
        await gateway.wait(lambda f: f.get("requestRef") == "inflight" and f["type"] == "ack")
        proc.send_signal(signal.SIGTERM)
        term = await gateway.terminal("inflight", timeout=10)
        assert term["status"] == "completed"
        code = await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20)
        assert code == 0
        async with gateway._cond:
            await asyncio.wait_for(gateway._cond.wait_for(lambda: bool(gateway.close_codes)), 5)
        assert gateway.close_codes[0] == 1001
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _out, errs = proc.communicate()
    assert b"Traceback" not in errs


async def test_the_ack_comes_first_when_frames_of_one_command_share_a_turn_of_the_loop(
    gateway: Gateway, edge: Daemon
) -> None:
    """Frames read in one go are handled in one turn of the loop: the ``ack`` still comes
    before the duplicate's ack, before the terminal, before everything else of the command."""
    read = command("burst", "pillar-001", op="read", params={"points": ["brightness"]})
    edge.engine.handle_frame(json.dumps(read))
    edge.engine.handle_frame(json.dumps(read))  # a duplicate in the same turn
    await gateway.wait(
        lambda f: f.get("requestRef") == "burst" and f["type"] == "command_response", count=2
    )
    frames = [(f["type"], f.get("status")) for f in gateway.of("burst")]
    assert frames == [
        ("ack", "accepted"),
        ("ack", "duplicate"),
        ("command_response", "completed"),
        ("command_response", "completed"),
    ], frames

    # a command cancelled in the turn it was accepted in ends at once: its ack goes first
    write = command("gone", "pillar-slow", op="write", params={"values": {"mode": 7}})
    edge.engine.handle_frame(json.dumps(write))
    edge.engine.handle_frame(json.dumps({"type": "CANCEL", "requestRef": "gone"}))
    term = await gateway.terminal("gone")
    assert [f["type"] for f in gateway.of("gone")] == ["ack", term["type"]]
    assert gateway.of("gone")[0]["status"] == "accepted"
    assert term["status"] != "completed"
    assert sim_values(edge, "pillar-slow")["mode"] != 7  # never reached the device
