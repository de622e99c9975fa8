"""The ``stx-tcp`` and ``stx-serial`` drivers: one 16-bit register per STX frame.

Each point of a profile is one holding register at its ``address``; ``uint16`` and ``int16``
points are supported, with ``scale`` and ``offset`` (the core's point codec does the
arithmetic). Any other table or type is refused with a DriverError naming the point, on the
first read or write of the device.

One frame goes out at a time and its reply is read within the link ``timeout``. The protocol
carries no transaction id, so when the reply cannot be trusted to belong to the request (no
reply in time, a reply for another register, an operation cancelled while it waited) the link
drops the connection: the core reopens it before the next transaction, and a late reply cannot
be taken for the answer to a later request.
"""

from __future__ import annotations

import asyncio
import termios
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import serial_asyncio

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.core.points import PointValueError, decode_registers, encode_registers
from edge_proxy.drivers import Device, Driver, Link, checkpoint
from edge_proxy.errors import (
    DeviceException,
    DeviceTimeout,
    DriverError,
    LinkIOError,
    RequestError,
)

from .frames import (
    ChecksumError,
    ErrorReply,
    FrameError,
    FrameReader,
    ReadReply,
    ReadRequest,
    Reply,
    Request,
    WriteAck,
    WriteRequest,
    encode_frame,
    parse_reply,
)

#: Point types that fit in one register.
SUPPORTED_TYPES = frozenset({"uint16", "int16"})
#: How long close() waits for the connection to be released before it aborts it.
_CLOSE_WAIT = 1.0
_READ_CHUNK = 256


def profile_problems(profile: ProfileConfig) -> list[str]:
    """Points this driver cannot map to a register, each as ``points.<name>: problem``."""
    problems = []
    for name, point in profile.points.items():
        if point.table != "holding":
            problems.append(
                f"points.{name}: table {point.table} is not supported (STX devices have "
                "holding registers only)"
            )
        elif point.type not in SUPPORTED_TYPES:
            problems.append(
                f"points.{name}: type {point.type} is not supported (one register: "
                f"{' or '.join(sorted(SUPPORTED_TYPES, reverse=True))})"
            )
    return problems


class StxLink(Link):
    """A byte stream carrying STX frames; subclasses say how to connect."""

    def __init__(self, name: str, config: LinkConfig) -> None:
        super().__init__(name, config)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.frames = FrameReader()

    @property
    def is_open(self) -> bool:
        """Whether the connection is up and the peer has not closed it."""
        return (
            self._reader is not None
            and self._writer is not None
            and not self._writer.is_closing()
            and not self._reader.at_eof()
        )

    @abstractmethod
    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open the byte stream; raise OSError when it cannot be opened."""

    async def open(self) -> None:
        """Connect; LinkIOError when the device cannot be reached."""
        if self.is_open:
            return
        await self.close()
        try:
            self._reader, self._writer = await self._connect()
        except LinkIOError:
            raise
        except OSError as exc:
            raise LinkIOError(f"link {self.name}: cannot connect: {exc}") from exc
        self.frames.clear()

    def _drop(self) -> asyncio.StreamWriter | None:
        """Forget the connection and start closing it; return its writer to wait on."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
        return writer

    async def close(self) -> None:
        """Close the connection; does nothing when already closed."""
        writer = self._drop()
        if writer is None:
            return
        try:
            await asyncio.wait_for(writer.wait_closed(), _CLOSE_WAIT)
        except (asyncio.TimeoutError, TimeoutError):
            writer.transport.abort()
        except OSError:
            pass  # the peer reset the connection: it is closed all the same

    async def transact(self, request: bytes, *, device_id: str) -> bytes:
        """Send one request payload (after a checkpoint) and return the reply payload.

        Raises DeviceTimeout when no reply comes within the link timeout, DeviceException
        for a broken reply frame, LinkIOError when the connection is closed or fails.
        """
        checkpoint()
        if self._reader is None or self._writer is None or not self.is_open:
            raise LinkIOError(f"link {self.name}: not connected")
        reader, writer = self._reader, self._writer
        self.frames.clear()  # nothing that came before the request can be its reply
        try:
            writer.write(encode_frame(request))
            await writer.drain()
            return await self._reply(reader, request, device_id)
        except (DeviceTimeout, LinkIOError):
            await self.close()
            raise
        except OSError as exc:
            await self.close()
            raise LinkIOError(f"link {self.name}: connection failed: {exc}") from exc
        except asyncio.CancelledError:
            self._drop()  # the reply is still owed: never read it as another one's
            raise

    async def _reply(self, reader: asyncio.StreamReader, request: bytes, device_id: str) -> bytes:
        loop = asyncio.get_running_loop()
        timeout = self.config.timeout
        deadline = loop.time() + timeout
        while True:
            try:
                payload = self.frames.next_payload()
            except ChecksumError as exc:
                raise DeviceException(
                    f"device {device_id}: reply to {request.decode()} has a bad checksum",
                    details={"expected": exc.expected, "received": exc.received},
                ) from exc
            except FrameError as exc:
                raise DeviceException(
                    f"device {device_id}: broken reply to {request.decode()}: {exc}"
                ) from exc
            if payload is not None:
                return payload
            remaining = max(0.0, deadline - loop.time())
            try:
                data = await asyncio.wait_for(reader.read(_READ_CHUNK), remaining)
            except (asyncio.TimeoutError, TimeoutError):
                raise DeviceTimeout(
                    f"device {device_id} did not answer {request.decode()} within {timeout:g}s"
                ) from None
            if not data:
                raise LinkIOError(f"link {self.name}: connection closed by the device")
            self.frames.feed(data)


