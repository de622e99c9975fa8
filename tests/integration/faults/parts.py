"""Reusable fault parts: a misbehaving network between edge and Gateway, and misbehaving devices.

* :class:`FaultProxy`: a TCP proxy between the edge and the Gateway on raw non-blocking sockets
  (so it never reads more than it is told to). Modes: ``pass``; ``blackhole`` (connections stay
  open, every byte in both directions is read and discarded); ``close`` (every new connection
  is closed as soon as it is accepted; :meth:`FaultProxy.close_all` drops the open ones);
  ``throttle`` (bytes from the edge are read at ``rate`` bytes/s: a Gateway that reads slowly).
  With ``tap=True`` it keeps every byte the edge sent, and :func:`client_messages` decodes the
  WebSocket text frames in them, so a test knows what the edge sent into a black hole.
* :class:`SilentTcpDevice`: accepts TCP connections and never answers.
* :class:`ModbusExceptionDevice`: a raw Modbus-TCP responder that answers every request with an
  exception frame.
* :class:`RandomBytesPty`: a serial line (``pty.openpty()``) whose device answers every request
  with random bytes that can never be a reply of its unit.

Sleeps here only pace a throttle; no test synchronises on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import pty
import random
import socket
import tty
from collections.abc import Callable
from typing import Any, Literal

from tests.integration.support import LocalTcpServer

Mode = Literal["pass", "blackhole", "close", "throttle"]

_CHUNK = 65536


async def poll_until(
    pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> None:
    """Poll ``pred`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- WebSocket frames of a tap


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def client_messages(stream: bytes) -> list[dict[str, Any]]:
    """The JSON text messages in the bytes a WebSocket client sent (handshake first).

    Only complete frames count; the parse stops at a close frame or at a frame cut short.
    The test Gateway must refuse permessage-deflate, so that frames are plain.
    """
    end = stream.find(b"\r\n\r\n")
    if end < 0:
        return []
    pos = end + 4
    out: list[dict[str, Any]] = []
    parts: list[bytes] = []
    size = len(stream)
    while size - pos >= 2:
        b0, b1 = stream[pos], stream[pos + 1]
        fin, rsv, opcode = b0 & 0x80, b0 & 0x70, b0 & 0x0F
        length = b1 & 0x7F
        p = pos + 2
        if length == 126:
            if size - p < 2:
                break
            length = int.from_bytes(stream[p : p + 2], "big")
            p += 2
        elif length == 127:
            if size - p < 8:
                break
            length = int.from_bytes(stream[p : p + 8], "big")
            p += 8
        mask = b""
        if b1 & 0x80:
            if size - p < 4:
                break
            mask = stream[p : p + 4]
            p += 4
        if size - p < length:
            break
        payload = stream[p : p + length]
        if mask:
            payload = _unmask(payload, mask)
        pos = p + length
        if rsv:
            raise AssertionError("a compressed WebSocket frame: the Gateway must refuse deflate")
        if opcode == 0x8:  # close
            break
        if opcode in (0x1, 0x0):
            parts.append(payload)
            if fin:
                text = b"".join(parts).decode("utf-8")
                parts.clear()
                with contextlib.suppress(ValueError):
                    msg = json.loads(text)
                    if isinstance(msg, dict):
                        out.append(msg)
    return out


# ---------------------------------------------------------------- the proxy


class ProxyConn:
    """One edge connection through the proxy."""

    def __init__(self, number: int, client: socket.socket) -> None:
        self.number = number
        self.client = client
        self.upstream: socket.socket | None = None
        self.from_edge = bytearray()  # every byte the edge sent (with tap=True)
        self.discarded = 0  # bytes thrown away in either direction
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    def messages(self) -> list[dict[str, Any]]:
        """The JSON messages the edge sent on this connection (with tap=True)."""
        return client_messages(bytes(self.from_edge))


class FaultProxy:
    """A TCP proxy in front of ``upstream`` whose behaviour the test switches at any time."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        tap: bool = False,
        rcvbuf: int | None = None,
    ) -> None:
        self.upstream = upstream
        self.tap = tap
        self.rcvbuf = rcvbuf
        self.mode: Mode = "pass"
        self.rate = 1024.0  # bytes/s from the edge in "throttle"
        self.port = 0
        self.conns: list[ProxyConn] = []
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """ws:// address of the proxy."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return len(self.conns)

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf is not None:
            # inherited by accepted sockets: a small window, so a slow reader is felt at once
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._accept_task = asyncio.create_task(self._accept_loop(), name="fault-proxy-accept")

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        task, self._accept_task = self._accept_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        await self.close_all()

    def set_mode(self, mode: Mode, rate: float | None = None) -> None:
        """Switch the behaviour for open and new connections."""
        self.mode = mode
        if rate is not None:
            self.rate = rate

    async def close_all(self) -> None:
        """Close every open connection, both sides."""
        for conn in list(self.conns):
            task = conn.task
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._close(conn)

    async def restore(self) -> None:
        """Back to ``pass``, dropping the connections the fault held (the edge must reconnect)."""
        self.set_mode("pass")
        await self.close_all()

    def open_conns(self) -> list[ProxyConn]:
        """Connections not closed yet."""
        return [c for c in self.conns if not c.closed]

    def edge_messages(self) -> list[tuple[int, dict[str, Any]]]:
        """(connection number, message) for every message the edge sent through the proxy."""
        return [(c.number, m) for c in self.conns for m in c.messages()]

    @staticmethod
    def _close(conn: ProxyConn) -> None:
        conn.closed = True
        for sock in (conn.client, conn.upstream):
            if sock is not None:
                sock.close()

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            client, _ = await loop.sock_accept(self._listener)
            client.setblocking(False)
            conn = ProxyConn(len(self.conns) + 1, client)
            self.conns.append(conn)
            if self.mode == "close":
                self._close(conn)
                continue
            conn.task = asyncio.create_task(self._serve(conn), name=f"fault-proxy-{conn.number}")

    async def _serve(self, conn: ProxyConn) -> None:
        loop = asyncio.get_running_loop()
        pumps: list[asyncio.Task[None]] = []
        try:
            if self.mode != "blackhole":
                upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                upstream.setblocking(False)
                conn.upstream = upstream
                try:
                    await loop.sock_connect(upstream, self.upstream)
                except OSError:
                    return
            pumps.append(asyncio.create_task(self._from_edge(conn)))
            if conn.upstream is not None:
                pumps.append(asyncio.create_task(self._to_edge(conn)))
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await pump
            self._close(conn)

    async def _from_edge(self, conn: ProxyConn) -> None:
        loop = asyncio.get_running_loop()
        while True:
            throttled = self.mode == "throttle"
            size = max(1, int(self.rate // 8)) if throttled else _CHUNK
            try:
                data = await loop.sock_recv(conn.client, size)
            except OSError:
                return
            if not data:
                return
            if self.tap:
                conn.from_edge += data
            if self.mode == "blackhole" or conn.upstream is None:
                conn.discarded += len(data)
                continue
            try:
                await loop.sock_sendall(conn.upstream, data)
            except OSError:
                return
            if throttled and self.mode == "throttle":
                await asyncio.sleep(len(data) / self.rate)  # paces the throttle

    async def _to_edge(self, conn: ProxyConn) -> None:
        loop = asyncio.get_running_loop()
        assert conn.upstream is not None
        while True:
            try:
                data = await loop.sock_recv(conn.upstream, _CHUNK)
            except OSError:
                return
            if not data:
                return
            if self.mode == "blackhole":
                conn.discarded += len(data)
                continue
            try:
                await loop.sock_sendall(conn.client, data)
            except OSError:
                return


# ---------------------------------------------------------------- misbehaving devices


class _TcpDevice(LocalTcpServer):
    """A misbehaving TCP device on 127.0.0.1 that counts the requests it got."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0


class SilentTcpDevice(_TcpDevice):
    """Accepts connections, reads everything, never answers."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read and discard until the client goes away."""
        while await reader.read(4096):
            self.requests += 1


class ModbusExceptionDevice(_TcpDevice):
    """Modbus TCP: every request is answered, always with an exception (``code``)."""

    def __init__(self, code: int = 2) -> None:
        super().__init__()
        self.code = code
        self.functions: list[int] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer each MBAP request with function | 0x80 and the exception code."""
        while True:
            header = await reader.readexactly(7)
            tid, _pid, length, unit = (
                header[0:2],
                header[2:4],
                int.from_bytes(header[4:6], "big"),
                header[6],
            )
            pdu = await reader.readexactly(max(1, length - 1))
            function = pdu[0]
            self.requests += 1
            self.functions.append(function)
            reply = bytes([unit, (function | 0x80) & 0xFF, self.code])
            writer.write(tid + b"\x00\x00" + len(reply).to_bytes(2, "big") + reply)
            await writer.drain()


class RandomBytesPty:
    """A serial device on a pseudo-terminal that answers every request with random bytes.

    No burst contains ``unit``, so none can be (or start) a reply of that unit: every request
    sent to it fails, whatever the framing. The edge opens :attr:`path`.
    """

    def __init__(self, unit: int, seed: int = 7, max_burst: int = 48) -> None:
        self.unit = unit
        self.max_burst = max_burst
        self.rng = random.Random(seed)
        self.requests = 0
        self.sent = 0
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)  # no echo until the edge configures the port itself
        self.path = os.ttyname(self._slave)
        os.set_blocking(self._master, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._readable)
        self._closed = False

    def _burst(self) -> bytes:
        size = self.rng.randint(1, self.max_burst)
        values = [v for v in range(256) if v != self.unit]
        return bytes(self.rng.choice(values) for _ in range(size))

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EIO: the edge has the port closed right now
            if exc.errno != errno.EIO:
                raise
            return
        if not data:
            return
        self.requests += 1
        burst = self._burst()
        with contextlib.suppress(BlockingIOError, OSError):
            self.sent += os.write(self._master, burst)

    def close(self) -> None:
        """Close both ends."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._master)
        os.close(self._master)
        os.close(self._slave)
