"""`edge-proxy demo`, `simulate` and `probe`, run as a field engineer runs them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edge_proxy.cli.probe import probe
from edge_proxy.cli.simulate import Simulator
from edge_proxy.config import load_config
from edge_proxy.drivers import registry
from tests.integration.support import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"


def run(*args: str, cwd: Path = ROOT, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return cli(*args, cwd=cwd, timeout=timeout)


def test_demo_prints_the_exchange_and_exits_0(tmp_path: Path) -> None:
    # run from an empty folder: the demo must find its packaged example config
    started = time.monotonic()
    out = run("demo", cwd=tmp_path)
    assert time.monotonic() - started < 15  # the README's first command stays short
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "<- REGISTER edge-001" in text
    assert "serving modbus-tcp on 127.0.0.1:" in text  # a real Modbus TCP socket
    assert "-> COMMAND" in text and "<- ack" in text
    assert "command_response" in text and "completed" in text
    assert "<- error" in text and "INVALID_PARAMETERS" in text
    assert '"door_state":0,"brightness":100' in text  # the line device remembered the write
    # telemetry: snapshots of the Modbus, in-memory and line devices, then simulated changes
    lines = [line for line in text.splitlines() if line.startswith("<- telemetry ")]
    for source in ("pillar-001 fast", "pillar-003 fast", "pillar-101 status"):
        assert any(line.startswith(f"<- telemetry {source} #") for line in lines), source
    assert any(" snap " in line for line in lines)
    changes = [line for line in lines if " snap " not in line and "fast" in line]
    assert changes and any("light=" in line or "temperature=" in line for line in changes)
    assert "QUERY values of pillar-001" in text
    assert text.rstrip().endswith("== demo finished")
    assert "Traceback" not in out.stderr


async def test_simulate_then_probe_every_device() -> None:
    config = load_config(EXAMPLE, env={}, check_link=registry.check_link)
    sim = Simulator(config, relocate=True)  # free ports: the example's may be in use
    await sim.start()
    try:
        served = sim.rewrite()
        lines: list[str] = []
        assert await probe(served, "pillar-001", lines.append) == 0
        text = "\n".join(lines)
        assert "brightness" in text and "holding 101" in text and "FAILED" not in text
        lines.clear()
        assert await probe(served, "pillar-101", lines.append) == 0
        assert "connected" in lines[-1]
    finally:
        await sim.stop()


async def test_probe_names_what_failed(tmp_path: Path) -> None:
    config = load_config(EXAMPLE, env={}, check_link=registry.check_link)
    lines: list[str] = []
    # nothing listens on the example's Modbus port in this test
    assert await probe(config, "pillar-001", lines.append) == 1
    assert any("FAILED to connect" in line for line in lines)
    assert await probe(config, "no-such-device", lines.append) == 2


@pytest.mark.timeout(60)
async def test_simulate_command_serves_and_writes_a_config(tmp_path: Path) -> None:
    out_cfg = tmp_path / "pointed.yaml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_proxy",
        "simulate",
        "--config",
        str(EXAMPLE),
        "--write-config",
        str(out_cfg),
        "--relocate",  # free ports, so the written config must differ from the example
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        seen = b""
        while b"written to" not in seen:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "simulate ended early"
            seen += line
        assert b"pillar-001" in seen and b"pillar-101" in seen
        pointed = yaml.safe_load(out_cfg.read_text())
        assert pointed["links"]["plc-1"]["port"] != 15020
        lines: list[str] = []
        config = load_config(out_cfg, env={}, check_link=registry.check_link)
        assert await probe(config, "pillar-002", lines.append) == 0, lines
    finally:
        proc.terminate()
        await proc.wait()
    assert proc.returncode == 0


async def test_development_gateway_runs_a_script_against_an_edge(tmp_path: Path) -> None:
    import socket

    from edge_proxy.ops.daemon import Daemon
    from tests.builders import base_tree, make_config

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "script.txt"
    script.write_text(
        "# commissioning script\n"
        "pillar-001 SET_BRIGHTNESS brightness=42\n"
        "pillar-001 read points=brightness\n"
        '{"type": "QUERY", "requestRef": "q-1", "query": "devices"}\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_proxy",
        "gateway",
        "--port",
        str(port),
        "--script",
        str(script),
        "--no-stdin",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    daemon = None
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"listening on ws://127.0.0.1:" in first
        daemon = Daemon(make_config(base_tree(f"ws://127.0.0.1:{port}")))
        await daemon.start()
        seen = b""
        while b"q-1 completed" not in seen:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the gateway ended early"
            seen += line
        text = seen.decode()
        assert "<- REGISTER edge-001" in text
        assert "-> COMMAND cmd-1 edge-001:pillar-001 SIMPLE SET_BRIGHTNESS" in text
        assert '<- command_response cmd-2 completed {"values":{"brightness":42}}' in text
    finally:
        if daemon is not None:
            await daemon.stop(grace=1.0)
        proc.terminate()
        await proc.wait()
