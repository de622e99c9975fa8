"""The Gateway link: one WebSocket session, REGISTER, HEARTBEAT and reconnect backoff.

While the link is up a sender task drains the :class:`~edge_proxy.runtime.outbox.Outbox`;
while it is down messages wait there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State

from edge_proxy.config import GatewayConfig
from edge_proxy.core.backoff import Backoff
from edge_proxy.runtime.outage import OutageLog
from edge_proxy.runtime.outbox import Entry, Outbox
from edge_proxy.wire import messages as protocol

log = logging.getLogger(__name__)

CONFIRM_EVERY = 0.1  # at most one confirmation ping per this many seconds
FLUSH_MESSAGES = 256  # at most this many messages ...
FLUSH_BYTES = 256 * 1024  # ... or bytes in one write (the rest goes when the buffer drains)


def build_ssl_context(config: GatewayConfig) -> ssl.SSLContext | None:
    """The TLS context for a wss:// URL (verification on unless the config turns it off)."""
    if not config.url.startswith("wss://"):
        return None
    tls = config.tls
    ctx = ssl.create_default_context(cafile=tls.ca_file if tls else None)
    if tls is not None:
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        if not tls.verify:
            log.warning("gateway.tls.verify is off: the Gateway's certificate is not checked")
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    return ctx


class OneWriteConnection(ClientConnection):
    """A client connection that hands each frame to the transport in one write.

    websockets writes a frame's header and payload separately; joining them halves the
    system calls (and TCP segments) of every message. End-of-stream markers keep their
    meaning: they go through the library's own handling.
    """

    def send_data(self) -> None:
        """Write everything the protocol has to send, joined, then any end of stream."""
        chunks = self.protocol.data_to_send()
        data = [c for c in chunks if c]
        if data:
            self.transport.write(data[0] if len(data) == 1 else b"".join(data))
        if len(data) != len(chunks):  # an empty chunk is the end of the stream
            self.protocol.writes.append(b"")  # let the library close as it does
            super().send_data()


def _writable(ws: ClientConnection) -> bool:
    """Whether a frame can go to the transport now without waiting: open, not paused."""
    return (
        ws.protocol.state is State.OPEN
        and ws.send_in_progress is None
        and not ws.paused
        and not ws.transport.is_closing()
    )


class RegistrationRejected(Exception):
    """The Gateway answered REGISTER with an error."""


