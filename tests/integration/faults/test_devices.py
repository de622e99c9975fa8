"""Misbehaving devices next to a healthy one, each on its own link.

design.md: a dead device must never stall its neighbours beyond its own timeout. protocol.md:
a device that answers with an exception is alive (``DEVICE_EXCEPTION`` never counts toward
``offline_after``); guarantee 6: no bytes from a device can stop the daemon or another device's
work.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from tests.builders import command
from tests.integration.faults.conftest import EdgeFactory
from tests.integration.faults.edge import (
    add_device,
    all_answered,
    barrier,
    edge_tree,
    write_config,
)
from tests.integration.faults.parts import (
    ModbusExceptionDevice,
    RandomBytesPty,
    SilentTcpDevice,
    poll_until,
)
from tests.integration.modbus_servers import ModbusServer
from tests.integration.support import Gateway

pytestmark = pytest.mark.faults

LATENCY_SLACK = 0.5  # seconds a healthy neighbour's command may take beyond its normal time
LOAD_SAMPLES = 25  # one every 100 ms: the faults have 2.5 s to get in the way
RANDOM_UNIT = 7
FAULTY = ("silent", "exceptions", "noise")


def _write(ref: str, device: str, value: int) -> dict[str, Any]:
    return command(ref, device, op="write", params={"values": {"brightness": value}})


def _states(frames: list[dict[str, Any]], device: str) -> list[str]:
    return [
        f["status"]
        for f in frames
        if f.get("type") == "device_status" and f.get("deviceId") == device
    ]


async def _timed(gw: Gateway, ref: str, frame: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    await gw.send(frame)
    term = await gw.terminal(ref, timeout=10)
    return time.monotonic() - started, term


async def test_faulty_devices_never_slow_a_healthy_neighbour(
    gw: Gateway, edges: EdgeFactory, tmp_path: Path
) -> None:
    silent = SilentTcpDevice()
    refusing = ModbusExceptionDevice(code=2)
    noise = RandomBytesPty(unit=RANDOM_UNIT)
    healthy = ModbusServer((1,))
    try:
        for part in (silent, refusing, healthy):
            await part.start()
        fast = {"timeout": "300ms", "health_interval": "1s"}
        backoff = {"reconnect": {"initial": "100ms", "max": "500ms", "jitter": 0.1}}
        tree = edge_tree(gw.url)
        add_device(
            tree,
            "healthy",
            "plc",
            {"driver": "modbus-tcp", "host": "127.0.0.1", "port": healthy.port, "timeout": "1s"},
        )
        add_device(
            tree,
            "silent",
            "dead",
            {"driver": "modbus-tcp", "host": "127.0.0.1", "port": silent.port, **fast, **backoff},
        )
        add_device(
            tree,
            "exceptions",
            "refusing",
            {"driver": "modbus-tcp", "host": "127.0.0.1", "port": refusing.port, **fast},
        )
        add_device(
            tree,
            "noise",
            "rs485",
            {"driver": "modbus-rtu", "port": noise.path, "baudrate": 19200, **fast, **backoff},
            unit=RANDOM_UNIT,
        )
        edge = await edges(write_config(tree, tmp_path / "edge.yaml"))
        await gw.wait(lambda f: f["type"] == "REGISTER", timeout=20)

        _, first = await _timed(gw, "warm", _write("warm", "healthy", 1))
        assert first["status"] == "completed", first
        baseline = [
            (await _timed(gw, f"base-{i}", _write(f"base-{i}", "healthy", i)))[0] for i in range(10)
        ]

        # every faulty device gets a command every 100 ms while the neighbour is measured
        stop = asyncio.Event()
        faulty_refs: dict[str, list[str]] = {dev: [] for dev in FAULTY}

        async def hammer(device: str) -> None:
            n = 0
            while not stop.is_set():
                ref = f"{device}-{n}"
                faulty_refs[device].append(ref)
                await gw.send(_write(ref, device, n % 100))
                n += 1
                await asyncio.sleep(0.1)  # paces the load

        loads = [asyncio.create_task(hammer(dev)) for dev in FAULTY]
        try:
            under_load: list[float] = []
            for i in range(LOAD_SAMPLES):
                ref = f"load-{i}"
                elapsed, term = await _timed(gw, ref, _write(ref, "healthy", i))
                assert term["status"] == "completed", term
                under_load.append(elapsed)
                await asyncio.sleep(0.1)  # paces the measurement over the load window
        finally:
            stop.set()
            await asyncio.gather(*loads)
        sent = [ref for refs in faulty_refs.values() for ref in refs]
        await poll_until(all_answered(gw, sent), 15, "a terminal for every faulty command")
        await poll_until(
            lambda: "offline" in _states(gw.frames, "silent"), 10, "the silent device offline"
        )
        await gw.send({"type": "QUERY", "requestRef": "states", "query": "devices"})
        states = {
            d["deviceId"]: d["status"] for d in (await gw.terminal("states"))["result"]["devices"]
        }
        await barrier(gw, "probe")
        assert edge.running
    finally:
        noise.close()
        for part in (silent, refusing, healthy):
            await part.stop()

    normal = statistics.median(baseline)
    p90 = sorted(under_load)[int(len(under_load) * 0.9) - 1]
    print(f"healthy latency: normal {normal * 1000:.1f} ms, p90 under load {p90 * 1000:.1f} ms")
    assert p90 < normal + LATENCY_SLACK, (baseline, under_load)

    def outcome(ref: str) -> tuple[str, str | None]:
        term = next(
            f
            for f in gw.frames
            if f.get("requestRef") == ref and "status" in f and f.get("type") == "command_response"
        )
        return term["status"], (term.get("error") or {}).get("code")

    results = {dev: [outcome(ref) for ref in refs] for dev, refs in faulty_refs.items()}
    # never answers: its commands fail, and it goes (and stays) offline
    assert states["silent"] == "offline"
    assert all(s == "failed" for s, _ in results["silent"]), results["silent"]
    assert {c for _, c in results["silent"]} <= {"DEVICE_TIMEOUT", "DEVICE_OFFLINE"}
    # answers, with exceptions only: alive; each command fails with the device's exception
    assert states["exceptions"] == "online", (states, _states(gw.frames, "exceptions"))
    assert "offline" not in _states(gw.frames, "exceptions")
    assert refusing.requests >= len(results["exceptions"])
    assert results["exceptions"] == [("failed", "DEVICE_EXCEPTION")] * len(results["exceptions"])
    # answers noise: its own commands fail, nothing else does
    assert noise.requests > 0
    assert all(s == "failed" for s, _ in results["noise"]), results["noise"]
    assert states["healthy"] == "online"
