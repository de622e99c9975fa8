"""Modbus drivers: ``modbus-tcp``, ``modbus-rtu-over-tcp``, ``modbus-rtu`` and ``modbus-ascii``.

Theory of operation
-------------------
A :class:`ModbusLink` wraps one pymodbus asyncio client (TCP or serial). pymodbus' own
reconnect (``reconnect_delay=0``) and retries (``retries=0``) are off: the core's
``LinkRuntime`` decides when to reconnect and with which backoff, and a retry is the caller's
choice. Every transaction goes through :meth:`ModbusLink.transaction`, which

* calls :func:`~edge_proxy.drivers.checkpoint` first, so a cancelled command stops between two
  transactions and never in the middle of one;
* times the transaction itself (``timeout`` of the link) and races it against the loss of the
  connection, so a dropped TCP connection fails the transaction at once with ``LinkIOError``
  instead of waiting for the timeout;
* turns the outcome into the exceptions of :mod:`edge_proxy.errors`: an exception response is
  ``DeviceException`` (with the exception code), no answer is ``DeviceTimeout``, a lost or
  closed connection is ``LinkIOError`` and a reply that does not fit the request is
  ``DeviceError`` (``IO_ERROR``).

Late replies. RTU and ASCII frames carry no transaction id. pymodbus 3.16 clears its receive
buffer before each request, ignores a frame that arrives while no request is pending, and skips
a frame from another unit than the one asked; but a late reply from the *same* unit that lands
after the next request went out would be taken as that request's answer. So after a timeout
(or an unexpected reply) on an RTU/ASCII link, the next transaction *to that unit* first waits
until ``late_reply_wait`` (default 50 ms, never more than the link timeout) has passed since
the timeout and the line has been quiet for a few character times; a late reply is received
and dropped meanwhile. Other units are not held up. Every reply is also checked against its
request (function code, echoed address and value, register count).

Unit 0 on a serial line is the broadcast address: writes are sent without waiting for a reply,
the next request waits ``broadcast_turnaround`` (default 100 ms) so the units can act on it, and
reads are refused.

Driver link keys, beyond the core's: ``max_gap`` (registers a merged read may span that no
point asked for, default 8; 0 for devices that refuse reads across holes),
``max_read_registers`` (default 125), ``max_read_bits`` (default 2000), ``late_reply_wait`` and
``broadcast_turnaround``.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from edge_proxy.config import LinkConfig, PointConfig, parse_duration
from edge_proxy.core import points as codec
from edge_proxy.drivers import Device, Driver, Link, checkpoint, current_operation
from edge_proxy.errors import (
    DeviceError,
    DeviceException,
    DeviceTimeout,
    LinkIOError,
)

log = logging.getLogger(__name__)

#: Function codes by table, for reads.
READ_FUNCTIONS: dict[str, int] = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}

EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

#: Shortest silence that counts as "the line is idle" (3.5 character times is the RTU minimum;
#: OS and USB adapters add far more jitter than that).
MIN_QUIET = 0.02
#: Default of the ``late_reply_wait`` link key.
LATE_REPLY_WAIT = 0.05
#: Default of the ``broadcast_turnaround`` link key (the serial line spec suggests 100-200 ms).
BROADCAST_TURNAROUND = 0.1

# Modbus limits per request (FC3/FC4 read 125 registers, FC1/FC2 read 2000 bits).
_MAX_REGISTERS = 125
_MAX_BITS = 2000
_DEFAULT_GAP = 8

Call = Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]
#: A write request given the client, the unit and whether it is a broadcast (no reply).
WriteCall = Callable[[ModbusBaseClient, int, bool], Awaitable[ModbusPDU]]


def exception_name(code: int) -> str:
    """The standard name of a Modbus exception code."""
    return EXCEPTION_NAMES.get(code, f"exception {code}")


class ModbusLink(Link):
    """One pymodbus client: a TCP connection or a serial port shared by several units."""

    #: How frames are delimited on this link.
    framer: ClassVar[FramerType] = FramerType.SOCKET

    def __init__(self, name: str, config: LinkConfig) -> None:
        super().__init__(name, config)
        self.client: ModbusBaseClient | None = None
        self.timeout = float(config.timeout)
        extra = config.extra_keys
        self.max_gap = int(extra.get("max_gap", _DEFAULT_GAP))
        self.max_registers = int(extra.get("max_read_registers", _MAX_REGISTERS))
        self.max_bits = int(extra.get("max_read_bits", _MAX_BITS))
        self.late_reply_wait = min(
            self.timeout, parse_duration(extra.get("late_reply_wait", LATE_REPLY_WAIT))
        )
        self.broadcast_turnaround = parse_duration(
            extra.get("broadcast_turnaround", BROADCAST_TURNAROUND)
        )
        self._lost: asyncio.Future[None] | None = None
        self._last_rx = 0.0
        # Set after a timeout or a mismatched reply on a link without transaction ids: the unit
        # whose late reply may still come, and when its transaction was given up.
        self._dirty: tuple[int, float] | None = None
        self._hold_until = 0.0

    # ------------------------------------------------------------------ connection

    @property
    def is_open(self) -> bool:
        """Whether the client is connected right now."""
        return self.client is not None and self.client.connected

    @property
    def has_transaction_ids(self) -> bool:
        """Whether replies carry a transaction id (Modbus TCP framing)."""
        return self.framer == FramerType.SOCKET

    @property
    def broadcast_unit_zero(self) -> bool:
        """Whether unit 0 is the broadcast address (serial lines) rather than a plain id."""
        return False

    @abstractmethod
    def describe(self) -> str:
        """Where the link connects to, for messages."""

    def connect_failure(self) -> str:
        """Why connect() returned False (pymodbus logs the OS error but does not raise it)."""
        return f"{self.describe()}: connection refused or host unreachable"

    @abstractmethod
    def make_client(self, trace_connect: Callable[[bool], None]) -> ModbusBaseClient:
        """A new, unconnected pymodbus client for this link."""

    def quiet_time(self) -> float:
        """How long the line must be silent before it counts as idle."""
        return MIN_QUIET

    def _client_timeout(self) -> float:
        # pymodbus uses one timeout for connecting and for each request; ours fires first for
        # requests, so theirs is only a backstop there, and bounds a connect attempt.
        connect = self.config.connect_timeout or self.config.timeout
        return max(float(connect), self.timeout * 2 + 1.0)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._last_rx = asyncio.get_running_loop().time()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("link %s: %s %s", self.name, "tx" if sending else "rx", data.hex(" "))
        return data

    async def open(self) -> None:
        """Connect; LinkIOError when the port or the host cannot be reached."""
        if self.is_open:
            return
        await self.close()
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_connect(connected: bool) -> None:
            # Only an unexpected loss reaches here: pymodbus stays silent on our own close().
            if not connected and not lost.done():
                lost.set_result(None)

        client = self.make_client(on_connect)
        # Timeouts are ours (see transaction); never let pymodbus drop the connection after
        # a run of unanswered requests, which on a shared gateway would hit healthy units too.
        client.set_max_no_responses(1 << 30)
        try:
            connected = await asyncio.wait_for(client.connect(), self._connect_timeout())
        except asyncio.TimeoutError as exc:
            client.close()
            raise LinkIOError(f"connecting to {self.describe()} timed out") from exc
        except Exception as exc:
            # pymodbus catches OSError only; pyserial also raises termios.error (a port that
            # refuses the line settings) and ValueError (settings it does not know).
            client.close()
            raise LinkIOError(f"cannot open {self.describe()}: {exc}") from exc
        except BaseException:
            client.close()
            raise
        if not connected or not client.connected:
            client.close()
            raise LinkIOError(self.connect_failure())
        self.client = client
        self._lost = lost
        self._dirty = None
        log.debug("link %s: connected to %s", self.name, self.describe())

    def _connect_timeout(self) -> float:
        return float(self.config.connect_timeout or self.config.timeout)

    async def close(self) -> None:
        """Close the client; a closed link stays closed."""
        client, self.client = self.client, None
        self._lost = None
        if client is not None:
            client.close()

    # ------------------------------------------------------------------ transactions

    async def _wait_quiet(self, unit: int) -> None:
        """Leave the line quiet where needed before the next request.

        After a broadcast every unit gets its turnaround time; before asking a unit that timed
        out again, its late reply gets the time to arrive and be dropped.
        """
        loop = asyncio.get_running_loop()
        if self._hold_until > loop.time():
            await asyncio.sleep(self._hold_until - loop.time())
        if self._dirty is None or self._dirty[0] != unit:
            return
        since = self._dirty[1]
        self._dirty = None
        quiet = self.quiet_time()
        deadline = loop.time() + self.timeout
        while True:
            now = loop.time()
            wait = max(since + self.late_reply_wait, self._last_rx + quiet) - now
            if wait <= 0 or now >= deadline:
                return
            await asyncio.sleep(min(wait, deadline - now))

    def _mark_dirty(self, unit: int) -> None:
        if not self.has_transaction_ids:
            self._dirty = (unit, asyncio.get_running_loop().time())

    async def transaction(
        self, unit: int, call: Call, what: str, *, reply: bool = True
    ) -> ModbusPDU | None:
        """Run one request/response with a unit and return the reply (None if reply=False).

        ``what`` describes the request in messages ("unit 3 FC3 holding 100+2").
        """
        checkpoint()
        client, lost = self.client, self._lost
        if client is None or lost is None or not client.connected:
            raise LinkIOError(f"not connected to {self.describe()}")
        await self._wait_quiet(unit)
        if not reply:
            try:
                await call(client)
            except (ConnectionException, OSError) as exc:
                raise LinkIOError(f"{self.describe()}: {what}: {exc}") from exc
            # Nobody answers a broadcast; the units need time to act on it before the next
            # request, and a request sent right behind it would be read as part of it.
            self._hold_until = asyncio.get_running_loop().time() + self.broadcast_turnaround
            return None
        task: asyncio.Future[ModbusPDU] = asyncio.ensure_future(call(client))
        waiting: set[asyncio.Future[Any]] = {task, lost}
        try:
            done, _ = await asyncio.wait(
                waiting, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not task.done():
                # An abandoned pymodbus request releases its lock and drops its reply future
                # when cancelled, so a reply that still arrives is ignored.
                task.cancel()
        if task in done:
            try:
                return task.result()
            except ModbusIOException as exc:
                if not client.connected:
                    raise LinkIOError(
                        f"connection to {self.describe()} lost during {what}"
                    ) from exc
                if "No response" in str(exc):  # pymodbus' own timeout (a backstop only)
                    self._mark_dirty(unit)
                    raise DeviceTimeout(f"{what}: no answer within {self.timeout:g}s") from exc
                raise LinkIOError(f"{self.describe()}: {what}: {exc}") from exc
            except (ConnectionException, OSError) as exc:
                raise LinkIOError(f"{self.describe()}: {what}: {exc}") from exc
            except ModbusException as exc:
                raise DeviceError(f"{what}: {exc}") from exc
        if lost in done or not client.connected:
            raise LinkIOError(f"connection to {self.describe()} lost during {what}")
        self._mark_dirty(unit)
        raise DeviceTimeout(f"{what}: no answer within {self.timeout:g}s")

    def reply_mismatch(self, unit: int, what: str, detail: str) -> DeviceError:
        """The error for a reply that does not answer the request (its own may still come)."""
        self._mark_dirty(unit)
        return DeviceError(f"{what}: unexpected reply ({detail})")


class ModbusTcpLink(ModbusLink):
    """Modbus TCP (MBAP framing) to a device or a TCP gateway."""

    framer = FramerType.SOCKET

    def describe(self) -> str:
        """host:port."""
        return f"{self.config.host}:{self.config.port}"

    def make_client(self, trace_connect: Callable[[bool], None]) -> ModbusBaseClient:
        """An AsyncModbusTcpClient without reconnect or retries."""
        port = self.config.port
        assert self.config.host is not None and isinstance(port, int)
        return AsyncModbusTcpClient(
            self.config.host,
            port=port,
            framer=self.framer,
            name=self.name,
            reconnect_delay=0,
            timeout=self._client_timeout(),
            retries=0,
            trace_packet=self._trace_packet,
            trace_connect=trace_connect,
        )


class ModbusRtuOverTcpLink(ModbusTcpLink):
    """RTU frames (CRC, no MBAP header) over TCP, as serial-to-Ethernet converters send them."""

    framer = FramerType.RTU


class ModbusSerialLink(ModbusLink):
    """A serial line (RS-485/RS-232) with RTU or ASCII framing."""

    framer = FramerType.RTU

    @property
    def broadcast_unit_zero(self) -> bool:
        """Unit 0 is the broadcast address on a serial line."""
        return True

    def describe(self) -> str:
        """The port path."""
        return str(self.config.port)

    def connect_failure(self) -> str:
        """Why the port could not be opened."""
        return f"cannot open {self.describe()} (missing, busy or not permitted)"

    def quiet_time(self) -> float:
        """A few frames' worth of characters at the line speed, at least MIN_QUIET."""
        bits_per_char = (
            1 + self.config.bytesize + (self.config.parity != "N") + self.config.stopbits
        )
        return max(MIN_QUIET, 8 * bits_per_char / self.config.baudrate)

    def make_client(self, trace_connect: Callable[[bool], None]) -> ModbusBaseClient:
        """An AsyncModbusSerialClient with the link's line settings."""
        stopbits: Any = self.config.stopbits  # pyserial also takes 1.5
        if float(stopbits).is_integer():
            stopbits = int(stopbits)
        return AsyncModbusSerialClient(
            str(self.config.port),
            framer=self.framer,
            baudrate=self.config.baudrate,
            bytesize=self.config.bytesize,
            parity=self.config.parity,
            stopbits=stopbits,
            name=self.name,
            reconnect_delay=0,
            timeout=self._client_timeout(),
            retries=0,
            trace_packet=self._trace_packet,
            trace_connect=trace_connect,
        )