class Session:
    """Keeps one WebSocket session to the Gateway alive, forever, until stopped."""

    def __init__(
        self,
        config: GatewayConfig,
        factory: protocol.MessageFactory,
        outbox: Outbox,
        on_frame: Callable[[str | bytes], None],
        register: Callable[[], dict[str, Any]],
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.config = config
        self.factory = factory
        self.outbox = outbox
        self.on_frame = on_frame
        self.register_msg = register
        self.status = status
        self.backoff = Backoff(config.reconnect)
        self.state = "connecting"
        self.connects = 0
        self.failures = 0
        self.last_error: str | None = None
        self.messages_in: collections.Counter[str] = collections.Counter()
        self.messages_out: collections.Counter[str] = collections.Counter()
        self.ws: ClientConnection | None = None
        self._stopping = False
        self._ssl = build_ssl_context(config)
        self._outage = OutageLog(log, "gateway link")
        self._written = asyncio.Event()
        self._confirmed = 0
        #: called once REGISTER is sent on a new connection (telemetry snapshots follow it)
        self.on_registered: Callable[[], None] | None = None

    async def run(self) -> None:
        """Connect, serve, and reconnect with backoff until stop() is called."""
        while not self._stopping:
            started = time.monotonic()
            try:
                await self._serve_once()
            except asyncio.CancelledError:
                raise
            except (
                OSError,
                InvalidHandshake,
                InvalidURI,
                TimeoutError,
                ConnectionClosed,
                RegistrationRejected,
                ssl.SSLError,
            ) as exc:
                self._failed(exc)
            except Exception as exc:  # keep the session alive whatever goes wrong
                log.exception("gateway session error")
                self._failed(exc)
            finally:
                self.ws = None
            if self._stopping:
                break
            if time.monotonic() - started > 10.0:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            self.state = "backoff"
            log.info("gateway: reconnecting in %.2fs", delay)
            await asyncio.sleep(delay)
        self.state = "stopped"

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._outage.failed(self.last_error)

    async def _serve_once(self) -> None:
        headers = {}
        token = self.config.token.get_secret_value() if self.config.token else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.state = "connecting"
        log.info("gateway: connecting to %s", self.config.url)
        async with connect(
            self.config.url,
            additional_headers=headers,
            ssl=self._ssl,
            open_timeout=self.config.open_timeout,
            ping_interval=self.config.ping_interval,
            ping_timeout=self.config.ping_timeout,
            max_size=self.config.max_message_size * 2,
            max_queue=64,
            close_timeout=5,
            compression=None if self.config.compression == "none" else "deflate",
            create_connection=OneWriteConnection,
        ) as ws:
            self.ws = ws
            self._confirmed = 0
            register = self.register_msg()
            await ws.send(protocol.encode(register))
            self.messages_out["REGISTER"] += 1
            self.connects += 1
            self.state = "online"
            self._outage.recovered()
            if self.on_registered is not None:
                self.on_registered()
            log.info(
                "gateway: connected and REGISTER sent (%d devices)",
                len(register["clientInfo"]["devices"]),
            )
            self.outbox.on_put = lambda: self._flush(ws)
            tasks = [
                asyncio.create_task(self._reader(ws), name="gateway-reader"),
                asyncio.create_task(self._sender(ws), name="gateway-sender"),
                asyncio.create_task(self._confirmer(ws), name="gateway-confirmer"),
                asyncio.create_task(self._heartbeat(ws), name="gateway-heartbeat"),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.outbox.on_put = None
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                # what the Gateway has not confirmed is sent again on the next connection
                resent = self.outbox.requeue()
                if resent:
                    log.info(
                        "gateway: %d unconfirmed message(s) kept for the next connection", resent
                    )
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc
            if not self._stopping:
                raise ConnectionError("gateway connection ended")

    async def _reader(self, ws: ClientConnection) -> None:
        registered_check = True
        async for frame in ws:
            if registered_check:
                registered_check = False
                if self._is_rejection(frame):
                    raise RegistrationRejected(str(frame)[:200])
            self.messages_in["frames"] += 1
            self.on_frame(frame)

    @staticmethod
    def _is_rejection(frame: str | bytes) -> bool:
        try:
            msg = protocol.parse_frame(frame)
        except Exception:
            return False
        return msg.type == "ERROR" and msg.request_ref is None

    async def _sender(self, ws: ClientConnection) -> None:
        """Write what the outbox holds whenever :meth:`_flush` could not (write buffer full)."""
        while True:
            entry = await self.outbox.next()
            if _writable(ws):
                self._write(ws, [entry, *self._takeable()])
            else:  # the library's own path: it waits for the buffer to drain, or raises
                await ws.send(entry.text)
                self._sent(entry)

    def _flush(self, ws: ClientConnection) -> None:
        """Write what may be sent now, in one write, from the caller (``Outbox.put``)."""
        if _writable(ws):
            entries = self._takeable()
            if entries:
                self._write(ws, entries)

    def _takeable(self) -> list[Entry]:
        entries: list[Entry] = []
        size = 0
        while len(entries) < FLUSH_MESSAGES and size < FLUSH_BYTES:
            entry = self.outbox.take()
            if entry is None:
                break
            entries.append(entry)
            size += entry.size
        return entries

    def _write(self, ws: ClientConnection, entries: list[Entry]) -> None:
        """Frame ``entries`` and hand them to the transport in one write."""
        try:
            for entry in entries:
                ws.protocol.send_text(entry.text.encode())
            ws.send_data()
        except Exception:
            # the entries are taken: closing the connection sends them again on the next one
            log.exception("gateway: write failed; closing the connection")
            ws.transport.abort()
            return
        for entry in entries:
            self._sent(entry)

    def _sent(self, entry: Entry) -> None:
        self.outbox.written(entry)
        self.messages_out[entry.mtype] += 1
        self._written.set()

    async def _confirmer(self, ws: ClientConnection) -> None:
        """Ping after writes; a pong proves the Gateway read everything written before it."""
        last_ping = 0.0
        while True:
            if self.outbox.last_sent == self._confirmed:
                self._written.clear()
                await self._written.wait()
            wait = CONFIRM_EVERY - (time.monotonic() - last_ping)
            if wait > 0:
                await asyncio.sleep(wait)
            mark = self.outbox.last_sent
            last_ping = time.monotonic()
            pong = asyncio.ensure_future(await ws.ping())
            # asyncio.wait, not wait_for: the pong future belongs to websockets, never cancel it
            done, _ = await asyncio.wait({pong}, timeout=self.config.ping_timeout)
            if not done:
                raise ConnectionError(
                    f"no pong within {self.config.ping_timeout:g}s: the link is dead"
                )
            pong.result()  # ConnectionClosed if the link closed meanwhile
            self._confirmed = mark
            self.outbox.confirm(mark)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            await ws.send(protocol.encode(self.factory.heartbeat(self.status())))
            self.messages_out["HEARTBEAT"] += 1

    async def stop(self) -> None:
        """Close the session with code 1001 (going away) after flushing what can be sent."""
        self._stopping = True
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.outbox.drained(), 2.0)
            with contextlib.suppress(Exception):
                await ws.close(code=1001, reason="edge shutting down")
