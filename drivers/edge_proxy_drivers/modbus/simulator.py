"""The Modbus simulator: a pymodbus server whose units follow their devices' profiles.

Every device on the link becomes one unit (``SimDevice``) of one server, framed as the link's
driver frames (:mod:`.framing`): a ``ModbusTcpServer`` for ``modbus-tcp`` and
``modbus-rtu-over-tcp``, a ``ModbusSerialServer`` on the device end of a serial line for
``modbus-rtu`` and ``modbus-ascii``. Each unit's four tables start at 0 and reach the highest
address its profile's points use; values start at 0 and keep what clients write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.core import points as pointcodec
from edge_proxy.drivers import DeviceSimulator
from edge_proxy.drivers.simulation import ensure_bindable
from edge_proxy_drivers.modbus.framing import framer_for

log = logging.getLogger(__name__)


def _block_sizes(profile: ProfileConfig) -> dict[str, int]:
    sizes = {"coil": 1, "discrete_input": 1, "holding": 1, "input": 1}
    for point in profile.points.values():
        end = point.address + pointcodec.register_count(point)
        sizes[point.table] = max(sizes[point.table], end)
    return sizes


def modbus_device(unit: int, profile: ProfileConfig) -> SimDevice:
    """A pymodbus SimDevice whose four tables cover every point of the profile."""
    sizes = _block_sizes(profile)
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(address=0, values=[False] * sizes["coil"], datatype=DataType.BITS)],
            [SimData(address=0, values=[False] * sizes["discrete_input"], datatype=DataType.BITS)],
            [SimData(address=0, count=sizes["holding"], values=0, datatype=DataType.REGISTERS)],
            [SimData(address=0, count=sizes["input"], values=0, datatype=DataType.REGISTERS)],
        ),
    )


class ModbusSimulator(DeviceSimulator):
    """One pymodbus server for the units of one Modbus link."""

    def __init__(
        self,
        link_name: str,
        link: LinkConfig,
        devices: Sequence[tuple[DeviceConfig, ProfileConfig]],
    ) -> None:
        super().__init__(link_name, link, devices)
        self.framer = framer_for(link.driver)
        self.server: ModbusTcpServer | ModbusSerialServer | None = None

    def _units(self) -> list[SimDevice]:
        return [
            modbus_device(1 if dev.unit is None else dev.unit, profile)
            for dev, profile in self.devices
        ]

    async def serve_tcp(self, host: str, port: int) -> int:
        """Listen on host:port with the driver's framing; returns the port."""
        # pymodbus logs why a listen failed and raises a bare RuntimeError: ask the OS first.
        ensure_bindable(host, port)
        server = ModbusTcpServer(self._units(), framer=self.framer, address=(host, port))
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {host}:{port}: {exc}") from exc
        self.server = server
        listener = server.transport
        assert isinstance(listener, asyncio.Server)
        return int(listener.sockets[0].getsockname()[1])

    async def serve_serial(self, path: str) -> None:
        """Open the serial port ``path`` as the units' end of the line."""
        # pyserial takes 1.5 too; the one-sided stub of pymodbus says int
        stopbits: Any = self.link.stopbits
        if float(stopbits).is_integer():
            stopbits = int(stopbits)
        server = ModbusSerialServer(
            self._units(),
            framer=self.framer,
            port=path,
            baudrate=self.link.baudrate,
            bytesize=self.link.bytesize,
            parity=self.link.parity,
            stopbits=stopbits,
            reconnect_delay=0,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"cannot open {path}: {exc}") from exc
        self.server = server

    async def stop_serving(self) -> None:
        """Shut the server down, with every client connection."""
        server, self.server = self.server, None
        if server is None:
            return
        listener = server.transport
        try:
            await server.shutdown()  # type: ignore[no-untyped-call]
        except (OSError, RuntimeError) as exc:
            log.warning("Modbus simulator of link %s: shutdown: %s", self.link_name, exc)
        # A listener that lost its port schedules a relisten that shutdown() does not cancel.
        if server.reconnect_task is not None:
            server.reconnect_task.cancel()
            server.reconnect_task = None
        if isinstance(listener, asyncio.Server):
            with contextlib.suppress(OSError):
                await listener.wait_closed()