class StxTcpLink(StxLink):
    """A TCP connection to the device (or to a serial-to-Ethernet converter)."""

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert self.config.host is not None and isinstance(self.config.port, int)
        return await asyncio.open_connection(self.config.host, self.config.port)


class StxSerialLink(StxLink):
    """A serial port (RS-232/RS-485, or a pseudo-terminal)."""

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        cfg = self.config
        stopbits: float = int(cfg.stopbits) if float(cfg.stopbits).is_integer() else cfg.stopbits
        try:
            reader, writer = await serial_asyncio.open_serial_connection(
                loop=asyncio.get_running_loop(),
                url=cfg.port,
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=cfg.parity,
                stopbits=stopbits,
            )
        except (termios.error, ValueError) as exc:
            raise LinkIOError(f"link {self.name}: cannot set up {cfg.port}: {exc}") from exc
        assert isinstance(reader, asyncio.StreamReader)
        assert isinstance(writer, asyncio.StreamWriter)
        return reader, writer


class StxDevice(Device):
    """A device whose points are 16-bit registers, read and written one frame each."""

    link: StxLink

    def __init__(self, link: Link, config: DeviceConfig, profile: ProfileConfig) -> None:
        super().__init__(link, config, profile)
        #: Why the profile does not fit this driver (empty when it does).
        self.problems = profile_problems(profile)

    def _check_profile(self) -> None:
        if self.problems:
            raise DriverError(
                f"device {self.config.id}: profile {self.config.profile!r} does not fit the "
                f"STX driver: {'; '.join(self.problems)}"
            )

    async def _transact(self, request: Request) -> Reply:
        text = request.payload().decode()
        payload = await self.link.transact(request.payload(), device_id=self.config.id)
        try:
            reply = parse_reply(payload)
        except FrameError:
            raise DeviceException(
                f"device {self.config.id}: unreadable reply to {text}",
                details={"reply": payload.decode("ascii", "replace")},
            ) from None
        if isinstance(reply, ErrorReply):
            raise DeviceException(
                f"device {self.config.id} refused {text}: E{reply.code} ({reply.meaning})",
                details={"code": reply.code, "request": text},
            )
        return reply

    async def _out_of_step(self, request: Request, reply: Reply) -> DeviceException:
        await self.link.close()
        return DeviceException(
            f"device {self.config.id}: reply {reply.payload().decode()} does not answer "
            f"{request.payload().decode()}; reconnecting",
        )

    async def read(self, points: Sequence[str]) -> dict[str, Any]:
        """Read each point's register (once per address) and decode it."""
        self._check_profile()
        words: dict[int, int] = {}
        values: dict[str, Any] = {}
        for name in points:
            point = self.profile.points[name]
            if point.address not in words:
                request = ReadRequest(point.address)
                reply = await self._transact(request)
                if not isinstance(reply, ReadReply) or reply.address != point.address:
                    raise await self._out_of_step(request, reply)
                words[point.address] = reply.value
            values[name] = decode_registers(point, [words[point.address]])
        return values

    async def write(self, values: Mapping[str, Any]) -> None:
        """Write each point's register, in the order given; stops at the first failure."""
        self._check_profile()
        for name, value in values.items():
            point = self.profile.points[name]
            try:
                (word,) = encode_registers(point, value)
            except PointValueError as exc:
                raise RequestError("INVALID_PARAMETERS", f"{name}: {exc}") from None
            request = WriteRequest(point.address, word)
            reply = await self._transact(request)
            if not isinstance(reply, WriteAck) or reply.address != point.address:
                raise await self._out_of_step(request, reply)


class _StxDriver(Driver):
    """What both STX drivers share: the device adapter, and the profile check."""

    device_class: ClassVar[type[Device]] = StxDevice
    needs_port: ClassVar[bool] = True

    @classmethod
    def check_profile(cls, profile: ProfileConfig) -> list[str]:
        """Points an STX device cannot hold, reported by ``edge-proxy check``."""
        return [f".{p}" for p in profile_problems(profile)]


class StxTcpDriver(_StxDriver):
    """Registry entry of the ``stx-tcp`` driver."""

    name: ClassVar[str] = "stx-tcp"
    link_class: ClassVar[type[Link]] = StxTcpLink
    needs_host: ClassVar[bool] = True


class StxSerialDriver(_StxDriver):
    """Registry entry of the ``stx-serial`` driver."""

    name: ClassVar[str] = "stx-serial"
    link_class: ClassVar[type[Link]] = StxSerialLink
    serial: ClassVar[bool] = True
