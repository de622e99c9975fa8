"""Acceptance: `edge-proxy simulate` and `edge-proxy run` on the same, unedited example config.

Two real processes: the simulators serve every device on the address the example names, and
the daemon, started on that file as it is, brings every enabled device online. The Gateway is
a real WebSocket server on the example's own gateway address (the file names a fixed
``ws://127.0.0.1:18081``, with no environment variable to point it elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from edge_proxy.config import Config, load_config
from edge_proxy.drivers import registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"
DEADLINE = 30.0


class Recorder:
    """A WebSocket Gateway that records every frame and wakes waiters on each one."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.conns: list[ServerConnection] = []
        self._cond = asyncio.Condition()

    async def handler(self, ws: ServerConnection) -> None:
        """Record the frames of one edge connection."""
        self.conns.append(ws)
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                async with self._cond:
                    self.frames.append(json.loads(frame))
                    self._cond.notify_all()

    async def until(self, cond: Callable[[], bool], what: str) -> None:
        """Wait (woken by each frame) until ``cond()`` holds, failing after DEADLINE."""
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(cond), DEADLINE)
            except asyncio.TimeoutError:
                pytest.fail(f"{what} within {DEADLINE:g}s; frames: {self.frames[-20:]}")


def device_states(frames: list[dict[str, Any]]) -> dict[str, str]:
    """Each device's latest state, from REGISTER and device_status frames in order."""
    states: dict[str, str] = {}
    for frame in frames:
        if frame.get("type") == "REGISTER":
            for dev in frame.get("clientInfo", {}).get("devices", []):
                states[dev["deviceId"]] = dev["status"]
        elif frame.get("type") == "device_status":
            states[frame["deviceId"]] = frame["status"]
    return states


def require_free(host: str, port: int, what: str) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            pytest.fail(f"{what} {host}:{port} named by {EXAMPLE.name} is taken: {exc}")


@pytest.fixture
async def example_ports() -> AsyncIterator[None]:
    """Hold the machine-wide lock on the example's fixed ports (other test runs may want them)."""
    lock = Path(tempfile.gettempdir()) / "edge-proxy-example-ports.lock"
    with lock.open("a") as handle:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test run held {lock} for {DEADLINE:g}s")
                await asyncio.sleep(0.2)  # polling a lock another process holds
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def edge_proxy(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_proxy",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop(proc: asyncio.subprocess.Process) -> tuple[int, bytes]:
    """SIGTERM, then the exit status and everything it wrote to stderr."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    except asyncio.TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err


@pytest.fixture
def example() -> Config:
    return load_config(EXAMPLE, env={}, check_link=registry.check_link)


@pytest.fixture
async def gateway(example: Config, example_ports: None) -> AsyncIterator[Recorder]:
    url = urlsplit(example.gateway.url)
    assert url.hostname is not None and url.port is not None
    require_free(url.hostname, url.port, "the Gateway address")
    recorder = Recorder()
    async with serve(recorder.handler, url.hostname, url.port):
        yield recorder


@pytest.mark.timeout(90)
async def test_every_enabled_device_of_the_example_comes_online(
    example: Config, gateway: Recorder, tmp_path: Path
) -> None:
    enabled = {d.id for d in example.devices if d.enabled}
    # the devices simulate serves: every enabled one not of the in-process `simulated` driver
    served = set()
    for dev in example.devices:
        link = example.link_of(dev)
        if dev.enabled and link.driver != "simulated":
            served.add(dev.id)
            if link.host is not None and isinstance(link.port, int):
                require_free(link.host, link.port, f"the {link.driver} address")
    # The daemon's control socket goes to the temp dir: this test's own, not the machine's.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("EDGE_TOKEN", None)

    sim = await edge_proxy("simulate", "--config", str(EXAMPLE), env=env)
    run: asyncio.subprocess.Process | None = None
    try:
        assert sim.stdout is not None
        table = ""
        while not all(f"\n{dev} " in table for dev in served):
            line = await asyncio.wait_for(sim.stdout.readline(), DEADLINE)
            assert line, "simulate ended early"
            table += "\n" + line.decode()
        # every served device is on its own configured address, not a stand-in
        for dev_id in served:
            link = example.link_of(next(d for d in example.devices if d.id == dev_id))
            row = next(r for r in table.splitlines() if r.startswith(f"{dev_id} "))
            assert row.split()[-1] == f"{link.host}:{link.port}", row

        run = await edge_proxy("run", "--config", str(EXAMPLE), env=env)
        await gateway.until(
            lambda: any(f.get("type") == "REGISTER" for f in gateway.frames), "no REGISTER"
        )
        await gateway.until(
            lambda: all(device_states(gateway.frames).get(d) == "online" for d in enabled),
            f"not every enabled device of {sorted(enabled)} came online",
        )
        # ... and the edge says so itself when asked
        await gateway.conns[-1].send(
            json.dumps({"type": "QUERY", "requestRef": "q-online", "query": "devices"})
        )
        await gateway.until(
            lambda: any(f.get("requestRef") == "q-online" for f in gateway.frames),
            "no answer to QUERY devices",
        )
        answer = next(f for f in gateway.frames if f.get("requestRef") == "q-online")
        assert answer["status"] == "completed", answer
        states = {d["deviceId"]: d["status"] for d in answer["result"]["devices"]}
        assert {d: states[d] for d in enabled} == dict.fromkeys(enabled, "online")
        assert states["pillar-900"] == "disabled"
    finally:
        results = []
        if run is not None:
            results.append(("run", *await stop(run)))
        results.append(("simulate", *await stop(sim)))
        for name, _, err in results:  # shown by pytest when the test fails
            print(f"--- {name} stderr\n{err.decode()}")
    for name, status, err in results:
        assert status == 0, f"{name} exited {status}: {err.decode()}"
        assert b"Traceback" not in err, f"{name}: {err.decode()}"
