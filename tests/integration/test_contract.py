"""Built-in drivers run the driver contract suite of edge_proxy.testing against themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.drivers import registry
from edge_proxy.testing import ContractSetup, DriverContract
from edge_proxy_drivers.simulated import SimulatedDriver
from tests.builders import PILLAR_PROFILE, line_profile
from tests.integration.line_servers import LineTcpServer, PtyLineServer
from tests.integration.support import free_port
from tests.integration.test_modbus import TRANSPORTS, serve


class TestSimulatedDriver(DriverContract):
    @pytest.fixture
    async def contract(self) -> AsyncIterator[ContractSetup]:
        yield ContractSetup(
            driver=SimulatedDriver,
            link=LinkConfig(driver="simulated"),
            device=DeviceConfig(id="sim-1", profile="pillar", link="x"),
            profile=ProfileConfig.model_validate(PILLAR_PROFILE),
            write_values={"brightness": 40, "mode": 3, "relay": True},
        )


# ---------------------------------------------------------------- Modbus, on real servers

MODBUS_PROFILE: dict[str, Any] = {
    "points": {
        "setpoint": {"table": "holding", "address": 10, "access": "rw", "max": 1000},
        "energy": {"table": "holding", "address": 20, "type": "uint32", "access": "rw"},
        "temperature": {"table": "input", "address": 0, "type": "int16", "scale": 0.1},
        "relay": {"table": "coil", "address": 3, "access": "rw"},
        "alarm": {"table": "holding", "address": 30, "bit": 2, "access": "rw"},
    }
}


@pytest.fixture(params=TRANSPORTS)
async def modbus_contract(request: pytest.FixtureRequest) -> AsyncIterator[ContractSetup]:
    """Each Modbus driver against a real pymodbus server (a pty relay for serial ones)."""
    driver_name: str = request.param
    async with serve(driver_name) as running:
        link = LinkConfig.model_validate(running.link())
        if running.relay is not None:
            unreachable = LinkConfig.model_validate(
                {"driver": driver_name, "port": "/dev/no-such-serial-port", "timeout": "300ms"}
            )
        else:
            unreachable = LinkConfig.model_validate(
                {
                    "driver": driver_name,
                    "host": "127.0.0.1",
                    "port": free_port(),
                    "timeout": "300ms",
                }
            )
        yield ContractSetup(
            driver=registry.get(driver_name),
            link=link,
            device=DeviceConfig(id="m-1", profile="p", link="x", unit=1),
            profile=ProfileConfig.model_validate(MODBUS_PROFILE),
            write_values={"setpoint": 321, "energy": 70000, "relay": True, "alarm": True},
            unreachable=unreachable,
        )


class TestModbusDrivers(DriverContract):
    @pytest.fixture
    async def contract(self, modbus_contract: ContractSetup) -> AsyncIterator[ContractSetup]:
        yield modbus_contract


# ---------------------------------------------------------------- line drivers

LINE_PROFILE = line_profile({"request": "PING", "expect": "PONG"})


@pytest.fixture(params=["line-tcp", "line-serial"])
async def line_contract(request: pytest.FixtureRequest) -> AsyncIterator[ContractSetup]:
    """Each line driver against a real pillar-ascii device (TCP server or pty)."""
    if request.param == "line-tcp":
        tcp = LineTcpServer()
        await tcp.start()
        link = LinkConfig.model_validate(
            {"driver": "line-tcp", "host": "127.0.0.1", "port": tcp.port, "timeout": "1s"}
        )
        unreachable = LinkConfig.model_validate(
            {"driver": "line-tcp", "host": "127.0.0.1", "port": free_port()}
        )
        stop = tcp.stop
    else:
        pty_server = PtyLineServer()
        pty_server.start()
        link = LinkConfig.model_validate(
            {"driver": "line-serial", "port": pty_server.slave_path, "timeout": "1s"}
        )
        unreachable = LinkConfig.model_validate(
            {"driver": "line-serial", "port": "/dev/no-such-serial-port"}
        )
        stop = pty_server.stop
    try:
        yield ContractSetup(
            driver=registry.get(request.param),
            link=link,
            device=DeviceConfig(id="l-1", profile="p", link="x"),
            profile=ProfileConfig.model_validate(LINE_PROFILE),
            commands={"SET_BRIGHTNESS": {"brightness": 40}, "STATUS": {}},
            unreachable=unreachable,
        )
    finally:
        await stop()


class TestLineDrivers(DriverContract):
    @pytest.fixture
    async def contract(self, line_contract: ContractSetup) -> AsyncIterator[ContractSetup]:
        yield line_contract
