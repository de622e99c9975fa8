"""The Modbus drivers against real pymodbus servers, over TCP and over pty serial lines."""

from __future__ import annotations

import asyncio
import copy
import struct
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymodbus.framer import FramerAscii, FramerBase, FramerRTU, FramerType
from pymodbus.pdu import DecodePDU

from edge_proxy.config import Config
from edge_proxy.drivers import OperationContext, registry, set_current_operation
from edge_proxy.errors import (
    DeviceError,
    DeviceException,
    DeviceTimeout,
    LinkIOError,
    OperationAborted,
)
from edge_proxy.ops.daemon import Daemon
from edge_proxy_drivers.modbus import ModbusDevice, ModbusLink
from tests.builders import TYPES_PROFILE, base_tree, command, make_config
from tests.integration.modbus_servers import Frame, ModbusServer, SerialRelay
from tests.integration.support import Gateway

EdgeFactory = Callable[[Config], Awaitable[Daemon]]

SERIAL = ("modbus-rtu", "modbus-ascii")
TRANSPORTS = ("modbus-tcp", "modbus-rtu-over-tcp", *SERIAL)
FRAMERS = {
    "modbus-tcp": FramerType.SOCKET,
    "modbus-rtu-over-tcp": FramerType.RTU,
    "modbus-rtu": FramerType.RTU,
    "modbus-ascii": FramerType.ASCII,
}
TIMEOUT = 0.3


WRITES: dict[str, Any] = {
    "i16": -2,
    "u16": 65535,
    "i32": -123456,
    "u32": 0xDEADBEEF,
    "i64": -(2**40) - 5,
    "u64": 0x0102030405060708,
    "f32": 3.5,
    "f64": -1234.5678,
    "text": "AbC",
    "scaled": 12.3,
    "flag": True,
    "relay": True,
}


def words(data: bytes) -> list[int]:
    """Big-endian 16-bit words of data."""
    return list(struct.unpack(f">{len(data) // 2}H", data))


# The registers each written value must leave in the server, worked out independently of
# edge_proxy.points: (table, address, raw values).
EXPECTED_RAW: dict[str, tuple[str, int, list[int]]] = {
    "i16": ("holding", 0, [0xFFFE]),
    "u16": ("holding", 1, [0xFFFF]),
    "i32": ("holding", 2, [0xFFFE, 0x1DC0]),
    "u32": ("holding", 4, [0xBEEF, 0xDEAD]),
    "i64": ("holding", 6, words(struct.pack(">q", -(2**40) - 5))),
    "u64": ("holding", 10, [0x0201, 0x0403, 0x0605, 0x0807]),
    "f32": ("holding", 14, words(struct.pack(">f", 3.5))),
    # Both orders little: the whole number little-endian, B7 B6 | B5 B4 | B3 B2 | B1 B0.
    "f64": ("holding", 16, words(struct.pack("<d", -1234.5678))),
    "text": ("holding", 20, [0x4162, 0x4300, 0, 0]),
    "scaled": ("holding", 24, [173]),  # (12.3 + 5) / 0.1
    "flag": ("holding", 25, [0x0089]),  # bit 3 set, the preset bits 0 and 7 kept
    "relay": ("coil", 3, [1]),
}


