"""``edge-proxy demo``: a development Gateway, simulators and an edge in one process.

It sends a short script of commands, then watches the devices' telemetry for a few seconds:
the snapshots that came while the script ran, then changes live, as the points' ``simulate:``
rules move the simulated values.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from edge_proxy.cli.devgateway import DevGateway, summarize
from edge_proxy.cli.simulate import Simulator
from edge_proxy.config import Config, DeviceConfig
from edge_proxy.ops.daemon import Daemon


def _script(gw: DevGateway, config: Config) -> list[tuple[str, dict[str, Any], str]]:
    """The commands the demo sends: a read, a write, profile commands, an invalid one."""
    edge = config.edge.id
    enabled = [d for d in config.devices if d.enabled]
    with_points = [d for d in enabled if config.profiles[d.profile].points]
    first: DeviceConfig = with_points[0] if with_points else enabled[0]
    profile = config.profiles[first.profile]
    target = f"{edge}:{first.id}"
    script: list[tuple[str, dict[str, Any], str]] = [
        (f"read every readable point of {first.id}", gw.command(target, op="read"), "completed"),
    ]
    writable = next(
        (n for n, p in profile.points.items() if p.writable and p.type not in {"bool", "string"}),
        None,
    )
    if writable is not None:
        point = profile.points[writable]
        value = int(point.max) if point.max is not None else 1
        script.append(
            (
                f"write {writable} = {value} on {first.id}",
                gw.command(target, op="write", params={"values": {writable: value}}),
                "completed",
            )
        )
    for dev in enabled:
        for code, cmd in config.profiles[dev.profile].commands.items():
            if cmd.steps is not None:
                continue
            params = {
                n: int(p.max) if p.max is not None else 1
                for n, p in cmd.params.items()
                if p.required
            }
            script.append(
                (
                    f"profile command {code} on {dev.id}",
                    gw.command(f"{edge}:{dev.id}", code, params=params),
                    "completed",
                )
            )
            break
    line_dev = next((d for d in enabled if config.profiles[d.profile].line is not None), None)
    if line_dev is not None and "STATUS" in config.profiles[line_dev.profile].commands:
        script.append(
            (
                f"profile command STATUS on {line_dev.id} (a text line protocol)",
                gw.command(f"{edge}:{line_dev.id}", "STATUS"),
                "completed",
            )
        )
    script.append(
        (
            "an invalid command: a point the profile does not have",
            gw.command(target, op="write", params={"values": {"no_such_point": 1}}),
            "error",
        )
    )
    return script


#: How long the demo watches telemetry at most, and how many changes it waits for.
TELEMETRY_WATCH = 6.0
TELEMETRY_CHANGES = 6


class _Printer:
    """Prints the Gateway's lines; telemetry only while it is being watched."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.telemetry = False

    def __call__(self, line: str) -> None:
        """Print one line (telemetry held back until the demo watches it)."""
        if self.telemetry or not line.startswith("<- telemetry "):
            self.out(line)


def _telemetry(gw: DevGateway, start: int = 0) -> list[dict[str, Any]]:
    return [m for m in gw.messages[start:] if m.get("type") == "telemetry"]


async def watch_telemetry(gw: DevGateway, config: Config, printer: _Printer) -> bool:
    """Show the telemetry so far, then live until every polled device and a few changes came.

    False when devices have poll groups and none sent anything in :data:`TELEMETRY_WATCH`.
    """
    polled = [
        d.id
        for d in config.devices
        if d.enabled and d.telemetry and config.profiles[d.profile].telemetry
    ]
    if not polled:
        return True
    out = printer.out
    out("\n== telemetry: each device's poll groups, a snapshot (snap) first, then changes")
    start = len(gw.messages)
    for msg in _telemetry(gw):
        out(f"<- {summarize(msg)}")
    printer.telemetry = True

    def enough() -> bool:
        seen = _telemetry(gw)
        changes = sum(1 for m in _telemetry(gw, start) if not m.get("snapshot"))
        return changes >= TELEMETRY_CHANGES and {m.get("deviceId") for m in seen} >= set(polled)

    with contextlib.suppress(asyncio.TimeoutError):  # checked at every message received
        await gw.wait_for(lambda _msg: enough(), timeout=TELEMETRY_WATCH)
    printer.telemetry = False
    silent = sorted(set(polled) - {m.get("deviceId") for m in _telemetry(gw)})
    if silent:
        out(f"-- no telemetry yet from {', '.join(silent)} (a long interval?)")
    if not _telemetry(gw):
        out("!! no telemetry at all")
        return False
    out(f"\n== QUERY values of {polled[0]}: the latest of each polled point")
    reply = await gw.call(
        {"type": "QUERY", "requestRef": "q-2", "query": "values", "deviceId": polled[0]}
    )
    return reply.get("status") == "completed"


async def run_demo(config: Config, out: Callable[[str], None] = print) -> int:
    """Start a Gateway, the simulators and the edge; send the script; 0 if all went as expected."""
    printer = _Printer(out)
    gw = DevGateway("127.0.0.1", 0, printer=printer)
    port = await gw.start()
    # Free ports, not the configured ones: a demo must run beside `edge-proxy simulate`.
    sim = Simulator(config, relocate=True)
    await sim.start()
    config = sim.rewrite()
    config = config.model_copy(
        update={"gateway": config.gateway.model_copy(update={"url": f"ws://127.0.0.1:{port}"})}
    )
    out(f"== development Gateway on ws://127.0.0.1:{port}")
    for device, configured, served, address in sim.table():
        out(f"== simulator for {device} ({configured}) serving {served} on {address}")
    daemon = Daemon(config)
    out(f"== starting edge {config.edge.id}")
    await daemon.start()
    ok = True
    try:
        await gw.wait_for(lambda m: m.get("type") == "REGISTER", timeout=10)
        for title, msg, expected in _script(gw, config):
            out(f"\n== {title}")
            reply = await gw.call(msg)
            got = reply.get("status") if reply["type"] == "command_response" else "error"
            if got != expected:
                out(f"!! expected {expected}, got {got}")
                ok = False
        out("\n== QUERY devices")
        reply = await gw.call({"type": "QUERY", "requestRef": "q-1", "query": "devices"})
        ok = ok and reply.get("status") == "completed"
        ok = await watch_telemetry(gw, config, printer) and ok
    except (asyncio.TimeoutError, ConnectionError) as exc:
        out(f"!! demo failed: {type(exc).__name__}: {exc}")
        ok = False
    finally:
        await daemon.stop(grace=2.0)
        await sim.stop()
        await gw.stop()
    out("\n== demo " + ("finished" if ok else "FAILED"))
    return 0 if ok else 1
