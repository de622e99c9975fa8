"""The outbox: every message for the Gateway, in order, bounded by count and bytes.

While the link is up the session's sender drains it; while it is down messages wait here. When
full, ``telemetry`` goes first, then ``progress_update``, then other notices, and terminal
messages last; every drop is counted and logged.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Callable
from typing import Any

from edge_proxy.wire import framing

log = logging.getLogger(__name__)

# Drop classes, dropped first to last.
DROP_ORDER = ("telemetry", "progress", "notice", "terminal")


def drop_class(msg: dict[str, Any]) -> str:
    """Which drop class a message belongs to."""
    mtype = msg.get("type")
    if mtype == "telemetry":
        return "telemetry"
    if mtype == "progress_update":
        return "progress"
    if framing.is_terminal(msg):
        return "terminal"
    return "notice"


class Outbox:
    """Bounded, ordered queue of encoded messages for the Gateway."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._queues: dict[str, collections.deque[tuple[int, str, dict[str, Any], int | None]]] = {
            k: collections.deque() for k in DROP_ORDER
        }
        self._seq = itertools.count()
        self.bytes = 0
        self.count = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        #: called with the spool id of a spooled message once it is sent (or dropped)
        self.on_done: Callable[[int], None] | None = None

    def put(self, msg: dict[str, Any], spool_id: int | None = None) -> None:
        """Queue a message, dropping others by policy if the bounds are reached."""
        try:
            text = framing.encode(msg)
        except (ValueError, TypeError, RecursionError) as exc:  # never take the caller down
            log.error(
                "outbox: cannot encode a %s: %s",
                msg.get("type"),
                exc,
                extra={"request_ref": msg.get("requestRef")},
            )
            self._count_drop(drop_class(msg), msg, "not encodable")
            self._done(spool_id)
            return
        size = len(text.encode("utf-8"))
        cls = drop_class(msg)
        while self.count and (
            self.count + 1 > self.max_messages or self.bytes + size > self.max_bytes
        ):
            if not self._drop_one(cls):
                break
        if self.count + 1 > self.max_messages or self.bytes + size > self.max_bytes:
            self._count_drop(cls, msg, "it alone exceeds the outbox")
            self._done(spool_id)
            return
        self._queues[cls].append((next(self._seq), text, msg, spool_id))
        self.count += 1
        self.bytes += size
        self._ready.set()

    def _drop_one(self, incoming: str) -> bool:
        for cls in DROP_ORDER:
            queue = self._queues[cls]
            if queue:
                # an incoming message of a lower class is dropped itself rather than a higher one
                if DROP_ORDER.index(cls) > DROP_ORDER.index(incoming):
                    return False
                _, text, msg, spool_id = queue.popleft()
                self.count -= 1
                self.bytes -= len(text.encode("utf-8"))
                self._count_drop(cls, msg, "outbox full")
                self._done(spool_id)
                return True
        return False

    def _done(self, spool_id: int | None) -> None:
        if spool_id is not None and self.on_done is not None:
            self.on_done(spool_id)

    def _count_drop(self, cls: str, msg: dict[str, Any], why: str) -> None:
        self.dropped[msg.get("type", cls)] += 1
        level = logging.ERROR if cls == "terminal" else logging.WARNING
        log.log(
            level,
            "outbox: dropped a %s (%s); %d dropped so far",
            msg.get("type"),
            why,
            sum(self.dropped.values()),
            extra={"request_ref": msg.get("requestRef")},
        )

    def peek(self) -> tuple[str, str, dict[str, Any]] | None:
        """The oldest message (class, text, message), or None."""
        best: tuple[int, str] | None = None
        for cls, queue in self._queues.items():
            if queue and (best is None or queue[0][0] < best[0]):
                best = (queue[0][0], cls)
        if best is None:
            return None
        _, text, msg, _ = self._queues[best[1]][0]
        return best[1], text, msg

    def pop(self, cls: str) -> None:
        """Remove the message peek() returned."""
        _, text, _, spool_id = self._queues[cls].popleft()
        self._done(spool_id)
        self.count -= 1
        self.bytes -= len(text.encode("utf-8"))
        if self.count == 0:
            self._empty.set()

    async def drained(self) -> None:
        """Wait until everything queued has been sent."""
        while self.count:
            self._empty.clear()
            await self._empty.wait()

    async def wait(self) -> None:
        """Wait until there is something to send."""
        while self.count == 0:
            self._ready.clear()
            await self._ready.wait()
