"""The ``line-tcp`` and ``line-serial`` links: text request/reply protocols, one line each way.

A profile with a ``line:`` section (terminator, encoding, ``max_line``) and commands with a
``request`` template and an optional ``expect`` regular expression is run as one transaction
per command: the request is rendered with Python format syntax over the command's parameters,
sent with the terminator, and one reply line is read within the command's ``timeout`` (or the
link's). With ``expect``, the whole reply line must match it (``re.fullmatch``; anchors in the
pattern are allowed and change nothing); its named groups are the result, numbers converted to
``int`` or ``float``. Without ``expect``, or with one that has no named groups, the result
is ``{"reply": <line>}``.

Keeping replies paired with their requests
------------------------------------------
These protocols carry no transaction id, so the driver relies on timing:

* everything received before a request is written cannot be its reply: it is discarded (and
  logged) before each request, complete lines and partial ones alike;
* after a request times out, or its reply overflows ``max_line``, the device may still be
  sending that reply. The next transaction on the link first waits, up to the link key
  ``late_reply_grace`` after the failure (default: the timeout that expired), for that late
  line and discards it, and only then writes its own request.

The limit: a reply that arrives later than the grace, or the tail of a partial unsolicited
line that arrives after the next request was written, is taken as (part of) the next reply.
``expect`` then usually rejects it, which fails that one transaction; a profile without
``expect`` cannot tell. Choose a grace longer than the device's worst reply time.

A bounded receive buffer
------------------------
Received bytes wait in a buffer until a line end takes them out. A device that streams bytes
without a terminator (a wrong ``terminator``, a device in a binary mode, noise) must not grow
it without limit: it holds at most the link key ``max_buffer`` (default 64 KiB, never less
than a profile's ``max_line`` plus its terminator). On overflow everything buffered is
discarded, counted (:attr:`LineLink.overflows`, :attr:`LineLink.overflow_bytes`) and logged
(a warning, at most one per ``OVERFLOW_LOG_EVERY`` seconds), and the transaction in progress,
if any, fails with ``DEVICE_EXCEPTION``; the device's next transaction starts clean.

Extra link keys (both drivers): ``late_reply_grace`` (a duration; ``0`` turns the wait off) and
``max_buffer`` (a size, at least ``MIN_BUFFER``).
"""

from __future__ import annotations

import asyncio
import logging
import termios
import time
from abc import abstractmethod
from collections.abc import Callable
from typing import NamedTuple, cast

import serial_asyncio

from edge_proxy.config import LinkConfig, parse_duration, parse_size
from edge_proxy.drivers import Link, checkpoint
from edge_proxy.errors import DeviceException, DeviceTimeout, LinkIOError

log = logging.getLogger(__name__)

#: How long close() waits for buffered output to flush before dropping the connection.
_CLOSE_FLUSH = 1.0
#: Default of the ``max_buffer`` link key: received bytes kept while waiting for a line end.
MAX_BUFFER = 64 * 1024
#: The smallest ``max_buffer`` the drivers accept.
MIN_BUFFER = 1024
#: Seconds between two warnings about receive buffer overflows on one link.
OVERFLOW_LOG_EVERY = 10.0


class _Exchange(NamedTuple):
    """One request of :meth:`LineLink.transact` whose reply is awaited."""

    request: bytes
    terminator: bytes
    timeout: float
    max_line: int
    device_id: str