class ModbusAsciiLink(ModbusSerialLink):
    """A serial line with Modbus ASCII framing."""

    framer = FramerType.ASCII


class ModbusDevice(Device):
    """One Modbus unit on a link: typed point reads and writes."""

    link: ModbusLink

    def _what(self, fc: int, table: str, address: int, count: int) -> str:
        return f"unit {self.unit} FC{fc} {table} {address}+{count}"

    def _log_extra(self) -> dict[str, Any]:
        op = current_operation()
        extra: dict[str, Any] = {"device_id": self.config.id}
        if op is not None and op.request_ref is not None:
            extra["request_ref"] = op.request_ref
        return extra

    def _check_error(self, response: ModbusPDU, fc: int, what: str) -> None:
        if response.function_code & 0x7F != fc:
            raise self.link.reply_mismatch(
                self.unit, what, f"function code {response.function_code}"
            )
        if response.isError():
            code = int(response.exception_code)
            raise DeviceException(
                f"{what}: Modbus exception {code} ({exception_name(code)})",
                details={"exceptionCode": code, "function": fc},
            )

    def _broadcast(self) -> bool:
        return self.unit == 0 and self.link.broadcast_unit_zero

    async def read_table(self, table: str, address: int, count: int) -> list[int]:
        """Read count registers (as ints) or bits (as 0/1) of a table in one request."""
        fc = READ_FUNCTIONS[table]
        what = self._what(fc, table, address, count)
        if self._broadcast():
            raise DeviceException(f"{what}: unit 0 is the broadcast address and cannot be read")
        unit = self.unit
        calls: dict[int, Call] = {
            1: lambda c: c.read_coils(address, count=count, device_id=unit),
            2: lambda c: c.read_discrete_inputs(address, count=count, device_id=unit),
            3: lambda c: c.read_holding_registers(address, count=count, device_id=unit),
            4: lambda c: c.read_input_registers(address, count=count, device_id=unit),
        }
        response = await self.link.transaction(unit, calls[fc], what)
        assert response is not None
        self._check_error(response, fc, what)
        data = [int(b) for b in response.bits] if fc <= 2 else list(response.registers)
        if len(data) < count:
            raise self.link.reply_mismatch(self.unit, what, f"{len(data)} values for {count}")
        return data[:count]

    async def read(self, points: Sequence[str]) -> dict[str, Any]:
        """Read the points with as few requests as the Modbus limits allow."""
        specs: dict[str, PointConfig] = {name: self.profile.points[name] for name in points}
        blocks = codec.plan_reads(
            specs,
            max_gap=self.link.max_gap,
            max_registers=self.link.max_registers,
            max_bits=self.link.max_bits,
        )
        values: dict[str, Any] = {}
        for block in blocks:
            data = await self.read_table(block.table, block.address, block.count)
            values.update(codec.decode_block(block, specs, data))
        return {name: values[name] for name in points}

    async def _send_write(self, fc: int, what: str, call: WriteCall) -> ModbusPDU | None:
        """Send one write; return its checked reply, or None for a broadcast (no reply)."""
        if self._broadcast():
            await self.link.transaction(0, lambda c: call(c, 0, True), what, reply=False)
            return None
        unit = self.unit
        response = await self.link.transaction(unit, lambda c: call(c, unit, False), what)
        assert response is not None
        self._check_error(response, fc, what)
        return response

    async def _write_coil(self, address: int, value: bool) -> None:
        what = self._what(5, "coil", address, 1)
        response = await self._send_write(
            5,
            what,
            lambda c, unit, bcast: c.write_coil(
                address, value, device_id=unit, no_response_expected=bcast
            ),
        )
        if response is not None and (
            response.address != address or list(response.bits[:1]) != [value]
        ):
            echo = f"{response.address}={list(response.bits[:1])}"
            raise self.link.reply_mismatch(self.unit, what, f"echo {echo}")

    async def _write_register(self, address: int, word: int) -> None:
        what = self._what(6, "holding", address, 1)
        response = await self._send_write(
            6,
            what,
            lambda c, unit, bcast: c.write_register(
                address, word, device_id=unit, no_response_expected=bcast
            ),
        )
        if response is not None and (
            response.address != address or list(response.registers[:1]) != [word]
        ):
            echo = f"{response.address}={list(response.registers[:1])}"
            raise self.link.reply_mismatch(self.unit, what, f"echo {echo}")

    async def _write_registers(self, address: int, words: list[int]) -> None:
        what = self._what(16, "holding", address, len(words))
        response = await self._send_write(
            16,
            what,
            lambda c, unit, bcast: c.write_registers(
                address, words, device_id=unit, no_response_expected=bcast
            ),
        )
        if response is not None and (response.address != address or response.count != len(words)):
            echo = f"{response.address}+{response.count}"
            raise self.link.reply_mismatch(self.unit, what, f"echo {echo}")

    async def write(self, values: Mapping[str, Any]) -> None:
        """Write each point: FC5 coil, FC6 one register, FC16 several, FC3+FC6 for a bit."""
        for name, value in values.items():
            point = self.profile.points[name]
            if point.table == "coil":
                await self._write_coil(point.address, codec.encode_bit(point, value))
            elif point.table != "holding":
                raise DeviceException(f"{name}: a {point.table} point cannot be written")
            elif point.bit is not None:
                bit = codec.encode_bit(point, value)
                if self._broadcast():
                    raise DeviceException(
                        f"{name}: a bit cannot be read-modify-written on broadcast unit 0"
                    )
                # The core holds the link for the whole operation, so no other command can
                # slip a write in between the read and the write-back.
                (word,) = await self.read_table("holding", point.address, 1)
                await self._write_register(point.address, codec.apply_bit(word, point.bit, bit))
            else:
                words = codec.encode_registers(point, value)
                if len(words) == 1:
                    await self._write_register(point.address, words[0])
                else:
                    await self._write_registers(point.address, words)
            log.debug(
                "device %s: wrote %s = %r", self.config.id, name, value, extra=self._log_extra()
            )


