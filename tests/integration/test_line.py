"""The line-tcp and line-serial drivers against real TCP servers and real pseudo-terminals."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from edge_proxy.config import Config, DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.errors import DeviceException, DeviceTimeout, LinkIOError, RequestError
from edge_proxy.ops.daemon import Daemon
from edge_proxy_drivers.line import (
    LineDevice,
    LineLink,
    LineSerialLink,
    LineTcpLink,
)
from tests.builders import base_tree, command, make_config
from tests.integration.line_servers import LineTcpServer, PtyLineServer
from tests.integration.support import Gateway

EdgeFactory = Callable[[Config], Awaitable[Daemon]]

ASCII_PROFILE: dict[str, Any] = {
    "line": {"terminator": "\r\n", "encoding": "ascii", "max_line": 64},
    "commands": {
        "SET_BRIGHTNESS": {
            "params": {"brightness": {"type": "int", "min": 0, "max": 100, "required": True}},
            "request": "BRT {brightness:03d}",
            "expect": "^OK$",
        },
        "SET_RAW": {
            "params": {"value": {"type": "int", "required": True}},
            "request": "BRT {value:03d}",
            "expect": "^OK$",
        },
        "STATUS": {
            "request": "STS?",
            "expect": "^STS (?P<door_state>\\d) (?P<brightness>\\d+)$",
        },
        "TEMPERATURE": {"request": "TMP?", "expect": "TMP (?P<temperature>\\S+) (?P<unit>\\w+)"},
        "RAW_STATUS": {"request": "STS?"},
        "SAY": {"params": {"text": {"type": "string", "required": True}}, "request": "{text}"},
        "health": {"request": "PING", "expect": "PONG"},
    },
}


def profile(**commands_over: Any) -> ProfileConfig:
    """The ascii profile, with commands replaced or added."""
    tree = copy.deepcopy(ASCII_PROFILE)
    tree["commands"].update(commands_over)
    return ProfileConfig.model_validate(tree)


@pytest.fixture
async def tcp_server() -> AsyncIterator[LineTcpServer]:
    """A running pillar-ascii device on TCP."""
    server = LineTcpServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def pty_server() -> AsyncIterator[PtyLineServer]:
    """A running pillar-ascii device behind a pseudo-terminal."""
    server = PtyLineServer()
    server.start()
    yield server
    await server.stop()


def tcp_link(server: LineTcpServer, **over: Any) -> LinkConfig:
    """A line-tcp link mapping for the server."""
    return LinkConfig.model_validate(
        {"driver": "line-tcp", "host": "127.0.0.1", "port": server.port, "timeout": "1s", **over}
    )


async def open_device(link: LineLink, prof: ProfileConfig | None = None) -> LineDevice:
    """An opened link and a device on it, for the direct tests."""
    await link.open()
    device = DeviceConfig(id="p1", profile="ascii", link="l")
    return LineDevice(link, device, prof or profile())


@pytest.fixture
async def tcp_device(tcp_server: LineTcpServer) -> AsyncIterator[LineDevice]:
    """A LineDevice connected to the TCP server."""
    link = LineTcpLink("l", tcp_link(tcp_server))
    device = await open_device(link)
    yield device
    await link.close()


def edge_config(
    gateway: Gateway, link: dict[str, Any], prof: dict[str, Any] | None = None
) -> Config:
    """One pillar-ascii device on the given link, behind the test Gateway."""
    return make_config(
        base_tree(
            gateway.url,
            links={"line": link},
            profiles={"ascii": prof or ASCII_PROFILE},
            devices=[{"id": "p1", "type": "pillar", "profile": "ascii", "link": "line"}],
        )
    )


async def start_edge(gateway: Gateway, edge_factory: EdgeFactory, config: Config) -> Daemon:
    """Start the daemon and wait until the device has answered its first health check."""
    daemon = await edge_factory(config)
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    await wait_status(gateway, "online")
    return daemon


async def wait_status(gateway: Gateway, status: str, count: int = 1) -> None:
    """Wait for the ``count``-th device_status of p1 with the given status."""
    await gateway.wait(
        lambda f: f["type"] == "device_status" and f["deviceId"] == "p1" and f["status"] == status,
        count=count,
    )


async def run(gateway: Gateway, ref: str, code: str, **params: Any) -> dict[str, Any]:
    """Send a command to p1 and return its terminal message."""
    await gateway.send(command(ref, device="p1", code=code, params=params))
    return await gateway.terminal(ref)


# ---------------------------------------------------------------- through the daemon


async def test_tcp_set_brightness_and_status(
    gateway: Gateway, edge_factory: EdgeFactory, tcp_server: LineTcpServer
) -> None:
    await start_edge(gateway, edge_factory, edge_config(gateway, tcp_link(tcp_server).model_dump()))
    term = await run(gateway, "b1", "SET_BRIGHTNESS", brightness=7)
    assert term["status"] == "completed", term
    assert tcp_server.dialect.brightness == 7
    assert "BRT 007" in tcp_server.dialect.requests
    term = await run(gateway, "s1", "STATUS")
    assert term["status"] == "completed", term
    assert term["result"] == {"values": {"door_state": 0, "brightness": 7}}


async def test_serial_pty_set_brightness_and_status(
    gateway: Gateway, edge_factory: EdgeFactory, pty_server: PtyLineServer
) -> None:
    link = {"driver": "line-serial", "port": pty_server.slave_path, "baudrate": 19200}
    await start_edge(gateway, edge_factory, edge_config(gateway, link))
    pty_server.dialect.door = 1
    term = await run(gateway, "b1", "SET_BRIGHTNESS", brightness=100)
    assert term["status"] == "completed", term
    term = await run(gateway, "s1", "STATUS")
    assert term["result"] == {"values": {"door_state": 1, "brightness": 100}}
    term = await run(gateway, "t1", "TEMPERATURE")
    assert term["result"] == {"values": {"temperature": 21.5, "unit": "C"}}


async def test_reply_that_does_not_match_is_device_exception(
    gateway: Gateway, edge_factory: EdgeFactory, tcp_server: LineTcpServer
) -> None:
    await start_edge(gateway, edge_factory, edge_config(gateway, tcp_link(tcp_server).model_dump()))
    term = await run(gateway, "x1", "SET_RAW", value=150)
    assert term["status"] == "failed"
    assert term["error"]["code"] == "DEVICE_EXCEPTION"
    assert term["error"]["details"] == {"reply": "ERR range"}
    # the device is still fine for the next command
    term = await run(gateway, "s1", "STATUS")
    assert term["status"] == "completed", term


async def test_silent_device_is_device_timeout(
    gateway: Gateway, edge_factory: EdgeFactory, tcp_server: LineTcpServer
) -> None:
    link = tcp_link(tcp_server, timeout="200ms", late_reply_grace=0).model_dump()
    await start_edge(gateway, edge_factory, edge_config(gateway, link))
    tcp_server.dialect.silent = True
    term = await run(gateway, "t1", "STATUS")
    assert term["status"] == "failed"
    assert term["error"]["code"] == "DEVICE_TIMEOUT"
    tcp_server.dialect.silent = False
    term = await run(gateway, "t2", "STATUS")
    assert term["status"] == "completed", term


async def test_unsolicited_lines_are_not_replies(
    gateway: Gateway,
    edge_factory: EdgeFactory,
    tcp_server: LineTcpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge_proxy_drivers.line")
    await start_edge(gateway, edge_factory, edge_config(gateway, tcp_link(tcp_server).model_dump()))
    # Lines that would pass STATUS's expect, sent right behind the OK of SET_BRIGHTNESS.
    tcp_server.dialect.after_reply = ["STS 9 99", "STS 8 88"]
    term = await run(gateway, "b1", "SET_BRIGHTNESS", brightness=42)
    assert term["status"] == "completed", term
    term = await run(gateway, "s1", "STATUS")
    assert term["result"] == {"values": {"door_state": 0, "brightness": 42}}
    discarded = [r for r in caplog.records if "unsolicited" in r.getMessage()]
    assert [getattr(r, "device_id", None) for r in discarded] == ["p1", "p1"]
    assert all(r.levelno == logging.INFO for r in discarded)


async def test_garbage_on_the_pty_fails_only_that_transaction(
    gateway: Gateway, edge_factory: EdgeFactory, pty_server: PtyLineServer
) -> None:
    link = {"driver": "line-serial", "port": pty_server.slave_path}
    await start_edge(gateway, edge_factory, edge_config(gateway, link))
    pty_server.dialect.brightness = 30

    pty_server.dialect.garbage = b"\xff\x00\x13"  # line noise in front of the reply
    term = await run(gateway, "g1", "STATUS")
    assert term["status"] == "failed"
    assert term["error"]["code"] == "DEVICE_EXCEPTION"
    assert "STS 0 30" in term["error"]["details"]["reply"]
    term = await run(gateway, "g2", "STATUS")
    assert term["result"] == {"values": {"door_state": 0, "brightness": 30}}

    pty_server.dialect.garbage = b"#" * 300  # longer than max_line
    term = await run(gateway, "g3", "STATUS")
    assert term["error"]["code"] == "DEVICE_EXCEPTION"
    assert "max_line" in term["error"]["message"]
    term = await run(gateway, "g4", "STATUS")
    assert term["result"] == {"values": {"door_state": 0, "brightness": 30}}


async def test_device_goes_offline_and_comes_back_with_its_server(
    gateway: Gateway, edge_factory: EdgeFactory, tcp_server: LineTcpServer
) -> None:
    link = tcp_link(
        tcp_server,
        timeout="300ms",
        health_interval="100ms",
        offline_after=1,
        reconnect={"initial": "50ms", "max": "100ms", "jitter": 0},
    ).model_dump()
    await start_edge(gateway, edge_factory, edge_config(gateway, link))
    assert tcp_server.connections == 1

    await tcp_server.stop()
    await wait_status(gateway, "offline")
    term = await run(gateway, "o1", "STATUS")
    assert term["status"] == "failed"
    assert term["error"]["code"] in ("DEVICE_OFFLINE", "IO_ERROR")

    await tcp_server.start()
    await wait_status(gateway, "online", count=2)
    term = await run(gateway, "o2", "SET_BRIGHTNESS", brightness=5)
    assert term["status"] == "completed", term
    assert tcp_server.connections == 2


# ---------------------------------------------------------------- directly on the driver


async def until_buffered(link: LineLink, data: bytes) -> None:
    """Wait until the link has received ``data`` (reaching into the driver: no public hook)."""
    protocol = link._protocol
    assert protocol is not None
    while data not in protocol.buffer:
        assert await protocol.wait_data(5.0), "nothing arrived"


#: STATUS with a timeout that a server ``delay`` of 0.5 s overruns.
QUICK_STATUS = {"request": "STS?", "timeout": "200ms"}


async def time_out_a_status(server: LineTcpServer, device: LineDevice) -> None:
    """A STATUS (of QUICK_STATUS) that times out; the server's reply is still on its way."""
    server.dialect.delay = 0.5
    with pytest.raises(DeviceTimeout):
        await device.execute("STATUS", {})
    server.dialect.delay = 0.0