@dataclass
class Line:
    """A running server (and relay, for serial drivers) and the link mapping that reaches it."""

    driver: str
    server: ModbusServer
    relay: SerialRelay | None
    links: list[ModbusLink] = field(default_factory=list)

    def link(self, **over: Any) -> dict[str, Any]:
        """A link mapping for this line."""
        tree: dict[str, Any] = {"driver": self.driver, "timeout": TIMEOUT}
        if self.relay is not None:
            tree["port"] = self.relay.client_path
        else:
            tree.update(host="127.0.0.1", port=self.server.port)
        tree.update(over)
        return tree

    def serial_relay(self) -> SerialRelay:
        """The relay of a serial line."""
        assert self.relay is not None
        return self.relay

    async def devices(
        self, units: Sequence[int], profile: dict[str, Any] | None = None, **link: Any
    ) -> list[ModbusDevice]:
        """Driver objects for units on one open link (closed when the line is torn down)."""
        tree = base_tree(
            links={"line": self.link(**link)},
            profiles={"p": copy.deepcopy(profile or TYPES_PROFILE)},
            devices=[{"id": f"unit-{u}", "profile": "p", "link": "line", "unit": u} for u in units],
        )
        config = make_config(tree)
        driver = registry.get(self.driver)
        dev_cfgs = config.devices
        link_obj = driver.link_class("line", config.link_of(dev_cfgs[0]))
        assert isinstance(link_obj, ModbusLink)
        self.links.append(link_obj)
        await link_obj.open()
        out = []
        for dev_cfg in dev_cfgs:
            adapter = driver.device_class(link_obj, dev_cfg, config.profiles["p"])
            assert isinstance(adapter, ModbusDevice)
            out.append(adapter)
        return out


@asynccontextmanager
async def serve(
    driver: str, units: Sequence[int] = (1,), broadcast: bool = False
) -> AsyncIterator[Line]:
    """Run a server for driver's transport; stop everything afterwards."""
    relay = SerialRelay() if driver in SERIAL else None
    server = ModbusServer(
        units,
        framer=FRAMERS[driver],
        serial_port=relay.server_path if relay else None,
        broadcast=broadcast,
    )
    await server.start()
    line = Line(driver, server, relay)
    try:
        yield line
    finally:
        for link in line.links:
            await link.close()
        await server.stop()
        if relay is not None:
            relay.close()


@pytest.fixture(params=TRANSPORTS)
async def line(request: pytest.FixtureRequest) -> AsyncIterator[Line]:
    """One unit (id 1) behind each of the four transports."""
    async with serve(request.param) as running:
        yield running


@pytest.fixture
async def rtu() -> AsyncIterator[Line]:
    """Units 1, 2 and 3 on an RTU pty line."""
    async with serve("modbus-rtu", units=(1, 2, 3)) as running:
        yield running


def gateway_tree(gateway: Gateway, links: dict[str, Any], devices: list[dict[str, Any]]) -> Config:
    """A daemon config with the types profile."""
    return make_config(
        base_tree(
            gateway.url,
            links=links,
            profiles={"p": copy.deepcopy(TYPES_PROFILE)},
            devices=[{"type": "pillar", "profile": "p", **d} for d in devices],
        )
    )


def status_of(device: str, status: str) -> Callable[[dict[str, Any]], bool]:
    """Matches a device_status frame."""
    return lambda f: (
        f["type"] == "device_status" and f["deviceId"] == device and f["status"] == status
    )


async def start_plc(gateway: Gateway, edge_factory: EdgeFactory, server: ModbusServer) -> None:
    """A daemon with plc-1, unit 1 of ``server`` over modbus-tcp; returns once it is online."""
    config = gateway_tree(
        gateway,
        {"plc": {"driver": "modbus-tcp", "host": "127.0.0.1", "port": server.port}},
        [{"id": "plc-1", "link": "plc", "unit": 1}],
    )
    await edge_factory(config)
    await gateway.wait(status_of("plc-1", "online"))


# ---------------------------------------------------------------------------- every type


