"""Shared test parts: a real WebSocket Gateway on port 0, config builders, a running edge."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from edge_proxy.config import Config, validate_tree
from edge_proxy.drivers import registry
from edge_proxy.ops.daemon import Daemon

PILLAR_PROFILE: dict[str, Any] = {
    "points": {
        "door_state": {"table": "holding", "address": 100, "type": "uint16", "access": "r"},
        "brightness": {"table": "holding", "address": 101, "access": "rw", "min": 0, "max": 100},
        "temperature": {"table": "input", "address": 0, "type": "int16", "scale": 0.1},
        "relay": {"table": "coil", "address": 0, "access": "rw"},
        "door_cmd": {"table": "holding", "address": 103, "access": "w"},
        "mode": {"table": "holding", "address": 104, "access": "rw"},
        "status_word": {"table": "holding", "address": 105},
    },
    "commands": {
        "SET_BRIGHTNESS": {
            "params": {"brightness": {"type": "int", "min": 0, "max": 100, "required": True}},
            "write": {"brightness": "{brightness}"},
        },
        "OPEN_DOOR": {"write": {"door_cmd": 1}},
        "STATUS": {"read": ["door_state", "brightness", "temperature"]},
        "COMMISSION": {
            "steps": [{"write": {"mode": 2}}, {"delay": "50ms"}, {"read": ["status_word"]}]
        },
    },
}


def base_tree(url: str = "ws://127.0.0.1:9", **over: Any) -> dict[str, Any]:
    """A valid config tree with two simulated pillars on one link and one slow one."""
    tree: dict[str, Any] = {
        "edge": {"id": "edge-001", "name": "test edge"},
        "gateway": {
            "url": url,
            "heartbeat_interval": "30s",
            "reconnect": {"initial": "50ms", "max": "200ms", "jitter": 0.1},
        },
        "links": {
            "sim": {"driver": "simulated", "health_interval": "30s"},
            "slow": {"driver": "simulated", "latency": "300ms"},
        },
        "profiles": {"pillar": copy.deepcopy(PILLAR_PROFILE)},
        "devices": [
            {"id": "pillar-001", "type": "pillar", "profile": "pillar", "link": "sim", "unit": 1},
            {"id": "pillar-002", "type": "pillar", "profile": "pillar", "link": "sim", "unit": 2},
            {"id": "pillar-slow", "type": "pillar", "profile": "pillar", "link": "slow"},
        ],
        # tests that want the control socket give it a path of their own
        "control": {"enabled": False},
    }
    for key, value in over.items():
        tree[key] = value
    return tree


def make_config(tree: dict[str, Any]) -> Config:
    """Validate a tree with the real driver registry."""
    return validate_tree(tree, registry.check_link)


class Gateway:
    """A minimal Subway Gateway for tests: records every frame, sends what the test asks."""

    def __init__(self) -> None:
        self.port = 0
        self.server: Server | None = None
        self.conns: list[ServerConnection] = []
        self.frames: list[dict[str, Any]] = []
        self.frame_conn: list[int] = []  # which connection (1-based) each frame came on
        self.close_codes: list[int | None] = []
        self.raw: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.connections = 0
        self._cond = asyncio.Condition()
        self.on_connect: Callable[[ServerConnection], Any] | None = None

    @property
    def url(self) -> str:
        """ws:// address of the running server."""
        return f"ws://127.0.0.1:{self.port}"

    async def start(self, **kwargs: Any) -> None:
        """Listen (on the previous port after a stop, so the edge can come back)."""
        self.server = await serve(self._handler, "127.0.0.1", self.port, **kwargs)
        self.port = next(iter(self.server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        """Kill the server and every connection."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        self.conns.clear()

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        number = self.connections
        self.conns.append(ws)
        assert ws.request is not None
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        if self.on_connect is not None:
            await self.on_connect(ws)
        try:
            async for frame in ws:
                assert isinstance(frame, str)
                async with self._cond:
                    self.raw.append(frame)
                    self.frames.append(json.loads(frame))
                    self.frame_conn.append(number)
                    self._cond.notify_all()
        except ConnectionClosed:
            pass
        async with self._cond:
            self.close_codes.append(ws.close_code)
            self._cond.notify_all()

    async def wait(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0, count: int = 1
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` received frames match ``pred``; return them."""

        def found() -> list[dict[str, Any]]:
            return [f for f in self.frames if pred(f)]

        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(lambda: len(found()) >= count), timeout)
        return found()

    async def send(self, msg: dict[str, Any] | str) -> None:
        """Send to the newest connection."""
        text = msg if isinstance(msg, str) else json.dumps(msg)
        await self.conns[-1].send(text)

    async def terminal(self, ref: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the terminal message of ``ref``."""
        found = await self.wait(lambda f: f.get("requestRef") == ref and is_terminal(f), timeout)
        return found[0]

    def of(self, ref: str) -> list[dict[str, Any]]:
        """Every frame about ``ref``."""
        return [f for f in self.frames if f.get("requestRef") == ref]


@contextlib.contextmanager
def installed_package(source: Path, target: Path, module_prefix: str) -> Iterator[Path]:
    """pip-install a package into ``target`` and put it on sys.path, as a user's site would be.

    ``--no-build-isolation`` keeps it offline (setuptools and wheel come with the dev extras).
    """
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.startswith(module_prefix)]:
            del sys.modules[name]


def is_terminal(frame: dict[str, Any]) -> bool:
    """command_response or error."""
    return frame.get("type") in ("command_response", "error")


def command(
    ref: str,
    device: str = "pillar-001",
    code: str | None = None,
    *,
    op: str | None = None,
    params: dict[str, Any] | None = None,
    ctype: str = "SIMPLE",
    edge: str = "edge-001",
    **extra: Any,
) -> dict[str, Any]:
    """A COMMAND frame."""
    cmd: dict[str, Any] = {"commandType": ctype, "parameters": params or {}}
    if code is not None:
        cmd["commandCode"] = code
    if op is not None:
        cmd["operationType"] = op
    msg: dict[str, Any] = {
        "type": "COMMAND",
        "requestRef": ref,
        "targetClientId": f"{edge}:{device}",
        "command": cmd,
        "timestamp": "2024-01-20T10:00:00.000Z",
        "version": "1.0",
    }
    msg.update(extra)
    return msg


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A running test Gateway."""
    gw = Gateway()
    await gw.start()
    yield gw
    await gw.stop()


@pytest.fixture
async def edge_factory() -> AsyncIterator[Callable[[Config], Awaitable[Daemon]]]:
    """Start daemons on configs; stops them all at teardown."""
    started: list[Daemon] = []

    async def start(config: Config) -> Daemon:
        daemon = Daemon(config)
        await daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if not daemon.stopped.is_set():
            await daemon.stop(grace=1.0)


@pytest.fixture
async def edge(gateway: Gateway) -> AsyncIterator[Daemon]:
    """A daemon on base_tree() connected to the test Gateway, REGISTER received."""
    daemon = Daemon(make_config(base_tree(gateway.url)))
    await daemon.start()
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    yield daemon
    await daemon.stop(grace=1.0)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks of its own running."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [
        t
        for t in asyncio.all_tasks() - before
        if not t.done() and t is not asyncio.current_task() and "websockets" not in repr(t)
    ]
    if leaked:
        for t in leaked:
            t.cancel()
        pytest.fail(f"leaked tasks: {[t.get_name() for t in leaked]}")
