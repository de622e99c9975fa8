"""The drivers against the simulator: edge-proxy's contract suite, then the STX-specific cases."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.drivers import OperationContext, set_current_operation
from edge_proxy.errors import (
    DeviceException,
    DeviceTimeout,
    DriverError,
    LinkIOError,
    OperationAborted,
    RequestError,
)
from edge_proxy.testing import ContractSetup, DriverContract
from edge_proxy_stx import (
    StxDevice,
    StxSerialDriver,
    StxSerialLink,
    StxTcpDriver,
    StxTcpLink,
    profile_problems,
)
from edge_proxy_stx.simulator import DEMO_READ_ONLY, DEMO_REGISTERS, StxSimulator

#: The walkthrough's boiler controller, as a profile.
BOILER: dict[str, Any] = {
    "points": {
        "setpoint": {"address": 0x10, "access": "rw", "scale": 0.1, "min": 5, "max": 80},
        "flow_temp": {"address": 0x20, "scale": 0.1},
        "pump": {"address": 0x30, "access": "rw", "min": 0, "max": 1},
        "fault_code": {"address": 0x31},
        "offset_trim": {"address": 0x40, "type": "int16", "access": "rw"},
        "missing": {"address": 0x1234},
    },
}
DEVICE = DeviceConfig(id="boiler-1", profile="boiler", link="stx")
TIMEOUT = 0.3


def boiler() -> ProfileConfig:
    """The boiler profile, validated."""
    return ProfileConfig.model_validate(BOILER)


def closed_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def tcp_link(port: int) -> LinkConfig:
    """An stx-tcp link to the local port."""
    return LinkConfig.model_validate(
        {"driver": "stx-tcp", "host": "127.0.0.1", "port": port, "timeout": TIMEOUT}
    )


@pytest.fixture
async def simulator() -> AsyncIterator[StxSimulator]:
    """The boiler controller on a local TCP port."""
    sim = StxSimulator(DEMO_REGISTERS, read_only=DEMO_READ_ONLY)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def device(simulator: StxSimulator) -> AsyncIterator[StxDevice]:
    """A boiler device on an open stx-tcp link to the simulator."""
    link = StxTcpLink("stx", tcp_link(simulator.port))
    await link.open()
    yield StxDevice(link, DEVICE, boiler())
    await link.close()


class TestStxTcpContract(DriverContract):
    """edge-proxy's driver contract, stx-tcp against the simulator."""

    @pytest.fixture
    async def contract(self, simulator: StxSimulator) -> AsyncIterator[ContractSetup]:
        """The simulator, a boiler profile without its missing register, a closed port."""
        profile = dict(BOILER, points=dict(BOILER["points"]))
        del profile["points"]["missing"]
        yield ContractSetup(
            driver=StxTcpDriver,
            link=tcp_link(simulator.port),
            device=DEVICE,
            profile=ProfileConfig.model_validate(profile),
            write_values={"setpoint": 42.5, "pump": 0, "offset_trim": -3},
            unreachable=tcp_link(closed_port()),
        )


class TestStxSerialContract(DriverContract):
    """edge-proxy's driver contract, stx-serial against the simulator on a pseudo-terminal."""

    @pytest.fixture
    async def contract(self, tmp_path: Path) -> AsyncIterator[ContractSetup]:
        """The simulator behind a pty, and a serial port path that does not exist."""
        sim = StxSimulator(DEMO_REGISTERS, read_only=DEMO_READ_ONLY)
        path = sim.open_pty()
        yield ContractSetup(
            driver=StxSerialDriver,
            link=LinkConfig(driver="stx-serial", port=path, baudrate=19200, timeout=TIMEOUT),
            device=DEVICE,
            profile=ProfileConfig.model_validate(
                {"points": {"setpoint": BOILER["points"]["setpoint"]}}
            ),
            write_values={"setpoint": 60},
            unreachable=LinkConfig(driver="stx-serial", port=str(tmp_path / "no-such-tty")),
        )
        await sim.stop()


async def test_read_sends_one_frame_per_register(
    device: StxDevice, simulator: StxSimulator
) -> None:
    """Each register is read once, in order, and decoded with the point's scale."""
    values = await device.read(["setpoint", "flow_temp", "pump", "fault_code"])
    assert values == {"setpoint": 21.5, "flow_temp": 19.8, "pump": 1, "fault_code": 0}
    assert simulator.requests == [b"R0010", b"R0020", b"R0030", b"R0031"]


async def test_write_sends_the_raw_register(device: StxDevice, simulator: StxSimulator) -> None:
    """An engineering value is written as its raw register, then reads back the same."""
    await device.write({"setpoint": 42.5, "offset_trim": -3})
    assert simulator.requests == [b"W0010=01A9", b"W0040=FFFD"]
    assert simulator.registers[0x10] == 425
    assert simulator.registers[0x40] == 0xFFFD
    assert await device.read(["setpoint", "offset_trim"]) == {"setpoint": 42.5, "offset_trim": -3}


async def test_a_value_that_does_not_fit_is_refused_before_sending(
    device: StxDevice, simulator: StxSimulator
) -> None:
    """A value outside the point's range is an INVALID_PARAMETERS error; nothing is sent."""
    with pytest.raises(RequestError, match="above the maximum") as info:
        await device.write({"setpoint": 81})
    assert info.value.code == "INVALID_PARAMETERS"
    await device.read(["pump"])  # a round trip: anything sent before it has arrived
    assert simulator.requests == [b"R0030"]


