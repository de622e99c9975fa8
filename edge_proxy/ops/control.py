"""The local control socket: ``edge-proxy status`` and ``edge-proxy call`` talk to a running daemon.

A Unix socket (``control.socket``; default ``edge-proxy-<edge id>.sock`` in the temp directory),
readable by the daemon's user and group only. One JSON request per connection:

* ``{"op": "status"}`` -> one JSON line: the Gateway link, the outbox and every device;
* ``{"op": "call", "frame": COMMAND}`` -> the command runs through the same engine as a Gateway
  command (same validation, same queues); every message about it comes back as one JSON line,
  the terminal one last. Local commands never go to the Gateway or the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from edge_proxy.wire import framing
from edge_proxy.wire.names import LOCAL_PREFIX

log = logging.getLogger(__name__)
MAX_REQUEST = 1024**2
#: How long stop() lets a connection that is answering a call finish writing its last message.
FLUSH_ON_STOP = 1.0


class ControlServer:
    """Serves status and local commands on a Unix socket."""

    def __init__(
        self,
        path: str,
        handle_frame: Callable[[str], None],
        status_report: Callable[[], dict[str, Any]],
    ) -> None:
        self.path = path
        self.handle_frame = handle_frame
        self.status_report = status_report
        self.calls: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._server: asyncio.AbstractServer | None = None
        #: every open connection's handler task and its writer; those answering a call in busy
        self._clients: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._busy: set[asyncio.Task[Any]] = set()
        self._stopping = False

    async def start(self) -> None:
        """Listen; a stale socket file from a crashed run is replaced, nothing else is."""
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            _make_parent(self.path)
        else:
            if not stat.S_ISSOCK(mode):
                raise OSError(f"{self.path} exists and is not a socket (not replacing it)")
            try:
                _, writer = await asyncio.open_unix_connection(self.path)
            except ConnectionRefusedError:  # a socket file nobody answers on: left by a crash
                os.unlink(self.path)
            else:
                writer.close()
                raise OSError(f"another edge-proxy is serving {self.path}")
        self._server = await asyncio.start_unix_server(self._handle, self.path, limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)
        log.info("control socket %s", self.path)

    async def stop(self) -> None:
        """Stop listening, close every client connection, remove the socket file.

        A connection answering a call gets up to FLUSH_ON_STOP to write what it has (the
        engine has answered every command by then); an idle one is closed at once.
        """
        self._stopping = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        busy = [t for t in self._clients if t in self._busy]
        for task in self._clients:
            if task not in self._busy:
                task.cancel()
        if busy:
            await asyncio.wait(busy, timeout=FLUSH_ON_STOP)
        for task, writer in list(self._clients.items()):
            writer.transport.abort()
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if server is not None:
            await server.wait_closed()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def route(self, msg: dict[str, Any]) -> bool:
        """Deliver a message of a local command to its caller; False if it is not local."""
        ref = msg.get("requestRef")
        if isinstance(ref, str) and ref.startswith(LOCAL_PREFIX):
            queue = self.calls.get(ref)
            if queue is not None:
                queue.put_nowait({k: v for k, v in msg.items() if not k.startswith("_")})
            return True
        return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._stopping:  # accepted while stopping
            writer.close()
            return
        self._clients[task] = writer
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request must be a JSON object")
            op = request.get("op")
            self._busy.add(task)
            if op == "status":
                await self._send(writer, self.status_report())
            elif op == "call":
                async for msg in self._call(request.get("frame")):
                    await self._send(writer, msg)
            else:
                await self._send(writer, {"error": f"unknown op {op!r}"})
        except (ValueError, asyncio.TimeoutError, asyncio.LimitOverrunError) as exc:
            with contextlib.suppress(OSError):
                await self._send(writer, {"error": str(exc)})
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.pop(task, None)
            self._busy.discard(task)
            writer.close()

    async def _call(self, frame: Any) -> AsyncIterator[dict[str, Any]]:
        if not isinstance(frame, dict):
            raise ValueError("call needs a frame object")
        ref = f"{LOCAL_PREFIX}{uuid.uuid4().hex[:12]}"
        frame = {**frame, "requestRef": ref}
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.calls[ref] = queue
        try:
            self.handle_frame(json.dumps(frame))
            while True:
                msg = await queue.get()
                yield msg
                if framing.is_terminal(msg):
                    return
        finally:
            del self.calls[ref]

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, doc: dict[str, Any]) -> None:
        writer.write(framing.encode(doc).encode("utf-8") + b"\n")
        await writer.drain()


def _make_parent(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


async def request(path: str, doc: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Client side: send one request, yield each JSON line of the answer."""
    reader, writer = await asyncio.open_unix_connection(path, limit=16 * MAX_REQUEST)
    try:
        writer.write(json.dumps(doc).encode("utf-8") + b"\n")
        await writer.drain()
        while line := await reader.readline():
            yield json.loads(line)
    finally:
        writer.close()
