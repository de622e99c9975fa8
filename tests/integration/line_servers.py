"""Test devices for the line drivers: a pillar-ascii dialect over TCP and over a pseudo-terminal.

The dialect: ``BRT nnn`` sets the brightness and answers ``OK`` (``ERR`` when out of range),
``STS?`` answers ``STS <door> <brightness>``, ``TMP?`` answers ``TMP <degrees> C``, ``PING``
answers ``PONG``, anything else ``ERR``.
Knobs on :class:`PillarDialect` make the device misbehave: ``silent`` (never answers), ``delay``
(answers late), ``after_reply`` (unsolicited lines sent with the next reply, in the same write)
and ``garbage`` (bytes sent in front of the next reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import re
import tty
from dataclasses import dataclass, field

from tests.integration.support import LocalTcpServer

_BRT = re.compile(r"BRT (\d{3})")


@dataclass
class PillarDialect:
    """The device's state, its misbehaviour knobs, and every request it received."""

    terminator: bytes = b"\r\n"
    door: int = 0
    brightness: int = 0
    temperature: float = 21.5
    silent: bool = False
    delay: float = 0.0
    after_reply: list[str] = field(default_factory=list)
    garbage: bytes = b""
    requests: list[str] = field(default_factory=list)
    _cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    def answer(self, request: str) -> str | None:
        """The reply line to one request (None when silent)."""
        if self.silent:
            return None
        if m := _BRT.fullmatch(request):
            value = int(m.group(1))
            if value > 100:
                return "ERR range"
            self.brightness = value
            return "OK"
        if request == "STS?":
            return f"STS {self.door} {self.brightness}"
        if request == "TMP?":
            return f"TMP {self.temperature} C"
        if request == "PING":
            return "PONG"
        return "ERR unknown"

    def reply_bytes(self, request: str) -> bytes:
        """What goes on the wire for one request, one-shot knobs included (and consumed)."""
        reply = self.answer(request)
        if reply is None:
            return b""
        term = self.terminator
        out = self.garbage + reply.encode() + term
        out += b"".join(line.encode() + term for line in self.after_reply)
        self.garbage, self.after_reply = b"", []
        return out

    async def respond(self, request: str) -> bytes:
        """Record a request, wait out ``delay``, and return what goes on the wire for it."""
        await self.received(request)
        if self.delay:
            await asyncio.sleep(self.delay)  # the device is slow, on purpose
        return self.reply_bytes(request)

    async def received(self, request: str) -> None:
        """Record a request and wake waiters."""
        async with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    async def wait_requests(self, count: int, timeout: float = 5.0) -> list[str]:
        """Wait until ``count`` requests have arrived in total."""
        async with self._cond:
            await asyncio.wait_for(
                self._cond.wait_for(lambda: len(self.requests) >= count), timeout
            )
        return list(self.requests)


class LineTcpServer(LocalTcpServer):
    """A pillar-ascii device on 127.0.0.1, restartable on the same port."""

    grace = 0.0  # stop() cancels a reply that a ``delay`` holds back, it does not wait for it

    def __init__(self, dialect: PillarDialect | None = None) -> None:
        super().__init__()
        self.dialect = dialect or PillarDialect()

    async def push(self, line: str) -> None:
        """Send an unsolicited line to every connected client."""
        for writer in list(self._writers):
            writer.write(line.encode() + self.dialect.terminator)
            await writer.drain()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one request line after the other until the client goes away."""
        term = self.dialect.terminator
        while True:
            raw = await reader.readuntil(term)
            out = await self.dialect.respond(raw[: -len(term)].decode(errors="replace"))
            if out:
                writer.write(out)
                await writer.drain()


class PtyLineServer:
    """A pillar-ascii device behind a pseudo-terminal: the driver opens ``slave_path``."""

    def __init__(self, dialect: PillarDialect | None = None) -> None:
        self.dialect = dialect or PillarDialect()
        self.master, self._slave = pty.openpty()
        # Raw mode: no echo and no CR/LF translation, like a real serial line.
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.slave_path = os.ttyname(self._slave)
        self._buffer = bytearray()
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start answering."""
        loop = asyncio.get_running_loop()
        loop.add_reader(self.master, self._readable)
        self._task = asyncio.create_task(self._serve(), name="pty-line-server")

    async def stop(self) -> None:
        """Stop answering and close both ends."""
        if self._task is not None:
            asyncio.get_running_loop().remove_reader(self.master)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def inject(self, data: bytes) -> None:
        """Put raw bytes on the line towards the driver, now."""
        os.write(self.master, data)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EIO once nobody holds the slave open; the driver may reopen it later.
            return
        self._buffer += data
        term = self.dialect.terminator
        while (index := self._buffer.find(term)) >= 0:
            line = bytes(self._buffer[:index]).decode(errors="replace")
            del self._buffer[: index + len(term)]
            self._lines.put_nowait(line)

    async def _serve(self) -> None:
        while True:
            out = await self.dialect.respond(await self._lines.get())
            if out:
                self.inject(out)
