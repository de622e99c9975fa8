"""A device's state under pressure: what counts as an answer, what takes it offline, how it returns.

Against real parts: a real pymodbus server, a raw asyncio Modbus-TCP responder that answers
what the test says (registers, an exception code, nothing), real TCP line servers and a
pseudo-terminal. The runtime pieces are the real ones (``LinkRuntime``, ``DeviceRuntime`` and
the built-in drivers), wired the way the daemon wires them.

* A Modbus exception reply is an answer: the command fails with ``DEVICE_EXCEPTION`` (the code
  in ``details``), and it never counts toward ``offline_after``; a device that only answers
  exceptions is online. Exceptions 10 and 11 (a gateway saying the device behind it did not
  answer) are ``DEVICE_TIMEOUT`` and count like a timeout.
* An offline device is probed at its link's reconnect backoff, not at ``health_interval``, and
  comes back as soon as it answers.
* A line device without a ``health`` command is ``connecting`` until it has answered something
  (an open connection is not an answer) and does not flap back ``online`` on its own; offline,
  one command per backoff interval goes through as its probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.drivers import Device, Driver
from edge_proxy.errors import DeviceException, DeviceOffline, DeviceTimeout, error_body
from edge_proxy.runtime.devices import PRIORITY_LEVELS, DeviceRuntime, LinkRuntime
from edge_proxy_drivers.line.driver import LineSerialDriver, LineTcpDriver
from edge_proxy_drivers.modbus.driver import ModbusTcpDriver
from tests.integration.line_servers import LineTcpServer, PillarDialect, PtyLineServer
from tests.integration.modbus_servers import ModbusServer
from tests.integration.support import LocalTcpServer, running

NORMAL = PRIORITY_LEVELS["normal"]

MODBUS_PROFILE: dict[str, Any] = {
    "points": {
        "level": {"table": "holding", "address": 10},
        "bad": {"table": "holding", "address": 5000},  # beyond the test servers' map
    },
}

LINE_NO_HEALTH: dict[str, Any] = {
    "line": {"terminator": "\r\n", "encoding": "ascii"},
    "commands": {"STATUS": {"request": "STS?", "expect": "^STS (?P<door>\\d) (?P<brt>\\d+)$"}},
}

LINE_WITH_HEALTH: dict[str, Any] = {
    "line": {"terminator": "\r\n", "encoding": "ascii"},
    "commands": {
        **LINE_NO_HEALTH["commands"],
        "health": {"request": "PING", "expect": "PONG"},
    },
}

#: A quick backoff: probes at 50, 100, 200, 200 ... ms.
FAST_BACKOFF = {"initial": "50ms", "max": "200ms", "jitter": 0}


# ---------------------------------------------------------------- the rig


@dataclass
class Rig:
    """One device on its own link, as the daemon builds them, with its state changes."""

    link: LinkRuntime
    device: DeviceRuntime
    changes: list[tuple[str | None, str, str]] = field(default_factory=list)

    async def call(self, fn: Callable[[Device], Any]) -> Any:
        """Run one operation as a command (normal priority)."""
        return await self.link.run(self.device, NORMAL, fn)

    async def read(self, *points: str) -> dict[str, Any]:
        """Read points as a command."""
        return await self.call(lambda adapter: adapter.read(list(points)))  # type: ignore[no-any-return]

    async def execute(self, command: str) -> dict[str, Any]:
        """Run a line command as a command."""
        return await self.call(lambda adapter: adapter.execute(command, {}))  # type: ignore[no-any-return]

    def states(self) -> list[str]:
        """Every state the device went to, in order."""
        return [new for _, new, _ in self.changes]

    async def wait_state(self, state: str, timeout: float) -> float:
        """Wait until the device is in ``state``; return how long it took."""
        start = time.monotonic()
        while self.device.state != state:
            if time.monotonic() - start > timeout:
                raise AssertionError(
                    f"still {self.device.state!r} after {timeout}s, not {state!r}: {self.changes}"
                )
            await asyncio.sleep(0.01)
        return time.monotonic() - start


@contextlib.asynccontextmanager
async def rig(
    driver: type[Driver], link: dict[str, Any], profile: dict[str, Any], *, health: bool = True
) -> AsyncIterator[Rig]:
    """A started link with one device on it (and its health loop unless ``health=False``)."""
    link_cfg = LinkConfig.model_validate(link)
    prof = ProfileConfig.model_validate(profile)
    dev_cfg = DeviceConfig(id="d1", profile="p", link="l", unit=1)
    runtime = LinkRuntime("l", driver, driver.link_class("l", link_cfg), link_cfg)
    adapter = driver.device_class(runtime.link, dev_cfg, prof)
    changes: list[tuple[str | None, str, str]] = []
    device = DeviceRuntime(
        dev_cfg,
        prof,
        runtime,
        adapter,
        on_state=lambda _dev, new, previous, reason: changes.append((previous, new, reason)),
    )
    runtime.devices[device.id] = device
    runtime.start()
    if health:
        device.start_health()
    try:
        yield Rig(runtime, device, changes)
    finally:
        await device.stop_health()
        await runtime.close()


# ---------------------------------------------------------------- a scripted Modbus-TCP device


class ScriptedModbus(LocalTcpServer):
    """A raw Modbus-TCP responder: answers registers, an exception code, or nothing at all.

    ``mode`` is ``"answer"`` (FC3/FC4 replies of zeros), ``"silent"`` (reads the request,
    never answers) or an int: the exception code every request gets.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mode: str | int = "answer"
        self.requests: list[tuple[float, int, int]] = []  # (time, function, exception or 0)

    def link(self, **over: Any) -> dict[str, Any]:
        """A modbus-tcp link mapping to this responder."""
        return {"driver": "modbus-tcp", "host": "127.0.0.1", "port": self.port, **over}

    def reply(self, fc: int, body: bytes) -> bytes | None:
        """The PDU answering one request (None: no answer)."""
        mode = self.mode
        if mode == "silent":
            return None
        if isinstance(mode, int):
            return bytes([fc | 0x80, mode])
        if fc in (3, 4):
            _, count = struct.unpack(">HH", body[:4])
            return bytes([fc, 2 * count]) + bytes(2 * count)
        return bytes([fc | 0x80, 1])  # illegal function

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer (or not) each MBAP request as ``mode`` says, noting it in ``requests``."""
        while True:
            header = await reader.readexactly(7)
            tid, _pid, length, unit = struct.unpack(">HHHB", header)
            pdu = await reader.readexactly(length - 1)
            answer = self.reply(pdu[0], pdu[1:])
            code = answer[1] if answer is not None and answer[0] & 0x80 else 0
            self.requests.append((time.monotonic(), pdu[0], code))
            if answer is not None:
                writer.write(struct.pack(">HHHB", tid, 0, len(answer) + 1, unit) + answer)
                await writer.drain()


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedModbus]:
    """A running scripted Modbus-TCP device."""
    async with running(ScriptedModbus()) as server:
        yield server


# ---------------------------------------------------------------- Modbus: exceptions are answers


async def test_exception_replies_never_take_a_device_offline() -> None:
    async with ModbusServer() as server:
        link = {"driver": "modbus-tcp", "host": "127.0.0.1", "port": server.port}
        async with rig(ModbusTcpDriver, {**link, "offline_after": 3}, MODBUS_PROFILE) as r:
            await r.wait_state("online", 5.0)
            for _ in range(6):  # twice offline_after
                with pytest.raises(DeviceException) as info:
                    await r.read("bad")
                body = error_body(info.value)
                assert body["code"] == "DEVICE_EXCEPTION"
                assert body["details"]["exceptionCode"] == 2
            assert r.device.state == "online", r.changes
            assert r.device.last_error is not None
            assert r.device.last_error["code"] == "DEVICE_EXCEPTION"
            # the device is not refused: the next command runs and answers
            assert await r.read("level") == {"level": 0}
            assert r.states() == ["online"]
            assert r.device.counters.failures == 6 and r.device.counters.timeouts == 0


async def test_a_device_that_only_answers_exceptions_is_online(scripted: ScriptedModbus) -> None:
    scripted.mode = 4  # server device failure, to everything
    link = scripted.link(offline_after=2, reconnect=FAST_BACKOFF)
    async with rig(ModbusTcpDriver, link, MODBUS_PROFILE) as r:
        await r.wait_state("online", 3.0)  # its health check was answered, with an exception
        await asyncio.sleep(0.5)
        assert r.states() == ["online"]
        assert scripted.requests and all(code == 4 for _, _, code in scripted.requests)


@pytest.mark.parametrize("code", [10, 11])
async def test_gateway_exceptions_10_and_11_are_timeouts(
    scripted: ScriptedModbus, code: int
) -> None:
    link = scripted.link(offline_after=3)
    async with rig(ModbusTcpDriver, link, MODBUS_PROFILE, health=False) as r:
        assert await r.read("level") == {"level": 0}
        assert r.device.state == "online"
        scripted.mode = code
        for attempt in range(3):
            assert r.device.state == "online"
            with pytest.raises(DeviceTimeout) as info:
                await r.read("level")
            body = error_body(info.value)
            assert body["code"] == "DEVICE_TIMEOUT", (attempt, body)
            assert body["details"]["exceptionCode"] == code
        assert r.device.state == "offline"
        assert r.device.counters.timeouts == 3
        assert r.states() == ["online", "offline"]


async def test_offline_device_is_probed_at_backoff_and_returns_when_it_answers(
    scripted: ScriptedModbus,
) -> None:
    # health_interval stays at its default (30 s): only the backoff may decide the probes
    link = scripted.link(timeout="200ms", offline_after=3, reconnect=FAST_BACKOFF)
    async with rig(ModbusTcpDriver, link, MODBUS_PROFILE) as r:
        await r.wait_state("online", 3.0)
        scripted.mode = "silent"
        for _ in range(3):
            with pytest.raises(DeviceTimeout):
                await r.read("level")
        assert r.device.state == "offline"
        went_offline = time.monotonic()
        # offline: commands fail fast, without a transaction
        before = len(scripted.requests)
        with pytest.raises(DeviceOffline):
            await r.read("level")
        await asyncio.sleep(1.5)
        probes = [t for t, _, _ in scripted.requests[before:]]
        # probes 50, 100, 200, 200 ... ms apart (each also waits its 200 ms timeout)
        assert len(probes) >= 3, probes
        assert probes[0] - went_offline < 0.5, probes[0] - went_offline
        scripted.mode = "answer"
        took = await r.wait_state("online", 2.0)
        assert took < 1.0
        assert r.states() == ["online", "offline", "online"]
        assert await r.read("level") == {"level": 0}


# ---------------------------------------------------------------- line devices


async def silence(r: Rig, dialect: PillarDialect) -> int:
    """Silence a line device and time STATUS out three times (its ``offline_after``): it is
    offline; returns the count of requests it has had."""
    dialect.silent = True
    for _ in range(3):
        with pytest.raises(DeviceTimeout):
            await r.execute("STATUS")
    assert r.device.state == "offline"
    return len(dialect.requests)


@pytest.fixture
async def line_server() -> AsyncIterator[LineTcpServer]:
    """A running pillar-ascii device on TCP."""
    async with running(LineTcpServer()) as server:
        yield server


def line_link(server: LineTcpServer, **over: Any) -> dict[str, Any]:
    """A line-tcp link to the server with quick timings."""
    return {
        "driver": "line-tcp",
        "host": "127.0.0.1",
        "port": server.port,
        "timeout": "200ms",
        "health_interval": "100ms",
        "offline_after": 3,
        "reconnect": {"initial": "50ms", "max": "100ms", "jitter": 0},
        **over,
    }


async def test_line_device_without_health_command_is_connecting_until_it_answers(
    line_server: LineTcpServer,
) -> None:
    line_server.dialect.silent = True
    async with rig(LineTcpDriver, line_link(line_server), LINE_NO_HEALTH) as r:
        await asyncio.sleep(1.0)  # ten health intervals
        assert line_server.connections == 1  # the link is up ...
        assert r.device.state == "connecting", r.changes  # ... but nobody has answered
        assert r.changes == []
        assert line_server.dialect.requests == []  # and nothing was sent on its own
        line_server.dialect.silent = False
        assert await r.execute("STATUS") == {"door": 0, "brt": 0}
        assert r.device.state == "online"
        assert r.states() == ["online"]


async def test_line_device_without_health_command_does_not_flap(
    line_server: LineTcpServer,
) -> None:
    async with rig(LineTcpDriver, line_link(line_server), LINE_NO_HEALTH) as r:
        await r.execute("STATUS")
        assert r.device.state == "online"
        sent = await silence(r, line_server.dialect)
        for _ in range(20):  # a burst of commands to the offline device
            with contextlib.suppress(DeviceOffline, DeviceTimeout):
                await r.execute("STATUS")
                raise AssertionError("a silent device answered")
        await asyncio.sleep(1.0)  # ten health intervals
        assert r.device.state == "offline", r.changes
        assert r.states() == ["online", "offline"]
        # offline, a command goes through only as the probe, one per backoff interval
        assert len(line_server.dialect.requests) - sent <= 2
        line_server.dialect.silent = False
        deadline = time.monotonic() + 2.0
        while True:
            try:
                assert await r.execute("STATUS") == {"door": 0, "brt": 0}
                break
            except DeviceOffline:
                assert time.monotonic() < deadline, "never probed"
                await asyncio.sleep(0.02)
        assert r.device.state == "online"
        assert r.states() == ["online", "offline", "online"]


async def test_offline_line_device_is_probed_at_backoff_on_a_pty() -> None:
    server = PtyLineServer()
    server.start()
    link = {
        "driver": "line-serial",
        "port": server.slave_path,
        "timeout": "200ms",
        "offline_after": 3,
        "reconnect": FAST_BACKOFF,
    }
    try:
        async with rig(LineSerialDriver, link, LINE_WITH_HEALTH) as r:
            await r.wait_state("online", 3.0)  # PING answered PONG
            assert server.dialect.requests == ["PING"]
            before = await silence(r, server.dialect)
            await asyncio.sleep(1.5)
            probes = server.dialect.requests[before:]
            assert len(probes) >= 3 and set(probes) == {"PING"}, probes
            server.dialect.silent = False
            took = await r.wait_state("online", 2.0)
            assert took < 1.0
            assert r.states() == ["online", "offline", "online"]
    finally:
        await server.stop()