class _LineProtocol(asyncio.Protocol):
    """Collects received bytes in a bounded buffer the link reads lines from."""

    def __init__(
        self, limit: int = MAX_BUFFER, on_overflow: Callable[[int, int], None] | None = None
    ) -> None:
        self.buffer = bytearray()
        #: the most bytes the buffer holds; beyond it they are discarded
        self.limit = limit
        #: bytes discarded by overflows since the link last looked (a transaction then fails)
        self.overflowed = 0
        self._on_overflow = on_overflow
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.error: BaseException | None = None
        self.lost_event = asyncio.Event()
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (only a serial transport calls this after open returns)."""
        # a stream transport; uvloop's are not subclasses of asyncio.Transport, only alike
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Append to the buffer (discarding it all beyond ``limit``) and wake a waiting reader."""
        self.buffer += data
        if len(self.buffer) > self.limit:
            dropped = len(self.buffer)
            self.buffer.clear()
            self.overflowed += dropped
            if self._on_overflow is not None:
                self._on_overflow(dropped, self.limit)
        self._wake()

    def eof_received(self) -> bool:
        """The peer closed its side: let the transport close."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark the connection dead and wake a waiting reader."""
        self.lost = True
        self.error = exc
        self.lost_event.set()
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_data(self, timeout: float) -> bool:
        """Wait for more bytes or the end of the connection; False on timeout."""
        if self.lost:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await asyncio.wait_for(waiter, timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return False
        finally:
            if self._waiter is waiter:
                self._waiter = None
        return True


class LineLink(Link):
    """A byte stream carrying text lines; subclasses say how to connect."""

    def __init__(self, name: str, config: LinkConfig) -> None:
        super().__init__(name, config)
        grace = config.extra_keys.get("late_reply_grace")
        self.late_reply_grace: float | None = None if grace is None else parse_duration(grace)
        #: the receive buffer's bound (``max_buffer``); a profile's longer max_line raises it
        self.max_buffer = parse_size(config.extra_keys.get("max_buffer", MAX_BUFFER))
        #: receive buffer overflows, and the bytes they discarded
        self.overflows = 0
        self.overflow_bytes = 0
        self._overflow_logged = 0.0  # monotonic time of the last warning
        self._overflow_unlogged = 0  # overflows since then
        self._device_id: str | None = None  # whose transaction is on the wire, for the log
        self._protocol: _LineProtocol | None = None
        self._transport: asyncio.Transport | None = None
        # Replies still owed by the device for requests we gave up on, and until when to wait.
        self._late = 0
        self._late_until = 0.0
        self._late_terminator = b"\r\n"
        #: Lines (or fragments) received outside a transaction and thrown away.
        self.discarded = 0

    @property
    def is_open(self) -> bool:
        """Whether the connection is up."""
        return (
            self._protocol is not None
            and self._transport is not None
            and not self._protocol.lost
            and not self._transport.is_closing()
        )

    @abstractmethod
    async def _connect(self) -> tuple[asyncio.Transport, _LineProtocol]:
        """Open the byte stream; raise OSError when it cannot be opened."""

    def _make_protocol(self) -> _LineProtocol:
        """A protocol for a new connection, its buffer bounded by ``max_buffer``."""
        return _LineProtocol(self.max_buffer, self._overflowed)

    def _overflowed(self, dropped: int, limit: int) -> None:
        self.overflows += 1
        self.overflow_bytes += dropped
        self._overflow_unlogged += 1
        now = time.monotonic()
        if now - self._overflow_logged < OVERFLOW_LOG_EVERY and self._overflow_logged:
            return
        extra = {"device_id": self._device_id} if self._device_id else {}
        log.warning(
            "link %s: %d receive buffer overflow(s): more than %d bytes without a line end "
            "were discarded (%d bytes in all so far)",
            self.name,
            self._overflow_unlogged,
            limit,
            self.overflow_bytes,
            extra=extra,
        )
        self._overflow_logged = now
        self._overflow_unlogged = 0

    async def open(self) -> None:
        """Connect; LinkIOError when the peer cannot be reached."""
        if self.is_open:
            return
        await self.close()
        try:
            transport, protocol = await self._connect()
        except LinkIOError:
            raise
        except OSError as exc:
            raise LinkIOError(f"link {self.name}: cannot connect: {exc}") from exc
        self._transport, self._protocol = transport, protocol
        # Nothing owed by a previous connection can arrive on this one.
        self._late = 0

    async def close(self) -> None:
        """Close the connection; does nothing when already closed."""
        transport, protocol = self._transport, self._protocol
        self._transport = self._protocol = None
        if transport is None or protocol is None:
            return
        transport.close()
        # Wait for connection_lost so the socket or port is really released on return.
        try:
            await asyncio.wait_for(protocol.lost_event.wait(), _CLOSE_FLUSH)
        except (asyncio.TimeoutError, TimeoutError):
            transport.abort()

    def _require(self) -> tuple[asyncio.Transport, _LineProtocol]:
        if self._transport is None or self._protocol is None or not self.is_open:
            reason = self._protocol.error if self._protocol is not None else None
            raise LinkIOError(
                f"link {self.name}: connection closed" + (f" ({reason})" if reason else "")
            )
        return self._transport, self._protocol

    @staticmethod
    def _take_line(protocol: _LineProtocol, terminator: bytes) -> bytes | None:
        index = protocol.buffer.find(terminator)
        if index < 0:
            return None
        line = bytes(protocol.buffer[:index])
        del protocol.buffer[: index + len(terminator)]
        return line

    def _discard(self, what: str, data: bytes, device_id: str) -> None:
        self.discarded += 1
        log.info(
            "link %s: discarded %s %r",
            self.name,
            what,
            data[:200],
            extra={"device_id": device_id},
        )

    async def _settle(self, terminator: bytes, device_id: str) -> None:
        """Throw away what arrived outside a transaction, and wait out an owed late reply."""
        _, protocol = self._require()
        if self._late:
            # The owed reply ends the way the device that owes it ends its lines.
            terminator = self._late_terminator
        while True:
            line = self._take_line(protocol, terminator)
            if line is None:
                if self._late == 0:
                    break
                remaining = self._late_until - time.monotonic()
                if remaining <= 0 or not await protocol.wait_data(remaining):
                    break
                self._require()
                continue
            if self._late > 0:
                self._late -= 1
                self._discard("late reply", line, device_id)
            else:
                self._discard("unsolicited line", line, device_id)
        self._late = 0
        protocol.overflowed = 0  # counted and logged already; not this transaction's failure
        if protocol.buffer:
            self._discard("partial line", bytes(protocol.buffer), device_id)
            protocol.buffer.clear()

    def _owe(self, terminator: bytes, timeout: float) -> None:
        grace = timeout if self.late_reply_grace is None else self.late_reply_grace
        self._late += 1
        self._late_until = time.monotonic() + grace
        self._late_terminator = terminator

    async def transact(
        self,
        request: bytes,
        terminator: bytes,
        *,
        timeout: float,
        max_line: int,
        device_id: str,
    ) -> bytes:
        """Send one request line and return the reply line (both without terminator)."""
        _, protocol = self._require()
        # a reply as long as max_line always fits, whatever max_buffer says
        protocol.limit = max(self.max_buffer, max_line + len(terminator) + 1)
        self._device_id = device_id
        try:
            await self._settle(terminator, device_id)
            checkpoint()
            transport, protocol = self._require()
            transport.write(request + terminator)
            try:
                exchange = _Exchange(request, terminator, timeout, max_line, device_id)
                return await self._read_reply(protocol, exchange)
            except asyncio.CancelledError:
                # The request is out: whatever answers it now is a late reply.
                self._owe(terminator, timeout)
                raise
        finally:
            self._device_id = None

    async def _read_reply(self, protocol: _LineProtocol, exchange: _Exchange) -> bytes:
        request, terminator, timeout, max_line, device_id = exchange
        deadline = time.monotonic() + timeout
        while True:
            if protocol.overflowed:
                dropped, protocol.overflowed = protocol.overflowed, 0
                # the endless "line" may go on: treat its rest like a late reply
                self._owe(terminator, timeout)
                raise DeviceException(
                    f"device {device_id}: {dropped} bytes without a line end overflowed the "
                    f"receive buffer ({protocol.limit} bytes) and were discarded",
                    details={"discardedBytes": dropped},
                )
            line = self._take_line(protocol, terminator)
            if line is not None:
                if len(line) > max_line:
                    raise DeviceException(
                        f"device {device_id}: reply of {len(line)} bytes is longer than "
                        f"max_line ({max_line})"
                    )
                return line
            self._require()
            if len(protocol.buffer) > max_line + len(terminator):
                # The rest of this line is still coming: treat it like a late reply.
                self._owe(terminator, timeout)
                raise DeviceException(
                    f"device {device_id}: reply is longer than max_line ({max_line} bytes)"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await protocol.wait_data(remaining):
                self._owe(terminator, timeout)
                raise DeviceTimeout(
                    f"device {device_id} did not answer {request[:80]!r} within {timeout:g}s"
                )


class LineTcpLink(LineLink):
    """A TCP connection to a device or a serial-to-Ethernet converter."""

    async def _connect(self) -> tuple[asyncio.Transport, _LineProtocol]:
        loop = asyncio.get_running_loop()
        assert self.config.host is not None and isinstance(self.config.port, int)
        transport, protocol = await loop.create_connection(
            self._make_protocol, self.config.host, self.config.port
        )
        protocol.transport = transport
        return transport, protocol


class LineSerialLink(LineLink):
    """A serial port (RS-232/RS-485, or a pseudo-terminal)."""

    async def _connect(self) -> tuple[asyncio.Transport, _LineProtocol]:
        loop = asyncio.get_running_loop()
        cfg = self.config
        stopbits: float = int(cfg.stopbits) if float(cfg.stopbits).is_integer() else cfg.stopbits
        try:
            transport, protocol = await serial_asyncio.create_serial_connection(
                loop,
                self._make_protocol,
                cfg.port,
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=cfg.parity,
                stopbits=stopbits,
            )
        except (termios.error, ValueError) as exc:
            # pyserial lets termios.error through when the port refuses the line settings.
            raise LinkIOError(f"link {self.name}: cannot set up {cfg.port}: {exc}") from exc
        assert isinstance(transport, asyncio.Transport)
        assert isinstance(protocol, _LineProtocol)
        # connection_made comes a loop turn later; the first write may not wait for it.
        protocol.transport = transport
        return transport, protocol
