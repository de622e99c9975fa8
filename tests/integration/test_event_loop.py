"""``edge-proxy run --loop``: the daemon serves the same commands on asyncio's loop and on uvloop.

Each run is a real daemon process with a Modbus TCP device (a pymodbus server) and a simulated
one, commands from a real WebSocket Gateway: every command gets its ``ack`` before its one
terminal, values written are read back, and the log names the loop in use.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.builders import TYPES_PROFILE, base_tree, command, is_terminal
from tests.integration.modbus_servers import ModbusServer
from tests.integration.support import Gateway, edge_cmd
from tests.integration.test_reload_shutdown import stop_process


def ended(ref: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the terminal of ``ref``."""
    return lambda f: f.get("requestRef") == ref and is_terminal(f)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_run_serves_modbus_and_simulated_devices_on_either_loop(
    gateway: Gateway, tmp_path: Path, loop: str
) -> None:
    async with ModbusServer((1,)) as server:
        tree = base_tree(gateway.url)
        tree["links"]["plc"] = {"driver": "modbus-tcp", "host": "127.0.0.1", "port": server.port}
        tree["profiles"]["types"] = copy.deepcopy(TYPES_PROFILE)
        tree["devices"].append({"id": "plc-1", "type": "plc", "profile": "types", "link": "plc"})
        cfg = tmp_path / "edge.yaml"
        cfg.write_text(yaml.safe_dump(tree))
        argv = edge_cmd("run", "--config", str(cfg), "--loop", loop)
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE)
        try:
            await gateway.wait(lambda f: f["type"] == "REGISTER", timeout=20)
            refs = []
            for i in range(20):
                refs.append(f"w{i}")
                await gateway.send(
                    command(f"w{i}", "plc-1", op="write", params={"values": {"i16": i - 10}})
                )
                refs.append(f"r{i}")
                await gateway.send(command(f"r{i}", "plc-1", op="read", params={"points": ["i16"]}))
            refs.append("sim")
            await gateway.send(command("sim", op="read", params={"points": ["brightness"]}))
            for ref in refs:
                await gateway.wait(ended(ref))
        finally:
            code, err = await stop_process(proc)
    assert code == 0, err
    assert f"event loop: {loop}" in err
    for i in range(20):
        for ref in (f"w{i}", f"r{i}"):
            frames = gateway.of(ref)
            assert [f["type"] for f in frames] == ["ack", "command_response"], frames
            assert frames[1]["status"] == "completed", frames[1]
        assert gateway.of(f"r{i}")[1]["result"]["values"] == {"i16": i - 10}
    assert gateway.of("sim")[-1]["status"] == "completed"


def test_run_with_loop_uvloop_says_so_when_uvloop_is_missing(tmp_path: Path) -> None:
    """Without uvloop importable, ``--loop uvloop`` is refused with the way to install it."""
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(yaml.safe_dump(base_tree()))
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "uvloop.py").write_text("raise ImportError('not installed here')\n")
    argv = edge_cmd("run", "--config", str(cfg), "--loop", "uvloop")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode != 0
    assert "uvloop is not installed" in out.stderr
    assert "Traceback" not in out.stderr
