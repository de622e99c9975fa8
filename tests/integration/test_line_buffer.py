"""A line link's receive buffer is bounded: a device streaming bytes without a line end.

Against a real TCP server that streams raw bytes on demand and answers the pillar-ascii
requests, and a real pseudo-terminal. The buffer holds at most ``max_buffer`` bytes (default
64 KiB); beyond it the bytes are discarded, counted and logged, and only the transaction in
progress, if any, fails; the next one works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.errors import DeviceException
from edge_proxy_drivers.line import LineDevice, LineLink, LineSerialLink, LineTcpLink
from tests.integration.line_servers import PillarDialect, PtyLineServer
from tests.integration.support import LocalTcpServer, running

PROFILE = ProfileConfig.model_validate(
    {
        "line": {"terminator": "\r\n", "encoding": "ascii", "max_line": 256},
        "commands": {"STATUS": {"request": "STS?", "expect": "^STS (?P<door>\\d) (?P<brt>\\d+)$"}},
    }
)
STATUS = {"door": 0, "brt": 0}
#: The documented default of the ``max_buffer`` link key.
MAX_BUFFER = 64 * 1024


class StreamingServer(LocalTcpServer):
    """A pillar-ascii device on TCP that can also pour raw bytes onto its connection."""

    def __init__(self) -> None:
        super().__init__()
        self.dialect = PillarDialect()
        #: bytes sent right behind the next reply, in the same write (then cleared)
        self.after_reply = b""

    async def stream(self, total: int, chunk: int = 16 * 1024) -> None:
        """Send ``total`` bytes without a line end to every client."""
        for writer in list(self._writers):
            sent = 0
            while sent < total:
                n = min(chunk, total - sent)
                writer.write(b"x" * n)
                await writer.drain()
                sent += n

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer pillar-ascii requests, ``after_reply`` right behind the next reply."""
        with contextlib.suppress(asyncio.LimitOverrunError):
            while True:
                raw = await reader.readuntil(b"\r\n")
                request = raw[:-2].decode()
                await self.dialect.received(request)
                reply = self.dialect.reply_bytes(request)
                out, self.after_reply = reply + self.after_reply, b""
                writer.write(out)
                await writer.drain()


@pytest.fixture
async def server() -> AsyncIterator[StreamingServer]:
    """A running streaming server."""
    async with running(StreamingServer()) as srv:
        yield srv


@contextlib.asynccontextmanager
async def device_on(link: LineLink) -> AsyncIterator[LineDevice]:
    """An opened link with one device on it; closed afterwards."""
    await link.open()
    try:
        yield LineDevice(link, DeviceConfig(id="p1", profile="p", link="l"), PROFILE)
    finally:
        await link.close()


def tcp_link(server: StreamingServer, **over: Any) -> LineTcpLink:
    """A line-tcp link to the server."""
    cfg = LinkConfig.model_validate(
        {"driver": "line-tcp", "host": "127.0.0.1", "port": server.port, "timeout": "1s", **over}
    )
    return LineTcpLink("l", cfg)


def buffered(link: LineLink) -> int:
    """Bytes in the link's receive buffer (reaching into the driver: no public hook)."""
    protocol = link._protocol
    assert protocol is not None
    return len(protocol.buffer)


async def settle(link: LineLink) -> None:
    """Give the driver time to take in what was sent: until its buffer stops changing."""
    last, quiet = -1, 0
    while quiet < 10:
        await asyncio.sleep(0.01)
        now = buffered(link)
        quiet = quiet + 1 if now == last else 0
        last = now


async def test_bytes_without_a_line_end_do_not_grow_the_buffer(
    server: StreamingServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_proxy_drivers.line")
    link = tcp_link(server)
    async with device_on(link) as device:
        assert await device.execute("STATUS", {}) == STATUS
        total = 16 * MAX_BUFFER  # 1 MiB, while nobody is asking
        await server.stream(total)
        await settle(link)
        assert buffered(link) <= MAX_BUFFER
        assert link.overflows >= 1
        assert link.overflow_bytes + buffered(link) == total
        warnings = [r for r in caplog.records if "receive buffer" in r.getMessage()]
        assert warnings and len(warnings) < 5, [r.getMessage() for r in warnings]
        # the stream stopped: the next transaction works
        assert await device.execute("STATUS", {}) == STATUS
        assert buffered(link) == 0


async def test_max_buffer_is_a_link_key(server: StreamingServer) -> None:
    link = tcp_link(server, max_buffer="4KiB")
    async with device_on(link) as device:
        assert await device.execute("STATUS", {}) == STATUS
        await server.stream(40 * 1024, chunk=1024)
        await settle(link)
        assert buffered(link) <= 4 * 1024
        assert link.overflows >= 1
        assert link.overflow_bytes + buffered(link) == 40 * 1024
        assert await device.execute("STATUS", {}) == STATUS


async def test_an_overflow_fails_only_the_transaction_in_progress(
    server: StreamingServer,
) -> None:
    link = tcp_link(server, max_buffer="4KiB")
    async with device_on(link) as device:
        # the reply to this request never ends: 64 KiB without a line end come instead
        server.dialect.silent = True
        request = asyncio.ensure_future(device.execute("STATUS", {}))
        await server.dialect.wait_requests(1)
        await server.stream(64 * 1024, chunk=64 * 1024)
        with pytest.raises(DeviceException, match=r"max_line|receive buffer"):
            await request
        assert buffered(link) <= 4 * 1024
        server.dialect.silent = False
        assert await device.execute("STATUS", {}) == STATUS


async def test_a_pty_streaming_without_line_end_is_bounded() -> None:
    pty_server = PtyLineServer()
    pty_server.start()
    cfg = LinkConfig.model_validate(
        {"driver": "line-serial", "port": pty_server.slave_path, "max_buffer": "2KiB"}
    )
    link = LineSerialLink("s", cfg)
    try:
        async with device_on(link) as device:
            assert await device.execute("STATUS", {}) == STATUS
            total = 0
            while total < 32 * 1024:
                with contextlib.suppress(BlockingIOError):
                    total += os.write(pty_server.master, b"y" * 512)
                await asyncio.sleep(0.002)  # let the driver read
            await settle(link)
            assert buffered(link) <= 2 * 1024
            assert link.overflows >= 1
            assert await device.execute("STATUS", {}) == STATUS
    finally:
        await pty_server.stop()
