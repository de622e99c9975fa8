"""Real Modbus devices for tests: pymodbus servers on TCP and on a pseudo-terminal serial line.

* :class:`ModbusServer` runs a pymodbus server (``SimDevice`` / ``SimData`` datastore) for one or
  several unit ids, over TCP (MBAP or RTU framing) on 127.0.0.1, or on a serial port path. It
  records every request it decodes and gives the test the raw registers and bits.
* :class:`SerialRelay` builds a serial line from two ``pty.openpty()`` pairs: the client opens
  :attr:`SerialRelay.client_path`, the server opens :attr:`SerialRelay.server_path`, and the relay
  copies bytes between the two masters. Bytes are grouped into frames by silence, as RTU itself
  delimits them, and every frame is logged with its direction and timestamps. The test can
  inject noise, drop, delay, truncate or corrupt frames, and make a unit id deaf.

Every unit served has the same map: coils and discrete inputs 0..63, holding registers 0..299,
input registers 0..99. Anything else is an illegal data address.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import termios
import tty
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pymodbus.datastore import ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

BITS = 64
HOLDING = 300
INPUTS = 100

# Function codes the server datastore uses to reach each table (reads and writes alike).
_TABLE_FC = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}


def sim_device(unit: int) -> SimDevice:
    """One unit with separate coil, discrete input, holding and input blocks."""
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(address=0, values=[False] * BITS, datatype=DataType.BITS)],
            [SimData(address=0, values=[False] * BITS, datatype=DataType.BITS)],
            [SimData(address=0, count=HOLDING, values=0, datatype=DataType.REGISTERS)],
            [SimData(address=0, count=INPUTS, values=0, datatype=DataType.REGISTERS)],
        ),
    )


@dataclass(frozen=True)
class Request:
    """One request as the server decoded it."""

    unit: int
    function: int
    address: int
    count: int


class ModbusServer:
    """A pymodbus server for tests, with a request log and raw access to its data."""

    def __init__(
        self,
        units: Sequence[int] = (1,),
        *,
        framer: FramerType = FramerType.SOCKET,
        serial_port: str | None = None,
        port: int = 0,
        broadcast: bool = False,
    ) -> None:
        self.units = tuple(units)
        self.broadcast = broadcast
        self.framer = framer
        self.serial_port = serial_port
        self.port = port
        self.requests: list[Request] = []
        self.server: ModbusTcpServer | ModbusSerialServer | None = None
        self._context: ModbusServerContext | SimCore | None = None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            count = pdu.count if pdu.function_code in (1, 2, 3, 4) else len(pdu.registers or [])
            if pdu.function_code in (5, 15):
                count = len(pdu.bits)
            self.requests.append(Request(pdu.dev_id, pdu.function_code, pdu.address, count))
        return pdu

    async def start(self) -> None:
        """Listen (on the same port as before after a stop, keeping the data)."""
        devices = [sim_device(u) for u in self.units]
        server: ModbusTcpServer | ModbusSerialServer
        if self.serial_port is not None:
            server = ModbusSerialServer(
                devices,
                framer=self.framer,
                port=self.serial_port,
                baudrate=9600,
                reconnect_delay=0,
                broadcast_enable=self.broadcast,
                trace_pdu=self._trace_pdu,
            )
        else:
            server = ModbusTcpServer(
                devices,
                framer=self.framer,
                address=("127.0.0.1", self.port),
                broadcast_enable=self.broadcast,
                trace_pdu=self._trace_pdu,
            )
        if self._context is not None:
            # A restarted device keeps its memory, like a real one behind a rebooted gateway.
            server.context = self._context
        await server.serve_forever(background=True)
        self._context = server.context
        self.server = server
        if self.serial_port is None:
            listener = cast(asyncio.Server, server.transport)
            self.port = listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every client connection."""
        server, self.server = self.server, None
        if server is None:
            return
        listener = server.transport
        await server.shutdown()  # type: ignore[no-untyped-call]
        # A listener that lost its port schedules a relisten that shutdown() does not cancel.
        if server.reconnect_task is not None:
            server.reconnect_task.cancel()
            server.reconnect_task = None
        if isinstance(listener, asyncio.Server):
            await listener.wait_closed()

    async def __aenter__(self) -> ModbusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _core(self) -> ModbusServerContext | SimCore:
        if self._context is None:
            raise RuntimeError("the server has never been started")
        return self._context

    async def get(self, unit: int, table: str, address: int, count: int = 1) -> list[int]:
        """Raw registers (or bits as 0/1) straight from the datastore."""
        values = await self._core().async_getValues(unit, _TABLE_FC[table], address, count)
        if not isinstance(values, list):
            raise ValueError(f"unit {unit} has no {table} {address}+{count}: {values!r}")
        return [int(v) for v in values]

    async def set(self, unit: int, table: str, address: int, values: Sequence[int]) -> None:
        """Write raw registers (or bits, from 0/1) straight into the datastore."""
        data: list[int] | list[bool] = (
            [bool(v) for v in values] if table in ("coil", "discrete_input") else list(values)
        )
        result = await self._core().async_setValues(unit, _TABLE_FC[table], address, data)
        if result is not None:
            raise ValueError(f"unit {unit} has no {table} {address}+{len(values)}: {result!r}")


