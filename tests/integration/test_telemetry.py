"""The telemetry collector over real pymodbus servers, an RTU pty bus and a real Gateway.

Each test asserts a rule of config.md ("Telemetry") or protocol.md (the ``telemetry``
message): fixed rate, split reads after an exception, offline without stale values and back
with a snapshot, the Gateway down while values change, commands first on a slow bus, and a
write read back at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from pymodbus.framer import FramerType

from edge_proxy.config import Config
from edge_proxy.ops.daemon import Daemon
from tests.builders import command, make_config
from tests.integration.faults.parts import FaultProxy, poll_until
from tests.integration.modbus_servers import ModbusServer, SerialRelay
from tests.integration.support import Gateway

EdgeFactory = Callable[[Config], Awaitable[Daemon]]

POINTS: dict[str, Any] = {
    "a": {"table": "holding", "address": 10},
    "b": {"table": "holding", "address": 11, "deadband": 5},
    "c": {"table": "holding", "address": 12, "access": "rw", "min": 0, "max": 1000},
    "edge": {"table": "holding", "address": 299},
    "beyond": {"table": "holding", "address": 300},  # the servers' map ends at 299
}


def when(msg: dict[str, Any]) -> float:
    """sampledAt as epoch seconds."""
    return datetime.fromisoformat(msg["sampledAt"].replace("Z", "+00:00")).timestamp()


def tree(
    gateway: Gateway,
    links: dict[str, Any],
    devices: list[dict[str, Any]],
    groups: list[dict[str, Any]],
    points: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "edge": {"id": "edge-001"},
        "gateway": {
            "url": gateway.url,
            "heartbeat_interval": "30s",
            "reconnect": {"initial": "50ms", "max": "200ms", "jitter": 0.1},
        },
        "links": links,
        "profiles": {"p": {"points": points or POINTS, "telemetry": groups}},
        "devices": [{"type": "meter", "profile": "p", **d} for d in devices],
        "control": {"enabled": False},
    }


def tcp_link(port: int, **extra: Any) -> dict[str, Any]:
    return {"driver": "modbus-tcp", "host": "127.0.0.1", "port": port, "timeout": "300ms", **extra}


def telemetry_of(gateway: Gateway, dev: str) -> list[dict[str, Any]]:
    return [f for f in gateway.frames if f["type"] == "telemetry" and f["deviceId"] == dev]


@pytest.fixture
async def server() -> AsyncIterator[ModbusServer]:
    srv = ModbusServer((1,))
    await srv.start()
    yield srv
    await srv.stop()


async def test_cycles_keep_a_fixed_rate_within_5_percent_over_10_s(
    gateway: Gateway, edge_factory: EdgeFactory, server: ModbusServer
) -> None:
    groups = [{"name": "fast", "interval": "250ms", "points": ["a", "b"], "report": "always"}]
    daemon = await edge_factory(
        make_config(
            tree(gateway, {"m": tcp_link(server.port)}, [{"id": "m1", "link": "m"}], groups)
        )
    )
    await gateway.wait(lambda f: f["type"] == "telemetry", timeout=5)
    start = time.monotonic()
    await poll_until(lambda: time.monotonic() - start >= 10.0, 12, "10 s of polling", 0.25)
    msgs = telemetry_of(gateway, "m1")
    times = [when(m) for m in msgs]
    spacing = (times[-1] - times[0]) / (len(times) - 1)
    assert abs(spacing - 0.25) <= 0.25 * 0.05, spacing
    assert [m["seq"] for m in msgs] == list(range(1, len(msgs) + 1))
    assert msgs[0]["snapshot"] is True and msgs[0]["group"] == "fast"
    # fixed times, not "interval after the last one": no drift accumulates
    assert statistics.pstdev(b - a for a, b in itertools.pairwise(times)) < 0.05
    await gateway.send({"type": "QUERY", "requestRef": "q", "query": "device", "deviceId": "m1"})
    (group,) = (await gateway.terminal("q"))["result"]["device"]["telemetry"]
    assert group["skipped"] == 0 and group["cycles"] >= 40
    assert daemon.telemetry.counters()["failures"] == 0


async def test_changes_only_beyond_the_deadband_and_a_refused_point_is_bad(
    gateway: Gateway, edge_factory: EdgeFactory, server: ModbusServer
) -> None:
    groups = [{"interval": "100ms", "points": ["a", "b", "edge", "beyond"]}]
    links = {"m": tcp_link(server.port)}  # "edge" and "beyond" are one merged read: 299..300
    await edge_factory(make_config(tree(gateway, links, [{"id": "m1", "link": "m"}], groups)))
    first = (await gateway.wait(lambda f: f["type"] == "telemetry", timeout=5))[0]
    # exception 2 for the merged read: split, the refused point is bad, the rest reported
    assert first["snapshot"] is True
    assert first["values"] == {"a": 0, "b": 0, "edge": 0}
    assert first["quality"] == {"beyond": "bad"}
    await server.set(1, "holding", 11, [3])  # within b's deadband of 5: not reported
    await server.set(1, "holding", 10, [7])
    changed = await gateway.wait(lambda f: f["type"] == "telemetry" and f["seq"] == 2, timeout=5)
    assert changed[0]["values"] == {"a": 7} and "quality" not in changed[0]
    await server.set(1, "holding", 11, [6])  # 6 - 0 > 5: reported, against the last REPORTED
    drift = await gateway.wait(lambda f: f["type"] == "telemetry" and f["seq"] == 3, timeout=5)
    assert drift[0]["values"] == {"b": 6}
    # the split is remembered: no more merged reads that reach address 300
    before = len(server.requests)
    await poll_until(lambda: len(server.requests) >= before + 12, 5, "more cycles")
    later = server.requests[before:]
    assert not [r for r in later if r.address <= 300 < r.address + r.count and r.count > 1]
    # a command's multi-point read gets the same split: readable points, refused in errors
    await gateway.send(command("r", "m1", op="read", params={"points": ["a", "beyond"]}))
    term = await gateway.terminal("r")
    assert term["status"] == "partial"
    assert term["result"]["values"] == {"a": 7}
    assert term["result"]["errors"]["beyond"]["code"] == "DEVICE_EXCEPTION"


async def test_a_black_holed_device_goes_offline_once_and_comes_back_with_a_snapshot(
    gateway: Gateway, edge_factory: EdgeFactory, server: ModbusServer
) -> None:
    proxy = FaultProxy(("127.0.0.1", server.port))
    await proxy.start()
    try:
        groups = [{"interval": "100ms", "points": ["a"], "report": "always"}]
        link = tcp_link(proxy.port, offline_after=2, reconnect={"initial": "100ms", "max": "300ms"})
        await edge_factory(
            make_config(tree(gateway, {"m": link}, [{"id": "m1", "link": "m"}], groups))
        )
        await gateway.wait(lambda f: f["type"] == "telemetry", timeout=5, count=3)
        proxy.set_mode("blackhole")
        (gone,) = await gateway.wait(
            lambda f: f["type"] == "device_status" and f["status"] == "offline", timeout=10
        )
        at_offline = len(gateway.frames)
        await asyncio.sleep(1.0)  # a second offline: what must NOT be sent is being tested
        during = [f for f in gateway.frames[at_offline:] if f["type"] == "telemetry"]
        assert during == [], "stale telemetry from an offline device"
        await server.set(1, "holding", 10, [42])
        proxy.set_mode("pass")
        await proxy.close_all()
        await gateway.wait(
            lambda f: f["type"] == "device_status" and f["status"] == "online", timeout=10, count=2
        )
        back = await gateway.wait(
            lambda f: f["type"] == "telemetry" and f["values"].get("a") == 42, timeout=10
        )
        assert back[0]["snapshot"] is True
        offline = [f for f in gateway.frames if f.get("status") == "offline"]
        assert len(offline) == 1, offline
        assert when(back[0]) > when(telemetry_of(gateway, "m1")[0])
        del gone
    finally:
        await proxy.stop()


async def test_gateway_down_then_one_snapshot_per_device_with_the_old_sample_time(
    edge_factory: EdgeFactory,
) -> None:
    gw = Gateway()
    await gw.start()
    port = gw.port
    server = ModbusServer((1, 2))
    await server.start()
    try:
        groups = [{"interval": "100ms", "points": ["a", "b"]}]
        devices = [{"id": "m1", "link": "m", "unit": 1}, {"id": "m2", "link": "m", "unit": 2}]
        await edge_factory(make_config(tree(gw, {"m": tcp_link(server.port)}, devices, groups)))
        await gw.wait(lambda f: f["type"] == "telemetry", timeout=5, count=2)
        await gw.stop()
        for value in (1, 2, 3):  # values change while the Gateway is down
            for unit in (1, 2):
                await server.set(unit, "holding", 10, [value])
            await asyncio.sleep(0.3)
        changed_at = time.time()
        await asyncio.sleep(4.0)  # the Gateway stays down for 5 s in all
        gw.port = port
        await gw.start()
        await gw.wait(lambda f: f["type"] == "REGISTER", timeout=10, count=2)
        reconnect_at = time.time()  # just after the edge's REGISTER arrived
        snaps = await gw.wait(
            lambda f: f["type"] == "telemetry" and gw.frames.index(f) > 0, timeout=5, count=2
        )
        second = gw.frame_conn[
            gw.frames.index(next(f for f in gw.frames[1:] if f["type"] == "REGISTER"))
        ]
        before = {
            f["messageId"] for f, c in zip(gw.frames, gw.frame_conn, strict=True) if c < second
        }
        after = [  # new messages: a resend of one unconfirmed before the outage keeps its id
            f
            for f, conn in zip(gw.frames, gw.frame_conn, strict=True)
            if conn == second and f["type"] == "telemetry" and f["messageId"] not in before
        ]
        per_device = {d: [f for f in after if f["deviceId"] == d] for d in ("m1", "m2")}
        for dev, msgs in per_device.items():
            assert len(msgs) == 1, (dev, msgs)  # one snapshot, and nothing changed since
            snap = msgs[0]
            assert snap["snapshot"] is True and snap["values"] == {"a": 3, "b": 0}, dev
            # the sample time is when the device answered, before the Gateway was back
            assert when(snap) < reconnect_at, dev
            assert when(snap) >= changed_at - 0.5, dev
        del snaps
    finally:
        await gw.stop()
        await server.stop()


async def test_commands_on_a_9600_baud_rtu_bus_wait_at_most_one_poll_transaction(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    relay = SerialRelay(baud=9600)
    server = ModbusServer((1, 2), framer=FramerType.RTU, serial_port=relay.server_path)
    await server.start()
    try:
        link = {
            "driver": "modbus-rtu",
            "port": relay.client_path,
            "baudrate": 9600,
            "timeout": "1s",
        }
        points = {f"r{i}": {"table": "holding", "address": i} for i in range(20)}
        groups = [{"interval": "50ms", "points": "*", "report": "always"}]  # always busy
        devices = [{"id": "u1", "link": "bus", "unit": 1}, {"id": "u2", "link": "bus", "unit": 2}]
        await edge_factory(make_config(tree(gateway, {"bus": link}, devices, groups, points)))
        await gateway.wait(lambda f: f["type"] == "telemetry", timeout=10, count=4)
        latencies = []
        for i in range(10):
            ref = f"cmd-{i}"
            sent = time.monotonic()
            await gateway.send(command(ref, "u1", op="read", params={"points": ["r0"]}))
            assert (await gateway.terminal(ref, timeout=10))["status"] == "completed"
            latencies.append(time.monotonic() - sent)
        # one poll transaction: 8 request bytes and 45 reply bytes at 9600 baud, plus gaps
        frames = relay.frames
        poll_tx = max(
            b.end - a.start
            for a, b in itertools.pairwise(frames)
            if a.direction == "request" and b.direction == "reply" and len(b.data) > 40
        )
        own_tx = 8 * 10 / 9600 + 7 * 10 / 9600
        assert max(latencies) <= poll_tx + own_tx + 0.15, (latencies, poll_tx)
    finally:
        await server.stop()
        relay.close()


async def test_a_write_is_read_back_at_once_with_a_10_s_interval(
    gateway: Gateway, edge_factory: EdgeFactory, server: ModbusServer
) -> None:
    groups = [{"interval": "10s", "points": ["a", "c"]}]
    await edge_factory(
        make_config(
            tree(gateway, {"m": tcp_link(server.port)}, [{"id": "m1", "link": "m"}], groups)
        )
    )
    await gateway.wait(lambda f: f["type"] == "telemetry", timeout=15)
    sent = time.monotonic()
    await gateway.send(command("w", "m1", op="write", params={"values": {"c": 5}}))
    assert (await gateway.terminal("w"))["status"] == "completed"
    back = await gateway.wait(
        lambda f: f["type"] == "telemetry" and f["values"].get("c") == 5, timeout=3
    )
    assert time.monotonic() - sent < 1.0
    assert back[0]["snapshot"] is False
    await gateway.send({"type": "QUERY", "requestRef": "v", "query": "values", "deviceId": "m1"})
    cache = (await gateway.terminal("v"))["result"]
    assert cache["values"] == {"a": 0, "c": 5}
    assert cache["quality"] == {"a": "good", "c": "good"}
    assert set(cache["sampledAt"]) == {"a", "c"}


async def test_metrics_count_cycles_values_and_cycle_times_per_group(
    gateway: Gateway, edge_factory: EdgeFactory, server: ModbusServer
) -> None:
    from tests.integration.test_operations import aget, metric

    groups = [
        {"name": "fast", "interval": "100ms", "points": ["a", "b"]},
        {"name": "slow", "interval": "300ms", "points": ["edge"], "report": "always"},
    ]
    config = tree(gateway, {"m": tcp_link(server.port)}, [{"id": "m1", "link": "m"}], groups)
    config["metrics"] = {"listen": "127.0.0.1:0"}
    daemon = await edge_factory(make_config(config))
    await gateway.wait(lambda f: f["type"] == "telemetry" and f["group"] == "slow", count=3)
    _, text = await aget(f"http://127.0.0.1:{daemon.metrics_port}/metrics")
    fast_cycles = metric(text, "edge_telemetry_cycles_total", group="fast")
    assert fast_cycles >= 5
    assert metric(text, "edge_telemetry_points_read_total", group="fast") >= 2 * fast_cycles - 2
    # values that did not change were read and held back by the change rule
    assert metric(text, "edge_telemetry_suppressed_total", group="fast") > 0
    assert metric(text, "edge_telemetry_reported_total", group="slow") >= 3
    assert metric(text, "edge_telemetry_skipped_total", group="fast") == 0
    assert metric(text, "edge_telemetry_cycle_seconds_count", group="slow") >= 3
    assert "edge_telemetry_dropped_total" in text


async def test_a_batch_read_keeps_each_targets_readable_points_and_names_the_refused_ones(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    srv = ModbusServer((1, 2))
    await srv.start()
    try:
        links = {"m": tcp_link(srv.port)}
        devices = [{"id": "m1", "link": "m", "unit": 1}, {"id": "m2", "link": "m", "unit": 2}]
        groups = [{"interval": "10s", "points": ["a"]}]
        await edge_factory(make_config(tree(gateway, links, devices, groups)))
        await gateway.wait(lambda f: f["type"] == "telemetry", timeout=5)
        await srv.set(1, "holding", 10, [4])
        await srv.set(2, "holding", 10, [5])
        params = {"targets": "m1,m2", "points": ["a", "beyond"]}
        await gateway.send(command("b", "m1", op="read", params=params, ctype="BATCH"))
        term = await gateway.terminal("b")
        assert term["status"] == "partial", term
        assert term["result"]["summary"] == {"total": 2, "succeeded": 0, "failed": 0, "partial": 2}
        results = term["result"]["results"]
        for dev, value in (("m1", 4), ("m2", 5)):
            assert results[dev]["status"] == "partial", results
            assert results[dev]["result"]["values"] == {"a": value}
            assert results[dev]["result"]["errors"]["beyond"]["code"] == "DEVICE_EXCEPTION"
    finally:
        await srv.stop()


async def test_a_cycle_larger_than_max_frame_is_sent_in_parts_each_a_message_of_its_own(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    names = [f"a_rather_long_point_name_{i:03d}" for i in range(120)]
    points = {n: {"table": "holding", "address": i} for i, n in enumerate(names)}
    config = tree(
        gateway,
        {"s": {"driver": "simulated", "health_interval": "1h"}},
        [{"id": "big", "link": "s"}],
        [{"interval": "10s", "points": "*"}],
        points,
    )
    config["gateway"]["max_frame"] = 1024
    await edge_factory(make_config(config))
    await poll_until(
        lambda: sum(len(m["values"]) for m in telemetry_of(gateway, "big")) >= 120, 5, "a cycle"
    )
    parts = telemetry_of(gateway, "big")
    assert len(parts) >= 4
    assert [m["seq"] for m in parts] == list(range(1, len(parts) + 1))
    assert len({m["messageId"] for m in parts}) == len(parts)
    assert all(len(json.dumps(m, separators=(",", ":"))) <= 1024 for m in parts)
    assert all(m["snapshot"] is True and m["sampledAt"] == parts[0]["sampledAt"] for m in parts)
    got: dict[str, Any] = {}
    for m in parts:
        assert not got.keys() & m["values"].keys()
        got.update(m["values"])
    assert sorted(got) == sorted(names)
