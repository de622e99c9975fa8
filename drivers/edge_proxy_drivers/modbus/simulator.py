"""The Modbus simulator: a pymodbus server whose units follow their devices' profiles.

Every device on the link becomes one unit (``SimDevice``) of one server, framed as the link's
driver frames (:mod:`.framing`): a ``ModbusTcpServer`` for ``modbus-tcp`` and
``modbus-rtu-over-tcp``, a ``ModbusSerialServer`` on the device end of a serial line for
``modbus-rtu`` and ``modbus-ascii``. Each unit's four tables start at 0 and reach the highest
address its profile's points use; values start at 0 and keep what clients write. Points with a
``simulate:`` rule move: before every request a unit answers, its :class:`Motion` writes each
such point's registers (:func:`~edge_proxy.core.simulation_rules.point_registers`, the point
codec) or bit as the rule gives them at that moment, the clock starting when serving starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from edge_proxy.config import ProfileConfig
from edge_proxy.core import points as pointcodec
from edge_proxy.core import simulation_rules
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


#: The function code that reaches each table in the server's datastore (reads and writes).
_TABLE_FC = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}


class Motion:
    """Moves the ``simulate:`` points of one unit; pymodbus calls :meth:`update` per request."""

    def __init__(self, unit: int, device_id: str, profile: ProfileConfig) -> None:
        self.unit = unit
        self.points = [
            (point, simulation_rules.seed_of(device_id, name))
            for name, point in profile.points.items()
            if point.simulate is not None
        ]
        #: The server's datastore, set once the server is built.
        self.context: SimCore | None = None
        self.started = time.monotonic()
        self._busy = False
        self._failed = False

    async def update(self, *_request: Any) -> None:
        """Write every simulated point as its rule gives it now (the SimDevice ``action``)."""
        if self._busy or self.context is None:
            return  # our own writes below come through here too
        self._busy = True
        try:
            await self._write(self.context, time.monotonic() - self.started)
        except Exception:  # a bug must not stop the server answering
            if not self._failed:
                log.exception("Modbus simulator unit %d: simulated values", self.unit)
            self._failed = True
        finally:
            self._busy = False

    async def _write(self, core: SimCore, t: float) -> None:
        for point, seed in self.points:
            fc = _TABLE_FC[point.table]
            if point.type != "bool":
                words = simulation_rules.point_registers(point, t, seed)
                await core.async_setValues(self.unit, fc, point.address, words)
                continue
            state = simulation_rules.point_bit(point, t, seed)
            if point.bit is None:
                await core.async_setValues(self.unit, fc, point.address, [state])
                continue
            word = await core.async_getValues(self.unit, fc, point.address, 1)
            if isinstance(word, list):
                new = pointcodec.apply_bit(int(word[0]), point.bit, state)
                await core.async_setValues(self.unit, fc, point.address, [new])


def modbus_device(unit: int, profile: ProfileConfig, motion: Motion | None = None) -> SimDevice:
    """A pymodbus SimDevice whose four tables cover every point of the profile."""
    sizes = _block_sizes(profile)
    return SimDevice(
        id=unit,
        action=motion.update if motion is not None and motion.points else None,
        simdata=(
            [SimData(address=0, values=[False] * sizes["coil"], datatype=DataType.BITS)],
            [SimData(address=0, values=[False] * sizes["discrete_input"], datatype=DataType.BITS)],
            [SimData(address=0, count=sizes["holding"], values=0, datatype=DataType.REGISTERS)],
            [SimData(address=0, count=sizes["input"], values=0, datatype=DataType.REGISTERS)],
        ),
    )


class ModbusSimulator(DeviceSimulator):
    """One pymodbus server for the units of one Modbus link."""

    def setup(self) -> None:
        """The simulator's own state."""
        self.framer = framer_for(self.link.driver)
        self.server: ModbusTcpServer | ModbusSerialServer | None = None
        self.motions: list[Motion] = []

    def _units(self) -> list[SimDevice]:
        self.motions = [
            Motion(1 if dev.unit is None else dev.unit, dev.id, profile)
            for dev, profile in self.devices
        ]
        return [
            modbus_device(motion.unit, profile, motion)
            for motion, (_, profile) in zip(self.motions, self.devices, strict=True)
        ]

    def _moving(self, server: ModbusTcpServer | ModbusSerialServer) -> None:
        core = server.context
        for motion in self.motions:
            motion.context = core if isinstance(core, SimCore) else None

    async def _start(self, server: ModbusTcpServer | ModbusSerialServer, failure: str) -> None:
        """Start ``server`` in the background; a bare RuntimeError becomes ``OSError(failure)``."""
        self._moving(server)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"{failure}: {exc}") from exc
        self.server = server

    async def serve_tcp(self, host: str, port: int) -> int:
        """Listen on host:port with the driver's framing; returns the port."""
        # pymodbus logs why a listen failed and raises a bare RuntimeError: ask the OS first.
        ensure_bindable(host, port)
        server = ModbusTcpServer(self._units(), framer=self.framer, address=(host, port))
        await self._start(server, f"cannot listen on {host}:{port}")
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
        await self._start(server, f"cannot open {path}")

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
