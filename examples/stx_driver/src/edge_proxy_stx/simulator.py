"""A tiny STX device: 16-bit holding registers behind a TCP port or a pseudo-terminal.

From a shell (the README walkthrough)::

    python -m edge_proxy_stx.simulator --port 15020

Addresses ``0x0000``-``0x00FF`` exist and start at 0, plus those given to the constructor. A
request for another address is answered ``E2``, a write to a read-only register ``E3``, an
unparsable request ``E1`` and a request with a bad checksum ``E4``.

Tests make it misbehave with its knobs: ``silent`` (never answers), ``corrupt_next`` (the next
reply has a bad checksum), ``noise_next`` (bytes sent before the next reply) and
``hang_up_next`` (the next request closes the connection, TCP only). ``requests`` lists every
request payload received, in order, and ``on_request`` is called with each one as it arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pty
import signal
import tty
from collections.abc import Callable, Iterable, Mapping, Sequence

from .frames import (
    ChecksumError,
    ErrorReply,
    FrameError,
    FrameReader,
    ReadReply,
    Reply,
    WriteAck,
    WriteRequest,
    encode_frame,
    parse_request,
)

#: The registers of the walkthrough's boiler controller: setpoint 21.5 C, flow 19.8 C, pump on.
DEMO_REGISTERS = {0x0010: 215, 0x0020: 198, 0x0030: 1, 0x0031: 0}
#: Its measured values, which cannot be written.
DEMO_READ_ONLY = frozenset({0x0020, 0x0031})


class StxSimulator:
    """A simulated STX device: its registers, its misbehaviour knobs, what it received."""

    def __init__(
        self,
        registers: Mapping[int, int] | None = None,
        *,
        size: int = 0x100,
        read_only: Iterable[int] = (),
    ) -> None:
        self.registers: dict[int, int] = dict.fromkeys(range(size), 0)
        self.registers.update(registers or {})
        self.read_only = set(read_only)
        self.requests: list[bytes] = []
        self.silent = False
        self.corrupt_next = False
        self.noise_next = b""
        self.hang_up_next = False
        self.on_request: Callable[[bytes], None] | None = None
        #: Called with one line per exchange (the command line prints them).
        self.log: Callable[[str], None] | None = None
        #: TCP connections accepted so far.
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._pty: tuple[int, int] | None = None
        self._pty_frames = FrameReader()

    # ------------------------------------------------------------------ the device

    def answer(self, payload: bytes) -> Reply:
        """The device's reply to one request payload (writes are applied)."""
        try:
            request = parse_request(payload)
        except FrameError:
            return ErrorReply("1")
        if request.address not in self.registers:
            return ErrorReply("2")
        if isinstance(request, WriteRequest):
            if request.address in self.read_only:
                return ErrorReply("3")
            self.registers[request.address] = request.value
            return WriteAck(request.address)
        return ReadReply(request.address, self.registers[request.address])

    def respond(self, frames: FrameReader) -> tuple[bytes, bool]:
        """The bytes to send for the frames buffered in ``frames``, and whether to hang up."""
        out = bytearray()
        while True:
            try:
                payload = frames.next_payload()
            except ChecksumError:
                out += self._reply_bytes(b"?", ErrorReply("4"))
                continue
            except FrameError:
                continue  # a broken frame is not a request: like a real device, stay quiet
            if payload is None:
                return bytes(out), False
            self.requests.append(payload)
            if self.on_request is not None:
                self.on_request(payload)
            if self.hang_up_next:
                self.hang_up_next = False
                return bytes(out), True
            out += self._reply_bytes(payload, self.answer(payload))

    def _reply_bytes(self, request: bytes, reply: Reply) -> bytes:
        if self.log is not None:
            shown = "(silent)" if self.silent else reply.payload().decode()
            self.log(f"{request.decode('ascii', 'replace')} -> {shown}")
        if self.silent:
            return b""
        frame = encode_frame(reply.payload())
        if self.corrupt_next:
            self.corrupt_next = False
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        noise, self.noise_next = self.noise_next, b""
        return noise + frame

    # ------------------------------------------------------------------ TCP

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on TCP (port 0: any free port); return the port."""
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        frames = FrameReader()
        try:
            while data := await reader.read(4096):
                frames.feed(data)
                out, hang_up = self.respond(frames)
                if out:
                    writer.write(out)
                    await writer.drain()
                if hang_up:
                    break
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    # ------------------------------------------------------------------ pseudo-terminal

    def open_pty(self) -> str:
        """Answer on a new pseudo-terminal; return the path a serial driver opens."""
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo and no CR/LF translation, like a real serial line
        os.set_blocking(master, False)
        self._pty = (master, slave)
        asyncio.get_running_loop().add_reader(master, self._pty_readable)
        return os.ttyname(slave)

    def _pty_readable(self) -> None:
        assert self._pty is not None
        master = self._pty[0]
        try:
            data = os.read(master, 4096)
        except OSError:
            return  # nothing to read after all, or the line is gone
        self._pty_frames.feed(data)
        out, _ = self.respond(self._pty_frames)
        if out:
            os.write(master, out)

    # ------------------------------------------------------------------ shutdown

    async def stop(self) -> None:
        """Stop listening, drop every connection, close the pseudo-terminal."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._handlers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.wait_closed()
        if self._pty is not None:
            asyncio.get_running_loop().remove_reader(self._pty[0])
            for fd in self._pty:
                os.close(fd)
            self._pty = None


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the walkthrough's boiler controller on TCP until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m edge_proxy_stx.simulator", description="A simulated STX device."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=15020)
    args = parser.parse_args(argv)

    async def serve() -> None:
        sim = StxSimulator(DEMO_REGISTERS, read_only=DEMO_READ_ONLY)
        sim.log = lambda line: print(line, flush=True)
        port = await sim.start(args.host, args.port)
        print(f"STX simulator listening on {args.host}:{port}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):  # not on Windows: Ctrl-C still works
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await sim.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
