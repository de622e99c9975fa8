"""``edge-proxy status --watch`` in a real terminal (a pty) against a running daemon."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import sys
from pathlib import Path

from edge_proxy.cli.watch import render
from edge_proxy.ops.daemon import Daemon
from tests.builders import make_config
from tests.integration.console.conftest import console_tree
from tests.integration.faults.parts import poll_until
from tests.integration.modbus_servers import ModbusServer
from tests.integration.support import Gateway

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


async def run_in_pty(*args: str) -> tuple[int, str]:
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "60", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge_proxy", *args, stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []

    def read_all() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = loop.run_in_executor(None, read_all)
    code = await asyncio.wait_for(proc.wait(), 30)
    await asyncio.wait_for(reader, 5)
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


async def test_status_watch_draws_the_overview_and_devices_live(
    gateway: Gateway, modbus: ModbusServer, tmp_path: Path
) -> None:
    tree = console_tree(gateway, modbus.port)
    tree["control"] = {"socket": str(tmp_path / "edge.sock")}
    del tree["console"]
    daemon = Daemon(make_config(tree))
    await daemon.start()
    try:
        await poll_until(lambda: daemon.devices["meter-01"].state == "online", 5, "online")
        await modbus.stop()
        await poll_until(lambda: daemon.devices["meter-01"].state == "offline", 5, "offline")
        code, out = await run_in_pty(
            "status", "--socket", str(tmp_path / "edge.sock"), "--watch", "--interval", "0.3",
            "--count", "3",
        )  # fmt: skip
    finally:
        await daemon.stop(grace=1.0)
    text = ANSI.sub("", out)
    assert code == 0, text
    assert "edge edge-042" in text and "devices 3/6 online" in text
    assert "recent state changes" in text and "online -> offline" in text
    # the broken ones first, drawn again at each refresh (a live redraw, not one print)
    assert text.count("devices 3/6 online") >= 2, text
    table = text[text.rindex("devices\n") :] if "devices\n" in text else text
    assert table.index("meter-01") < table.index("sim-01") < table.index("spare-01")
    assert "\x1b[" in out  # colours and cursor moves: a real terminal


def test_render_sorts_broken_first_and_counts() -> None:
    report = {
        "edge": "e",
        "gateway": {"state": "online", "since": "2024-01-01T00:00:00.000Z"},
        "outbox": {"messages": 1, "dropped": {"telemetry": 2}},
        "inFlight": 0,
        "devices": [
            {"deviceId": "b", "status": "online", "counters": {"transactions": 5}},
            {"deviceId": "a", "status": "offline", "lastError": {"code": "X", "message": "y"}},
        ],
    }
    from rich.console import Console

    console = Console(width=120, record=True, color_system=None)
    console.print(render(report, now=1704067260.0))
    out = console.export_text()
    assert "devices 1/2 online" in out and "since 1.0m ago" in out and "(2 dropped)" in out
    assert out.index("X: y") < out.index(" b ")