def _check_int_key(link: LinkConfig, key: str, low: int, high: int) -> list[str]:
    if key not in link.extra_keys:
        return []
    value = link.extra_keys[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return [f".{key}: expected an integer {low}..{high} (got {value!r})"]
    return []


class _ModbusDriver(Driver):
    """What the four Modbus drivers share: the device class and the read-merging keys."""

    device_class: ClassVar[type[Device]] = ModbusDevice
    extra_link_keys: ClassVar[frozenset[str]] = frozenset(
        {
            "max_gap",
            "max_read_registers",
            "max_read_bits",
            "late_reply_wait",
            "broadcast_turnaround",
        }
    )

    @classmethod
    def check_link(cls, link: LinkConfig) -> list[str]:
        """Also check the driver's own keys: read merging limits and late_reply_wait."""
        errors = super().check_link(link)
        for key in ("late_reply_wait", "broadcast_turnaround"):
            if key in link.extra_keys:
                try:
                    parse_duration(link.extra_keys[key])
                except ValueError as exc:
                    errors.append(f".{key}: {exc} (got {link.extra_keys[key]!r})")
        errors += _check_int_key(link, "max_gap", 0, _MAX_REGISTERS)
        errors += _check_int_key(link, "max_read_registers", 1, _MAX_REGISTERS)
        errors += _check_int_key(link, "max_read_bits", 1, _MAX_BITS)
        if cls.serial and link.port is None:
            errors.append(f".port: driver {link.driver!r} needs a serial device path")
        return errors


class ModbusTcpDriver(_ModbusDriver):
    """Registry entry of ``modbus-tcp``: Modbus TCP with MBAP framing."""

    name: ClassVar[str] = "modbus-tcp"
    link_class: ClassVar[type[Link]] = ModbusTcpLink
    needs_host: ClassVar[bool] = True
    needs_port: ClassVar[bool] = True


class ModbusRtuOverTcpDriver(_ModbusDriver):
    """Registry entry of ``modbus-rtu-over-tcp``: RTU frames through a TCP connection."""

    name: ClassVar[str] = "modbus-rtu-over-tcp"
    link_class: ClassVar[type[Link]] = ModbusRtuOverTcpLink
    needs_host: ClassVar[bool] = True
    needs_port: ClassVar[bool] = True


class ModbusRtuDriver(_ModbusDriver):
    """Registry entry of ``modbus-rtu``: a serial line with RTU framing."""

    name: ClassVar[str] = "modbus-rtu"
    link_class: ClassVar[type[Link]] = ModbusSerialLink
    serial: ClassVar[bool] = True


class ModbusAsciiDriver(_ModbusDriver):
    """Registry entry of ``modbus-ascii``: a serial line with ASCII framing."""

    name: ClassVar[str] = "modbus-ascii"
    link_class: ClassVar[type[Link]] = ModbusAsciiLink
    serial: ClassVar[bool] = True