Direction = Literal["request", "reply"]


def _queued(fd: int) -> int:
    """Bytes waiting in a tty's input queue."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(buf, "little")


@dataclass
class Frame:
    """Bytes one side sent in one burst, and what the relay delivered of them."""

    direction: Direction
    data: bytes
    start: float
    end: float
    delivered: bytes | None
    noise: bool = False

    @property
    def unit(self) -> int | None:
        """The unit id of an RTU or ASCII frame."""
        if self.data.startswith(b":") and len(self.data) >= 3:
            try:
                return int(self.data[1:3], 16)
            except ValueError:
                return None
        return self.data[0] if self.data else None


Action = Callable[[bytes], bytes | None]


@dataclass
class _Rule:
    direction: Direction
    action: Action
    remaining: int
    match: Callable[[bytes], bool] = field(default=lambda _data: True)
    delay: float = 0.0


class SerialRelay:
    """Two pseudo-terminal pairs joined by a relay the test controls."""

    def __init__(self, gap: float = 0.003, baud: int | None = None) -> None:
        self.gap = gap
        #: when set, each frame is delivered only after the time it takes on a line of this
        #: speed (10 bits a byte), as on a real RS-485 bus; a pty itself has no speed
        self.baud = baud
        self.frames: list[Frame] = []
        self.deaf_units: set[int] = set()
        self._rules: list[_Rule] = []
        self._client_master, self._client_slave = pty.openpty()
        self._server_master, self._server_slave = pty.openpty()
        for fd in (self._client_slave, self._server_slave):
            # Until pyserial configures the port, the default line discipline would echo bytes
            # back to the relay and mangle them.
            tty.setraw(fd)
        self.client_path = os.ttyname(self._client_slave)
        self.server_path = os.ttyname(self._server_slave)
        self._pending: dict[Direction, bytearray] = {"request": bytearray(), "reply": bytearray()}
        self._pending_start: dict[Direction, float] = {"request": 0.0, "reply": 0.0}
        self._flush: dict[Direction, asyncio.TimerHandle | None] = {"request": None, "reply": None}
        self._later: set[asyncio.TimerHandle] = set()
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._closed = False
        for fd, direction in ((self._client_master, "request"), (self._server_master, "reply")):
            os.set_blocking(fd, False)
            self._loop.add_reader(fd, self._readable, fd, cast(Direction, direction))

    def _target(self, direction: Direction) -> int:
        return self._server_master if direction == "request" else self._client_master

    def _readable(self, fd: int, direction: Direction) -> None:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EIO: nobody has the slave open right now; nothing to relay.
            return
        if not data:
            return
        now = self._loop.time()
        if not self._pending[direction]:
            self._pending_start[direction] = now
        self._pending[direction] += data
        handle = self._flush[direction]
        if handle is not None:
            handle.cancel()
        self._flush[direction] = self._loop.call_later(self.gap, self._frame_done, direction)

    def _frame_done(self, direction: Direction) -> None:
        self._flush[direction] = None
        data = bytes(self._pending[direction])
        self._pending[direction].clear()
        frame = Frame(direction, data, self._pending_start[direction], self._loop.time(), data)
        delay = 0.0
        if direction == "request" and frame.unit in self.deaf_units:
            frame.delivered = None
        else:
            for rule in self._rules:
                if rule.direction == direction and rule.remaining > 0 and rule.match(data):
                    rule.remaining -= 1
                    frame.delivered = rule.action(data)
                    delay = rule.delay
                    break
            self._rules = [r for r in self._rules if r.remaining > 0]
        if self.baud:
            delay += len(data) * 10 / self.baud
        self.frames.append(frame)
        self._changed.set()
        if frame.delivered:
            if delay > 0:
                handle = self._loop.call_later(delay, self._write_later, direction, frame.delivered)
                self._later.add(handle)
            else:
                self._write(self._target(direction), frame.delivered)

    def _write_later(self, direction: Direction, data: bytes) -> None:
        self._later = {h for h in self._later if not h.cancelled() and h.when() > self._loop.time()}
        if not self._closed:
            self._write(self._target(direction), data)

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    # ------------------------------------------------------------------ test controls

    def inject(self, direction: Direction, data: bytes) -> None:
        """Put noise on the line now, towards the server ("request") or the client ("reply")."""
        now = self._loop.time()
        self.frames.append(Frame(direction, data, now, now, data, noise=True))
        self._write(self._target(direction), data)

    async def inject_and_wait_read(
        self, direction: Direction, data: bytes, timeout: float = 2.0
    ) -> None:
        """Put noise on an idle line and return once the receiving side has read it.

        The relay keeps the slave ends open but never reads them, so the slave's input queue
        empties only when the client (or server) process reads.
        """
        slave = self._server_slave if direction == "request" else self._client_slave
        self.inject(direction, data)
        deadline = self._loop.time() + timeout
        # The pty hands the bytes to the slave side from a kernel worker; until they are
        # queued there, an empty queue would mean "not arrived yet", not "already read".
        # Nothing in this process can read them before the next await.
        while _queued(slave) < len(data):
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise TimeoutError("the noise never reached the other end of the pty")
            select.select([slave], [], [], remaining)
        while _queued(slave):
            if self._loop.time() > deadline:
                raise TimeoutError("nobody read the noise")
            await asyncio.sleep(0)

    def mangle(
        self,
        direction: Direction,
        action: Action,
        *,
        count: int = 1,
        match: Callable[[bytes], bool] | None = None,
        delay: float = 0.0,
    ) -> None:
        """Pass the next ``count`` matching frames through action (None drops the frame)."""
        rule = _Rule(direction, action, count, delay=delay)
        if match is not None:
            rule.match = match
        self._rules.append(rule)

    def drop(self, direction: Direction, count: int = 1) -> None:
        """Lose the next frame(s) in one direction."""
        self.mangle(direction, lambda _data: None, count=count)

    def corrupt(self, direction: Direction, index: int = -1, xor: int = 0xFF) -> None:
        """Flip bits of one byte of the next frame (by default the last: the RTU CRC)."""

        def flip(data: bytes) -> bytes:
            out = bytearray(data)
            out[index] ^= xor
            return bytes(out)

        self.mangle(direction, flip)

    def truncate(self, direction: Direction, keep: int) -> None:
        """Deliver only the first ``keep`` bytes of the next frame."""
        self.mangle(direction, lambda d: d[:keep])

    def prefix(self, direction: Direction, garbage: bytes) -> None:
        """Glue garbage in front of the next frame, as line noise just before it would."""
        self.mangle(direction, lambda d: garbage + d)

    def delay(self, direction: Direction, seconds: float) -> None:
        """Deliver the next frame late."""
        self.mangle(direction, lambda d: d, delay=seconds)

    def client_line_settings(self) -> list[Any]:
        """The termios attributes the client set on its end of the line."""
        return termios.tcgetattr(self._client_slave)

    def requests(self) -> list[Frame]:
        """Frames the client sent (noise excluded)."""
        return [f for f in self.frames if f.direction == "request" and not f.noise]

    async def wait_frames(
        self, pred: Callable[[Frame], bool], count: int = 1, timeout: float = 5.0
    ) -> list[Frame]:
        """Wait until ``count`` logged frames match pred; return them."""

        async def waiter() -> list[Frame]:
            while True:
                found = [f for f in self.frames if pred(f)]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(waiter(), timeout)

    def close(self) -> None:
        """Stop relaying and close every descriptor."""
        if self._closed:
            return
        self._closed = True
        for handle in [*self._flush.values(), *self._later]:
            if handle is not None:
                handle.cancel()
        for fd in (self._client_master, self._server_master):
            self._loop.remove_reader(fd)
        for fd in (
            self._client_master,
            self._server_master,
            self._client_slave,
            self._server_slave,
        ):
            os.close(fd)