async def test_every_point_type_round_trips(line: Line) -> None:
    (dev,) = await line.devices([1])
    server = line.server
    await server.set(1, "holding", 25, [0x0081])
    await server.set(1, "discrete_input", 5, [1])
    await server.set(1, "input", 2, [0xFFF9])  # -7

    server.requests.clear()
    await dev.write(WRITES)
    # FC16 for multi-register numbers and strings, FC6 for one register, FC3 + FC6 for a bit,
    # FC5 for a coil, in the order given.
    assert [r.function for r in server.requests] == [6, 6, 16, 16, 16, 16, 16, 16, 16, 6, 3, 6, 5]
    for name, (table, address, raw) in EXPECTED_RAW.items():
        assert await server.get(1, table, address, len(raw)) == raw, name

    server.requests.clear()
    readable = [n for n in TYPES_PROFILE["points"] if n != "missing"]
    values = await dev.read(readable)
    assert [(r.function, r.address, r.count) for r in server.requests] == [
        (1, 3, 1),
        (2, 5, 1),
        (3, 0, 26),
        (4, 2, 1),
    ]
    expected = {**WRITES, "door": True, "temp": -3.5}
    assert values.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, float):
            assert values[name] == pytest.approx(value), name
        else:
            assert values[name] == value, name
            assert type(values[name]) is type(value), name

    await dev.write({"flag": False, "relay": False, "scaled": -5})
    assert await server.get(1, "holding", 25) == [0x0081]
    assert await server.get(1, "coil", 3) == [0]
    assert await server.get(1, "holding", 24) == [0]
    assert await dev.read(["flag", "relay", "scaled"]) == {
        "flag": False,
        "relay": False,
        "scaled": -5,
    }


async def test_values_changed_on_the_device_are_read(line: Line) -> None:
    (dev,) = await line.devices([1])
    await line.server.set(1, "holding", 14, words(struct.pack(">f", -0.25)))
    await line.server.set(1, "holding", 20, [0x6869, 0x2100, 0x2020, 0x2020])  # "hi!" + spaces
    await line.server.set(1, "coil", 3, [1])
    assert await dev.read(["f32", "text", "relay"]) == {"f32": -0.25, "text": "hi!", "relay": True}


async def test_modbus_exception_is_a_device_exception(line: Line) -> None:
    (dev,) = await line.devices([1])
    with pytest.raises(DeviceException) as info:
        await dev.read(["missing"])
    assert info.value.details == {"exceptionCode": 2, "function": 3}
    assert "illegal data address" in info.value.message
    with pytest.raises(DeviceException) as info:
        await dev.write({"missing": 1})
    assert info.value.details == {"exceptionCode": 2, "function": 6}
    assert await dev.read(["u16"]) == {"u16": 0}  # the link is still fine


# ---------------------------------------------------------------------------- through the daemon