async def test_error_reply_is_a_device_exception(
    device: StxDevice, simulator: StxSimulator
) -> None:
    """E2 and E3 replies fail the operation with their code; the link stays usable."""
    with pytest.raises(DeviceException, match=r"refused R1234: E2 \(no such register\)") as info:
        await device.read(["missing"])
    assert info.value.code == "DEVICE_EXCEPTION"
    assert info.value.details == {"code": "2", "request": "R1234"}

    simulator.read_only.add(0x10)
    with pytest.raises(DeviceException, match=r"E3 \(register is read-only\)"):
        await device.write({"setpoint": 30})
    assert simulator.registers[0x10] == 215

    assert device.link.is_open
    assert await device.read(["pump"]) == {"pump": 1}
    assert simulator.connections == 1


async def test_bad_checksum_is_a_device_exception(
    device: StxDevice, simulator: StxSimulator
) -> None:
    """A reply with a bad checksum fails that read only; the next one works."""
    simulator.corrupt_next = True
    with pytest.raises(DeviceException, match="bad checksum") as info:
        await device.read(["setpoint"])
    assert info.value.details["expected"] != info.value.details["received"]
    assert await device.read(["setpoint"]) == {"setpoint": 21.5}
    assert simulator.connections == 1


async def test_noise_before_the_reply_is_skipped(
    device: StxDevice, simulator: StxSimulator
) -> None:
    """Line noise in front of a reply's STX does not disturb the read."""
    simulator.noise_next = b"\xff\x00\x13junk"
    assert await device.read(["flow_temp"]) == {"flow_temp": 19.8}
    assert device.link.frames.skipped == 7


async def test_no_reply_is_a_device_timeout(device: StxDevice, simulator: StxSimulator) -> None:
    """A silent device times out after the link timeout; the link reconnects afterwards."""
    simulator.silent = True
    started = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"did not answer R0010 within 0.3s") as info:
        await device.read(["setpoint"])
    elapsed = time.monotonic() - started
    assert TIMEOUT <= elapsed < TIMEOUT + 1.0
    assert info.value.code == "DEVICE_TIMEOUT"
    # The reply may still come: the connection is dropped so it cannot answer a later request.
    assert not device.link.is_open

    simulator.silent = False
    await device.link.open()
    assert await device.read(["setpoint"]) == {"setpoint": 21.5}
    assert simulator.connections == 2


async def test_connection_loss_is_a_link_io_error(
    device: StxDevice, simulator: StxSimulator
) -> None:
    """A device that hangs up fails the operation with IO_ERROR and leaves the link closed."""
    simulator.hang_up_next = True
    with pytest.raises(LinkIOError, match="connection closed by the device") as info:
        await device.read(["setpoint"])
    assert info.value.code == "IO_ERROR"
    assert not device.link.is_open
    with pytest.raises(LinkIOError, match="not connected"):
        await device.read(["setpoint"])


async def test_unreachable_device_is_a_link_io_error() -> None:
    """Connecting to a port nobody listens on is an IO_ERROR that names the link."""
    link = StxTcpLink("stx", tcp_link(closed_port()))
    with pytest.raises(LinkIOError, match="link stx: cannot connect"):
        await link.open()
    assert not link.is_open


async def test_checkpoint_before_each_frame(device: StxDevice, simulator: StxSimulator) -> None:
    """A command cancelled while its first frame is answered sends no second frame."""
    ctx = OperationContext("cmd-1")
    simulator.on_request = lambda payload: ctx.abort("cancelled")
    set_current_operation(ctx)
    try:
        with pytest.raises(OperationAborted, match="cancelled"):
            await device.read(["setpoint", "flow_temp"])
    finally:
        set_current_operation(None)
    simulator.on_request = None
    assert await device.read(["pump"]) == {"pump": 1}
    assert simulator.requests == [b"R0010", b"R0030"]


async def test_cancelled_transaction_drops_the_connection(
    device: StxDevice, simulator: StxSimulator
) -> None:
    """A transaction cancelled while it waits for its reply closes the connection."""
    simulator.silent = True
    arrived = asyncio.Event()
    simulator.on_request = lambda payload: arrived.set()
    read = asyncio.ensure_future(device.read(["setpoint"]))
    await asyncio.wait_for(arrived.wait(), 5.0)
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    assert not device.link.is_open


async def test_unsupported_points_are_refused(simulator: StxSimulator) -> None:
    """Coils and multi-register types are named in one DriverError; nothing is sent."""
    profile = ProfileConfig.model_validate(
        {
            "points": {
                "setpoint": {"address": 0x10},
                "relay": {"table": "coil", "address": 0},
                "energy": {"address": 0x50, "type": "uint32"},
            }
        }
    )
    assert profile_problems(profile) == [
        "points.relay: table coil is not supported (STX devices have holding registers only)",
        "points.energy: type uint32 is not supported (one register: uint16 or int16)",
    ]
    link = StxTcpLink("stx", tcp_link(simulator.port))
    await link.open()
    try:
        device = StxDevice(link, DEVICE, profile)
        with pytest.raises(DriverError, match=r"does not fit the STX driver: points\.relay"):
            await device.read(["setpoint"])
        with pytest.raises(DriverError, match=r"points\.energy"):
            await device.write({"setpoint": 1})
    finally:
        await link.close()
    assert simulator.requests == []
    assert profile_problems(boiler()) == []


def test_check_link() -> None:
    """stx-tcp needs a host and a port number; stx-serial a device path."""
    assert StxTcpDriver.check_link(LinkConfig(driver="stx-tcp")) == [
        ".host: driver 'stx-tcp' needs a host",
        ".port: driver 'stx-tcp' needs a port",
    ]
    assert StxTcpDriver.check_link(tcp_link(15020)) == []
    serial = LinkConfig(driver="stx-serial", port=4001)
    assert StxSerialDriver.check_link(serial) == [
        ".port: a serial driver needs a device path (got 4001)"
    ]
    assert StxSerialDriver.link_class is StxSerialLink
