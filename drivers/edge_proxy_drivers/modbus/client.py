"""The Modbus links: one pymodbus client each, over TCP or a serial line.

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
  ``DeviceException`` (with the exception code; the device answered), except 10 and 11, a
  gateway's word that the device behind it did not answer, which are ``DeviceTimeout`` (the
  code in details, checked in :mod:`.device`); no answer is ``DeviceTimeout``, a lost or
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

The link keys are read here and checked in :mod:`.driver`.
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from edge_proxy.config import LinkConfig, parse_duration
from edge_proxy.drivers import Link, checkpoint
from edge_proxy.errors import DeviceError, DeviceTimeout, LinkIOError
from edge_proxy_drivers.modbus.framing import framer_for

log = logging.getLogger(__name__)

#: Shortest silence that counts as "the line is idle" (3.5 character times is the RTU minimum;
#: OS and USB adapters add far more jitter than that).
MIN_QUIET = 0.02
#: Default of the ``late_reply_wait`` link key.
LATE_REPLY_WAIT = 0.05
#: Default of the ``broadcast_turnaround`` link key (the serial line spec suggests 100-200 ms).
BROADCAST_TURNAROUND = 0.1

#: Registers one read may ask for (FC3/FC4).
MAX_REGISTERS = 125
#: Bits one read may ask for (FC1/FC2).
MAX_BITS = 2000
#: Default of the ``max_gap`` link key.
DEFAULT_GAP = 8

#: ``asyncio.timeout`` (Python 3.11+): a request awaited in the caller's task, without a task
_timeout: Callable[[float], Any] | None = getattr(asyncio, "timeout", None)

#: One request/response given the connected client.
Call = Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]


class ModbusLink(Link):
    """One pymodbus client: a TCP connection or a serial port shared by several units."""

    #: How frames are delimited on this link.
    framer: ClassVar[FramerType] = framer_for("modbus-tcp")
    #: Every request runs under the link's timeout, every pause is bounded (see transaction).
    self_timed: ClassVar[bool] = True

    def __init__(self, name: str, config: LinkConfig) -> None:
        super().__init__(name, config)
        self.client: ModbusBaseClient | None = None
        self.timeout = float(config.timeout)
        extra = config.extra_keys
        self.max_gap = int(extra.get("max_gap", DEFAULT_GAP))
        self.max_registers = int(extra.get("max_read_registers", MAX_REGISTERS))
        self.max_bits = int(extra.get("max_read_bits", MAX_BITS))
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

    def _client_options(self, trace_connect: Callable[[bool], None]) -> dict[str, Any]:
        """The pymodbus client keywords of every link: no reconnect, no retries, traced."""
        return {
            "name": self.name,
            "reconnect_delay": 0,
            "timeout": self._client_timeout(),
            "retries": 0,
            "trace_packet": self._trace_packet,
            "trace_connect": trace_connect,
        }

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
        if _timeout is not None:
            return await self._transact(client, lost, unit, call, what, _timeout)
        # Python 3.10: the request in a task of its own, raced against the connection's loss
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
            except Exception as exc:
                err = self._failure(client, lost, unit, what, exc)
                if err is exc:
                    raise
                raise err from exc
        if lost in done or not client.connected:
            raise LinkIOError(f"connection to {self.describe()} lost during {what}")
        self._mark_dirty(unit)
        raise DeviceTimeout(f"{what}: no answer within {self.timeout:g}s")

    async def _transact(
        self,
        client: ModbusBaseClient,
        lost: asyncio.Future[None],
        unit: int,
        call: Call,
        what: str,
        timeout: Callable[[float], Any],
    ) -> ModbusPDU:
        """One request awaited in the caller's own task, under our timeout.

        The loss of the connection fails pymodbus' pending reply at once (pymodbus itself would
        leave it to its timeout), so no task or race of futures is needed per request.
        """

        def on_lost(_: asyncio.Future[None]) -> None:
            pending = getattr(client.ctx, "response_future", None)
            if pending is not None and not pending.done():
                pending.set_exception(ConnectionException("connection lost"))

        lost.add_done_callback(on_lost)
        try:
            async with timeout(self.timeout):
                return await call(client)
        except TimeoutError as exc:  # ours: pymodbus dropped its reply future on the cancel
            if lost.done() or not client.connected:
                raise LinkIOError(f"connection to {self.describe()} lost during {what}") from exc
            self._mark_dirty(unit)
            raise DeviceTimeout(f"{what}: no answer within {self.timeout:g}s") from exc
        except Exception as exc:
            err = self._failure(client, lost, unit, what, exc)
            if err is exc:
                raise
            raise err from exc
        finally:
            lost.remove_done_callback(on_lost)

    def _failure(
        self,
        client: ModbusBaseClient,
        lost: asyncio.Future[None],
        unit: int,
        what: str,
        exc: Exception,
    ) -> Exception:
        """What a failed pymodbus request means, in the exceptions of edge_proxy.errors."""
        if lost.done() or not client.connected:
            return LinkIOError(f"connection to {self.describe()} lost during {what}")
        if isinstance(exc, ModbusIOException):
            if "No response" in str(exc):  # pymodbus' own timeout (a backstop only)
                self._mark_dirty(unit)
                return DeviceTimeout(f"{what}: no answer within {self.timeout:g}s")
            return LinkIOError(f"{self.describe()}: {what}: {exc}")
        if isinstance(exc, (ConnectionException, OSError)):
            return LinkIOError(f"{self.describe()}: {what}: {exc}")
        if isinstance(exc, ModbusException):
            return DeviceError(f"{what}: {exc}")
        return exc

    def reply_mismatch(self, unit: int, what: str, detail: str) -> DeviceError:
        """The error for a reply that does not answer the request (its own may still come)."""
        self._mark_dirty(unit)
        return DeviceError(f"{what}: unexpected reply ({detail})")


class ModbusTcpLink(ModbusLink):
    """Modbus TCP (MBAP framing) to a device or a TCP gateway."""

    framer = framer_for("modbus-tcp")

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
            **self._client_options(trace_connect),
        )


class ModbusRtuOverTcpLink(ModbusTcpLink):
    """RTU frames (CRC, no MBAP header) over TCP, as serial-to-Ethernet converters send them."""

    framer = framer_for("modbus-rtu-over-tcp")


class ModbusSerialLink(ModbusLink):
    """A serial line (RS-485/RS-232) with RTU or ASCII framing."""

    framer = framer_for("modbus-rtu")

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
            **self._client_options(trace_connect),
        )


class ModbusAsciiLink(ModbusSerialLink):
    """A serial line with Modbus ASCII framing."""

    framer = framer_for("modbus-ascii")