async def test_gateway_read_write_and_merged_read(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    async with ModbusServer((1,)) as server:
        await start_plc(gateway, edge_factory, server)

        await gateway.send(
            command("w1", "plc-1", op="write", params={"values": {"i32": -7, "u32": 70000}})
        )
        assert (await gateway.terminal("w1"))["status"] == "completed"
        assert await server.get(1, "holding", 2, 4) == [0xFFFF, 0xFFF9, 70000 & 0xFFFF, 1]

        server.requests.clear()
        points = ["i16", "u16", "i32", "u32", "i64"]  # five contiguous points, registers 0..9
        await gateway.send(command("r1", "plc-1", op="read", params={"points": points}))
        term = await gateway.terminal("r1")
        assert term["status"] == "completed"
        assert term["result"]["values"] == {"i16": 0, "u16": 0, "i32": -7, "u32": 70000, "i64": 0}
        assert [(r.function, r.address, r.count) for r in server.requests] == [(3, 0, 10)]


async def test_gateway_modbus_exception(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    async with ModbusServer((1,)) as server:
        await start_plc(gateway, edge_factory, server)
        await gateway.send(command("x1", "plc-1", op="read", params={"points": ["missing"]}))
        term = await gateway.terminal("x1")
        assert term["type"] == "command_response"
        assert term["status"] == "failed"
        assert term["error"]["code"] == "DEVICE_EXCEPTION"
        assert term["error"]["details"] == {"exceptionCode": 2, "function": 3}


def assert_alternating(frames: Sequence[Frame], timed_out: Collection[int] = ()) -> None:
    """Request, reply from the unit asked, request...; a request to a unit in timed_out may go
    unanswered, and then the next request waits at least the link timeout."""
    wire = [f for f in frames if not f.noise]
    assert wire, "nothing on the wire"
    pending: Frame | None = None
    for frame in wire:
        if frame.direction == "request":
            if pending is not None:
                assert pending.unit in timed_out, f"two requests in a row: {pending} {frame}"
                assert frame.start - pending.end >= TIMEOUT - 0.05
            pending = frame
        else:
            assert pending is not None, f"a reply without a request: {frame}"
            assert frame.unit == pending.unit
            assert frame.start >= pending.end
            pending = None


async def test_three_units_on_one_rtu_line_take_turns(
    rtu: Line, gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    relay = rtu.serial_relay()
    for unit in (1, 2, 3):
        await rtu.server.set(unit, "holding", 1, [unit * 100])
    config = gateway_tree(
        gateway,
        {"rs485": rtu.link()},
        [{"id": f"p{u}", "link": "rs485", "unit": u} for u in (1, 2, 3)],
    )
    await edge_factory(config)
    for unit in (1, 2, 3):
        await gateway.wait(status_of(f"p{unit}", "online"))

    refs = []
    for i in range(4):
        for unit in (1, 2, 3):
            ref = f"c{unit}-{i}"
            refs.append((ref, unit))
            await gateway.send(command(ref, f"p{unit}", op="read", params={"points": ["u16"]}))
    for ref, unit in refs:
        term = await gateway.terminal(ref)
        assert term["status"] == "completed", term
        assert term["result"]["values"] == {"u16": unit * 100}
    assert len([f for f in relay.requests() if f.data[1] == 3]) >= 12
    assert_alternating(relay.frames)


async def test_a_deaf_unit_costs_its_neighbours_one_timeout_then_nothing(
    rtu: Line, gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    relay = rtu.serial_relay()
    relay.deaf_units.add(7)
    link = rtu.link(offline_after=3, reconnect={"initial": "20s", "max": "20s", "jitter": 0})
    config = gateway_tree(
        gateway,
        {"rs485": link},
        [{"id": f"p{u}", "link": "rs485", "unit": u} for u in (1, 2, 7)],
    )
    await edge_factory(config)
    await gateway.wait(status_of("p1", "online"))
    await gateway.wait(status_of("p2", "online"))
    await relay.wait_frames(lambda f: f.unit == 7)  # the start-up probe: failure 1 of 3

    # Two commands to the deaf unit interleaved with its neighbours' commands.
    sent = time.monotonic()
    for ref, dev in (("d1", "p7"), ("n1", "p1"), ("d2", "p7"), ("n2", "p2")):
        await gateway.send(command(ref, dev, op="read", params={"points": ["u16"]}))
    for ref in ("d1", "d2"):
        term = await gateway.terminal(ref)
        assert term["error"]["code"] == "DEVICE_TIMEOUT"
    for ref in ("n1", "n2"):
        assert (await gateway.terminal(ref))["status"] == "completed"
    await gateway.wait(status_of("p7", "offline"))
    # Three timeouts in all (probe + two commands), each followed by the next request within
    # the timeout plus the late-reply wait and scheduling slack.
    deaf = [f for f in relay.requests() if f.unit == 7]
    assert len(deaf) == 3
    for frame in deaf:
        later = [f for f in relay.requests() if f.start > frame.end]
        if later:
            assert later[0].start - frame.end <= TIMEOUT + 0.05 + 0.15
    assert time.monotonic() - sent < 3 * TIMEOUT + 1.0
    assert_alternating(relay.frames, timed_out={7})

    # Offline now: the neighbours no longer wait for it at all.
    mark = len(relay.frames)
    started = time.monotonic()
    await gateway.send(command("d3", "p7", op="read", params={"points": ["u16"]}))
    for i in range(3):
        for dev in ("p1", "p2"):
            await gateway.send(command(f"m{dev}-{i}", dev, op="read", params={"points": ["u16"]}))
    assert (await gateway.terminal("d3"))["error"]["code"] == "DEVICE_OFFLINE"
    for i in range(3):
        for dev in ("p1", "p2"):
            assert (await gateway.terminal(f"m{dev}-{i}"))["status"] == "completed"
    assert time.monotonic() - started < TIMEOUT
    assert all(f.unit != 7 for f in relay.frames[mark:])


async def test_tcp_server_stop_and_restart(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    fast = {
        "timeout": TIMEOUT,
        "health_interval": "200ms",
        "offline_after": 2,
        "reconnect": {"initial": "100ms", "max": "300ms", "jitter": 0},
    }
    async with ModbusServer((1,)) as a, ModbusServer((1,)) as b:
        await a.set(1, "holding", 1, [11])
        await b.set(1, "holding", 1, [22])
        config = gateway_tree(
            gateway,
            {
                "plc-a": {"driver": "modbus-tcp", "host": "127.0.0.1", "port": a.port, **fast},
                "plc-b": {"driver": "modbus-tcp", "host": "127.0.0.1", "port": b.port, **fast},
            },
            [{"id": "a1", "link": "plc-a", "unit": 1}, {"id": "b1", "link": "plc-b", "unit": 1}],
        )
        await edge_factory(config)
        await gateway.wait(status_of("a1", "online"))
        await gateway.wait(status_of("b1", "online"))

        await a.stop()
        sent = time.monotonic()
        await gateway.send(
            command("a-down", "a1", op="read", params={"points": ["u16"]}, timeout=2000)
        )
        term = await gateway.terminal("a-down")
        assert term["status"] == "failed"
        assert term["error"]["code"] in ("IO_ERROR", "DEVICE_OFFLINE")
        assert time.monotonic() - sent < 2.0
        offline = await gateway.wait(status_of("a1", "offline"), timeout=5)
        assert offline[0]["previous"] == "online"

        await gateway.send(
            command("a-off", "a1", op="read", params={"points": ["u16"]}, timeout=2000)
        )
        term = await gateway.terminal("a-off")
        assert term["status"] == "failed"
        assert term["error"]["code"] in ("IO_ERROR", "DEVICE_OFFLINE")
        await gateway.send(command("b-up", "b1", op="read", params={"points": ["u16"]}))
        term = await gateway.terminal("b-up")
        assert term["result"]["values"] == {"u16": 22}
        assert not [
            f
            for f in gateway.frames
            if f["type"] == "device_status" and f["deviceId"] == "b1" and f["status"] != "online"
        ]

        await a.start()  # same port, same data
        back = await gateway.wait(status_of("a1", "online"), count=2, timeout=5)
        assert back[-1]["previous"] == "offline"
        await gateway.send(command("a-up", "a1", op="read", params={"points": ["u16"]}))
        term = await gateway.terminal("a-up")
        assert term["result"]["values"] == {"u16": 11}


# ---------------------------------------------------------------------------- line faults


GARBAGE = {"modbus-rtu": b"\xaa\x81\x55", "modbus-ascii": b":01"}
# Where the check of a frame is: the last CRC byte; the last LRC digit before CR LF (xor 1
# keeps "0".."9" a hex digit, so it is the LRC that fails, not the hex decoding).
CHECK_BYTE = {"modbus-rtu": (-1, 0xFF), "modbus-ascii": (-3, 0x01)}


@pytest.fixture(params=SERIAL)
async def serial_line(request: pytest.FixtureRequest) -> AsyncIterator[Line]:
    """Units 1 and 2 on an RTU or ASCII pty line."""
    async with serve(request.param, units=(1, 2)) as running:
        yield running


async def expect_fault_then_recovery(
    line: Line, dev: ModbusDevice, fault: Callable[[], None], counter: list[int]
) -> None:
    """The transaction hit by the fault fails with DeviceTimeout; the next one reads fresh data."""
    counter[0] += 1
    await line.server.set(1, "holding", 1, [counter[0]])
    fault()
    started = time.monotonic()
    with pytest.raises(DeviceTimeout):
        await dev.read(["u16"])
    assert TIMEOUT - 0.05 <= time.monotonic() - started <= TIMEOUT + 0.2
    counter[0] += 1
    await line.server.set(1, "holding", 1, [counter[0]])
    assert await dev.read(["u16"]) == {"u16": counter[0]}


async def test_serial_faults_fail_only_the_transaction_hit(serial_line: Line) -> None:
    relay = serial_line.serial_relay()
    dev, neighbour = await serial_line.devices([1, 2])
    counter = [0]

    # Noise while the line is idle is dropped before the next request.
    await relay.inject_and_wait_read("reply", b"\x13\x37\xff\x00\x42")
    await relay.inject_and_wait_read("reply", b":zz")
    await serial_line.server.set(1, "holding", 1, [500])
    assert await dev.read(["u16"]) == {"u16": 500}

    garbage = GARBAGE[serial_line.driver]
    index, xor = CHECK_BYTE[serial_line.driver]
    for fault in (
        lambda: relay.prefix("reply", garbage),
        lambda: relay.truncate("reply", 4),
        lambda: relay.corrupt("reply", index, xor),
        lambda: relay.corrupt("request", index, xor),
        lambda: relay.corrupt("reply"),  # ASCII: the frame never ends
        lambda: relay.drop("reply"),
    ):
        await expect_fault_then_recovery(serial_line, dev, fault, counter)
    # The neighbour never noticed.
    await serial_line.server.set(2, "holding", 1, [42])
    assert await neighbour.read(["u16"]) == {"u16": 42}


async def test_a_late_reply_is_not_taken_for_the_next_one(serial_line: Line) -> None:
    relay = serial_line.serial_relay()
    (dev,) = await serial_line.devices([1])
    await serial_line.server.set(1, "holding", 1, [1])
    # The first reply comes 20 ms after the timeout; the second is slow enough that, without the
    # late-reply wait, the first would reach the client while the second request is pending.
    relay.delay("reply", TIMEOUT + 0.02)
    relay.delay("reply", 0.05)
    with pytest.raises(DeviceTimeout):
        await dev.read(["u16"])
    # Same unit, same request shape: only the value tells the stale reply from the fresh one.
    await serial_line.server.set(1, "holding", 1, [2])
    assert await dev.read(["u16"]) == {"u16": 2}
    requests = relay.requests()
    replies = [f for f in relay.frames if f.direction == "reply"]
    assert len(requests) == len(replies) == 2
    # The second request went out only after the late reply had arrived.
    assert requests[1].start > replies[0].end + TIMEOUT + 0.02


def forge_echo(data: bytes) -> bytes:
    """The same RTU or ASCII frame, valid, with the last data bit flipped."""
    framer: FramerBase = (
        FramerAscii(DecodePDU(False)) if data.startswith(b":") else FramerRTU(DecodePDU(False))
    )
    _, unit, _, pdu = framer.decode(data)
    return framer.encode(pdu[:-1] + bytes([pdu[-1] ^ 1]), unit, 0)


async def test_a_wrong_reply_is_an_io_error_and_the_line_recovers(serial_line: Line) -> None:
    relay = serial_line.serial_relay()
    (dev,) = await serial_line.devices([1])
    # The reply to a write comes back well framed, but echoing another value than was written.
    relay.mangle("reply", forge_echo)
    with pytest.raises(DeviceError) as info:
        await dev.write({"u16": 8})
    assert type(info.value) is DeviceError
    assert info.value.code == "IO_ERROR"
    assert "unexpected reply" in info.value.message
    await serial_line.server.set(1, "holding", 1, [9])
    assert await dev.read(["u16"]) == {"u16": 9}


# ---------------------------------------------------------------------------- link and driver


async def test_unreachable_tcp_device_is_a_link_io_error() -> None:
    async with serve("modbus-tcp") as line:
        port = line.server.port
        await line.server.stop()
        config = make_config(
            base_tree(
                links={"l": {"driver": "modbus-tcp", "host": "127.0.0.1", "port": port}},
                profiles={"p": copy.deepcopy(TYPES_PROFILE)},
                devices=[{"id": "d", "profile": "p", "link": "l"}],
            )
        )
        link = registry.get("modbus-tcp").link_class("l", config.links["l"])
        with pytest.raises(LinkIOError, match=f"127.0.0.1:{port}"):
            await link.open()
        assert not link.is_open
        await link.close()
        await link.close()


async def test_missing_serial_port_is_a_link_io_error(tmp_path: Any) -> None:
    config = make_config(
        base_tree(
            links={"l": {"driver": "modbus-rtu", "port": str(tmp_path / "ttyNONE")}},
            profiles={"p": copy.deepcopy(TYPES_PROFILE)},
            devices=[{"id": "d", "profile": "p", "link": "l"}],
        )
    )
    link = registry.get("modbus-rtu").link_class("l", config.links["l"])
    with pytest.raises(LinkIOError):
        await link.open()
    assert not link.is_open


async def test_connection_dropped_mid_transaction_fails_at_once() -> None:
    """A TCP peer that reads the request and hangs up: LinkIOError, without waiting the timeout."""
    got_request = asyncio.Event()
    conns: list[asyncio.StreamWriter] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)
        await reader.read(12)
        got_request.set()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        config = make_config(
            base_tree(
                links={
                    "l": {"driver": "modbus-tcp", "host": "127.0.0.1", "port": port, "timeout": 5}
                },
                profiles={"p": copy.deepcopy(TYPES_PROFILE)},
                devices=[{"id": "d", "profile": "p", "link": "l"}],
            )
        )
        driver = registry.get("modbus-tcp")
        link = driver.link_class("l", config.links["l"])
        dev = driver.device_class(link, config.devices[0], config.profiles["p"])
        await link.open()
        started = time.monotonic()
        with pytest.raises(LinkIOError, match="lost"):
            await dev.read(["u16"])
        assert got_request.is_set()
        assert time.monotonic() - started < 2.0
        assert not link.is_open
        with pytest.raises(LinkIOError):
            await dev.read(["u16"])
        await link.close()
    finally:
        server.close()
        for writer in conns:
            writer.close()
        await server.wait_closed()


async def test_serial_settings_reach_the_port() -> None:
    # Only what every pty accepts: some kernels refuse parity and 7-bit characters on a pty.
    async with serve("modbus-rtu") as line:
        await line.devices([1], baudrate=19200, stopbits=2)
        _iflag, _oflag, cflag, _lflag, ispeed, ospeed, _cc = (
            line.serial_relay().client_line_settings()
        )
        assert (ispeed, ospeed) == (termios.B19200, termios.B19200)
        assert cflag & termios.CSIZE == termios.CS8
        assert cflag & termios.CSTOPB
        assert not cflag & termios.PARENB


async def test_broadcast_on_a_serial_line() -> None:
    async with serve("modbus-rtu", units=(1, 2), broadcast=True) as line:
        relay = line.serial_relay()
        everyone, one = await line.devices([0, 1])
        await everyone.write({"u16": 77})
        # Nobody answers a broadcast; the next transaction on the line still works.
        assert await one.read(["u16"]) == {"u16": 77}
        assert await line.server.get(2, "holding", 1) == [77]
        assert [f.direction for f in relay.frames] == ["request", "request", "reply"]
        assert relay.frames[0].unit == 0
        with pytest.raises(DeviceException, match="broadcast"):
            await everyone.read(["u16"])


async def test_an_aborted_command_stops_before_the_next_transaction(line: Line) -> None:
    (dev,) = await line.devices([1])
    ctx = OperationContext("req-1")
    ctx.abort("cancelled")
    token = set_current_operation(ctx)
    try:
        line.server.requests.clear()
        with pytest.raises(OperationAborted):
            await dev.write({"u16": 5, "i16": 6})
        with pytest.raises(OperationAborted):
            await dev.read(["u16"])
    finally:
        set_current_operation(None)
        del token
    assert line.server.requests == []


async def test_read_limits_from_the_link_config() -> None:
    async with serve("modbus-tcp") as line:
        (dev,) = await line.devices([1], max_gap=0, max_read_registers=4)
        line.server.requests.clear()
        await dev.read(["i16", "i32", "i64", "f32"])  # 0, 2-3, 6-9, 14-15
        assert [(r.address, r.count) for r in line.server.requests] == [
            (0, 1),
            (2, 2),
            (6, 4),
            (14, 2),
        ]