async def test_late_reply_to_a_timed_out_request_is_not_the_next_reply(
    tcp_server: LineTcpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge_proxy_drivers.line")
    link = LineTcpLink("l", tcp_link(tcp_server, timeout="2s", late_reply_grace="3s"))
    device = await open_device(link, profile(STATUS=QUICK_STATUS))
    try:
        await time_out_a_status(tcp_server, device)
        # the late "STS 0 0" arrives while this call waits; taken as the reply, OK would fail
        assert await device.execute("SET_BRIGHTNESS", {"brightness": 60}) == {"reply": "OK"}
        assert await device.execute("RAW_STATUS", {}) == {"reply": "STS 0 60"}
        assert link.discarded == 1
        assert any("late reply" in r.getMessage() for r in caplog.records)
    finally:
        await link.close()


async def test_without_grace_a_late_reply_fails_the_next_transaction(
    tcp_server: LineTcpServer,
) -> None:
    # The documented limit: with no grace the late line is read as the next reply, and only
    # ``expect`` stands between it and a wrong result.
    link = LineTcpLink("l", tcp_link(tcp_server, timeout="2s", late_reply_grace=0))
    device = await open_device(link, profile(STATUS=QUICK_STATUS))
    try:
        await time_out_a_status(tcp_server, device)
        with pytest.raises(DeviceException) as info:
            await device.execute("SET_BRIGHTNESS", {"brightness": 60})
        assert info.value.details == {"reply": "STS 0 0"}
        # the OK that was left behind is discarded before the next request, once it is in
        await until_buffered(link, b"OK\r\n")
        assert await device.execute("RAW_STATUS", {}) == {"reply": "STS 0 60"}
    finally:
        await link.close()


async def test_reply_to_a_cancelled_transaction_is_not_the_next_reply(
    tcp_server: LineTcpServer,
) -> None:
    link = LineTcpLink("l", tcp_link(tcp_server, timeout="2s", late_reply_grace="3s"))
    device = await open_device(link)
    try:
        tcp_server.dialect.delay = 0.3
        pending = asyncio.create_task(device.execute("STATUS", {}))
        await tcp_server.dialect.wait_requests(1)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        tcp_server.dialect.delay = 0.0
        assert await device.execute("SET_BRIGHTNESS", {"brightness": 9}) == {"reply": "OK"}
        assert link.discarded == 1
    finally:
        await link.close()


async def test_unsolicited_line_pushed_between_transactions(
    tcp_server: LineTcpServer, tcp_device: LineDevice
) -> None:
    assert await tcp_device.execute("SET_BRIGHTNESS", {"brightness": 1}) == {"reply": "OK"}
    await tcp_server.push("STS 5 55")
    await until_buffered(tcp_device.link, b"STS 5 55\r\n")
    assert await tcp_device.execute("RAW_STATUS", {}) == {"reply": "STS 0 1"}
    assert tcp_device.link.discarded == 1


async def test_no_expect_returns_the_reply_and_numbers_are_converted(
    tcp_device: LineDevice,
) -> None:
    assert await tcp_device.execute("RAW_STATUS", {}) == {"reply": "STS 0 0"}
    assert await tcp_device.execute("TEMPERATURE", {}) == {"temperature": 21.5, "unit": "C"}


async def test_a_parameter_cannot_smuggle_a_second_request(
    tcp_server: LineTcpServer, tcp_device: LineDevice
) -> None:
    with pytest.raises(RequestError) as info:
        await tcp_device.execute("SAY", {"text": "PING\r\nBRT 100"})
    assert info.value.code == "INVALID_PARAMETERS"
    assert await tcp_device.execute("SAY", {"text": "PING"}) == {"reply": "PONG"}
    assert tcp_server.dialect.requests == ["PING"]


async def test_points_are_refused(tcp_device: LineDevice) -> None:
    with pytest.raises(DeviceException, match="no points"):
        await tcp_device.read(["brightness"])
    with pytest.raises(DeviceException, match="no points"):
        await tcp_device.write({"brightness": 1})


async def test_connection_closed_during_a_transaction_is_link_io_error(
    tcp_server: LineTcpServer, tcp_device: LineDevice
) -> None:
    tcp_server.dialect.silent = True
    pending = asyncio.create_task(tcp_device.execute("STATUS", {}))
    await tcp_server.dialect.wait_requests(1)
    await tcp_server.stop()
    with pytest.raises(LinkIOError):
        await pending
    assert not tcp_device.link.is_open


async def test_refused_connection_is_link_io_error(tcp_server: LineTcpServer) -> None:
    link = LineTcpLink("l", tcp_link(tcp_server))
    await tcp_server.stop()
    with pytest.raises(LinkIOError):
        await link.open()
    assert not link.is_open
    await link.close()


async def test_health_without_a_health_command_opens_the_link(
    tcp_server: LineTcpServer,
) -> None:
    link = LineTcpLink("l", tcp_link(tcp_server))
    prof = ProfileConfig.model_validate({"line": {}, "commands": {"STATUS": {"request": "STS?"}}})
    device = LineDevice(link, DeviceConfig(id="p1", profile="ascii", link="l"), prof)
    await device.health()
    assert link.is_open
    assert tcp_server.dialect.requests == []
    await link.close()
    await link.close()  # idempotent


async def test_health_runs_the_health_command(
    tcp_server: LineTcpServer, tcp_device: LineDevice
) -> None:
    await tcp_device.health()
    assert tcp_server.dialect.requests == ["PING"]


async def test_serial_link_on_a_pty(pty_server: PtyLineServer) -> None:
    # Parity and 7-bit frames cannot be tested here: this kernel's ptys keep only 8N and
    # refuse pyserial's second tcsetattr otherwise (the driver reports it as LinkIOError).
    config = LinkConfig(driver="line-serial", port=pty_server.slave_path, baudrate=4800, stopbits=2)
    link = LineSerialLink("s", config)
    device = await open_device(link)
    try:
        port = link._transport.serial  # type: ignore[union-attr]
        assert (port.baudrate, port.bytesize, port.parity, port.stopbits) == (4800, 8, "N", 2)
        assert await device.execute("STATUS", {}) == {"door_state": 0, "brightness": 0}
    finally:
        await link.close()
    assert not link.is_open


async def test_serial_port_that_does_not_exist_is_link_io_error() -> None:
    link = LineSerialLink("s", LinkConfig(driver="line-serial", port="/dev/does-not-exist"))
    with pytest.raises(LinkIOError):
        await link.open()
