"""The console's fixtures: an edge with Modbus (real pymodbus servers) and simulated devices,
its console on a free loopback port, and a real headless Chromium driven by Playwright.

Chromium is Debian's (``/usr/bin/chromium``; ``scripts/test`` installs it when it can). Where
it cannot be had, the browser tests skip with the notice ``chromium not available: browser
tests skipped (reason)``, printed again at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge_proxy.ops.daemon import Daemon
from tests.builders import make_config
from tests.integration.modbus_servers import ModbusServer
from tests.integration.support import Gateway

CHROMIUM = os.environ.get("EDGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SKIPPED: list[str] = []

POINTS: dict[str, Any] = {
    "setpoint": {
        "table": "holding",
        "address": 10,
        "type": "int16",
        "access": "rw",
        "min": 0,
        "max": 1000,
        "unit": "rpm",
    },
    "level": {"table": "holding", "address": 11, "type": "uint16", "unit": "%"},
    "temperature": {"table": "input", "address": 0, "type": "int16", "scale": 0.1, "unit": "degC"},
    "relay": {"table": "coil", "address": 0, "access": "rw"},
}
COMMANDS: dict[str, Any] = {
    "SET_SPEED": {
        "params": {"speed": {"type": "int", "min": 0, "max": 1000, "required": True}},
        "write": {"setpoint": "{speed}"},
    },
    "STATUS": {"read": ["setpoint", "level", "temperature"]},
}


def console_tree(gateway: Gateway, modbus_port: int, **console: Any) -> dict[str, Any]:
    """Two Modbus TCP devices on one server, three simulated ones, the console on port 0."""
    return {
        "edge": {"id": "edge-042", "name": "Test bench"},
        "gateway": {
            "url": gateway.url,
            "reconnect": {"initial": "50ms", "max": "200ms", "jitter": 0.1},
        },
        "links": {
            "plc": {
                "driver": "modbus-tcp",
                "host": "127.0.0.1",
                "port": modbus_port,
                "timeout": "200ms",
                "offline_after": 1,
                "reconnect": {"initial": "100ms", "max": "500ms", "jitter": 0.1},
            },
            "sim": {"driver": "simulated"},
        },
        "profiles": {
            "meter": {
                "points": POINTS,
                "commands": COMMANDS,
                "telemetry": [{"name": "fast", "interval": "200ms", "points": "*"}],
            }
        },
        "devices": [
            {"id": "meter-01", "type": "meter", "profile": "meter", "link": "plc", "unit": 1},
            {"id": "meter-02", "type": "meter", "profile": "meter", "link": "plc", "unit": 2},
            *(
                {"id": f"sim-{i:02d}", "type": "pump", "profile": "meter", "link": "sim"}
                for i in range(1, 4)
            ),
            {
                "id": "spare-01",
                "type": "meter",
                "profile": "meter",
                "link": "sim",
                "enabled": False,
            },
        ],
        "control": {"enabled": False},
        "console": {"listen": "127.0.0.1:0", **console},
    }


@pytest.fixture
async def modbus() -> AsyncIterator[ModbusServer]:
    """A pymodbus TCP server with units 1 and 2."""
    server = ModbusServer((1, 2))
    await server.start()
    yield server
    await server.stop()


ConsoleFactory = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def console_edge(gateway: Gateway, modbus: ModbusServer) -> AsyncIterator[ConsoleFactory]:
    """Start an edge with its console (``console:`` keys as keyword arguments)."""
    started: list[Daemon] = []

    async def start(**console: Any) -> Daemon:
        daemon = Daemon(make_config(console_tree(gateway, modbus.port, **console)))
        await daemon.start()
        started.append(daemon)
        assert daemon.console_port is not None
        return daemon

    yield start
    for daemon in started:
        await daemon.stop(grace=1.0)


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium (Debian's) under Playwright, with a fresh profile."""
    why = chromium_missing()
    if why is not None:
        notice = f"chromium not available: browser tests skipped ({why})"
        if notice not in SKIPPED:
            SKIPPED.append(notice)
        pytest.skip(notice)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


def shots_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $EDGE_CONSOLE_SCREENSHOTS (docs/console to refresh the README's),
    else the test's temporary directory."""
    where = os.environ.get("EDGE_CONSOLE_SCREENSHOTS")
    path = Path(where) if where else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say once, visibly, that the browser tests were skipped and why."""
    for notice in SKIPPED:
        terminalreporter.write_line(notice, yellow=True, bold=True)
