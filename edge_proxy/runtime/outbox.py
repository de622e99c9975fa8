"""The outbox: every message for the Gateway, in order, until the Gateway is known to have it.

A message is *pending* until the sender writes it to the WebSocket, then *unconfirmed* until a
pong answers a ping sent after it (TCP and WebSocket keep order, so that pong proves the
Gateway read the message). Only then does it leave the outbox. When a connection drops, the
unconfirmed messages go back to the front, in order, and are sent again after the next
``REGISTER`` with the same text, so with the same ``messageId``.

The outbox is bounded by count and bytes. When full, ``telemetry`` goes first, then
``progress_update``, then other notices, then terminal messages that no accepted command is
waiting for (replays, rejections); every drop is counted and logged. A terminal of an accepted
command is never dropped: the engine reserves its room before it acknowledges the command
(:meth:`Outbox.reserve`), and such a terminal may take the outbox past ``max_bytes`` rather than
be lost (by at most ``commands.max_queued`` terminals, each within ``gateway.max_frame``).

Messages that the on-disk spool must hold first carry a ticket: the sender does not write one
before the spool has committed it (:meth:`Outbox.mark_durable`), so nothing reaches the
Gateway that a crash could make the edge contradict.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_proxy.wire import framing

log = logging.getLogger(__name__)

# Drop classes, dropped first to last; "protected" (terminals of accepted commands) never.
DROP_ORDER = ("telemetry", "progress", "notice", "terminal")
PROTECTED = "protected"

PENDING, SENT, GONE = 0, 1, 2


def drop_class(msg: dict[str, Any]) -> str:
    """Which drop class a message belongs to (before any reservation is considered)."""
    mtype = msg.get("type")
    if mtype == "telemetry":
        return "telemetry"
    if mtype == "progress_update":
        return "progress"
    if framing.is_terminal(msg):
        return "terminal"
    return "notice"


@dataclass(eq=False, slots=True)
class Entry:
    """One message in the outbox."""

    seq: int
    cls: str
    text: str
    size: int
    mtype: str
    request_ref: str | None
    spool_id: int | None
    ticket: int
    state: int = PENDING


class Outbox:
    """Bounded, ordered queue of encoded messages for the Gateway, kept until confirmed."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._seq = itertools.count(1)
        self._pending: collections.deque[Entry] = collections.deque()  # by seq; GONE skipped
        self._pending_gone = 0
        self._unconfirmed: collections.deque[Entry] = collections.deque()
        # droppable messages by class, oldest first (confirmed and dropped ones leave from the
        # front: both always take the oldest); terminals of accepted commands are never here
        self._by_class: dict[str, collections.deque[Entry]] = {
            k: collections.deque() for k in DROP_ORDER
        }
        self._reserved: set[str] = set()
        self._protected = 0  # terminals of accepted commands held
        self.bytes = 0
        self.count = 0
        self.last_sent = 0  # seq of the last message whose write completed
        self.durable = 0  # the spool's last committed ticket
        self.dropped: collections.Counter[str] = collections.Counter()
        self._ready = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._durable_event = asyncio.Event()
        #: called with the spool id of a spooled message once it is confirmed (or dropped)
        self.on_done: Callable[[int], None] | None = None
        #: called after each put: a live session writes what may be sent at once (else the
        #: sender task is woken)
        self.on_put: Callable[[], None] | None = None
        self._later_due = False

    # ------------------------------------------------------------------ producers

    def reserve(self, request_ref: str) -> bool:
        """Keep room for the terminal of a command about to be accepted; False if none is left."""
        if request_ref in self._reserved:
            return True
        if self._protected + len(self._reserved) + 1 > self.max_messages:
            return False
        self._reserved.add(request_ref)
        return True

    def release(self, request_ref: str) -> None:
        """Give back a reservation whose terminal will not come through :meth:`put`."""
        self._reserved.discard(request_ref)

    @property
    def reserved(self) -> int:
        """Terminals reserved and not yet queued."""
        return len(self._reserved)

    def put(self, msg: dict[str, Any], spool_id: int | None = None) -> None:
        """Queue a message, dropping others by policy if the bounds are reached.

        ``msg["_ticket"]``, when set, is the spool write to wait for before sending;
        ``msg["_text"]``, when set, is the message already encoded; ``msg["_later"]``, when
        True, writes it at the end of the loop's turn rather than at once (an ``ack``).
        """
        ticket = msg.get("_ticket")
        ticket = ticket if isinstance(ticket, int) else 0
        ref = msg.get("requestRef")
        ref = ref if isinstance(ref, str) else None
        cls = drop_class(msg)
        if cls == "terminal" and ref is not None and ref in self._reserved:
            self._reserved.discard(ref)
            cls = PROTECTED
        try:
            text = msg.get("_text")
            if not isinstance(text, str):
                text = framing.encode(msg)
        except (ValueError, TypeError, RecursionError) as exc:  # never take the caller down
            log.error(
                "outbox: cannot encode a %s: %s",
                msg.get("type"),
                exc,
                extra={"request_ref": ref},
            )
            self._count_drop(cls, str(msg.get("type")), ref, "not encodable")
            self._done(spool_id)
            return
        size = framing.text_size(text)
        entry = Entry(next(self._seq), cls, text, size, str(msg.get("type")), ref, spool_id, ticket)
        if not self._make_room(entry):
            self._count_drop(cls, entry.mtype, ref, "it alone exceeds the outbox")
            self._done(spool_id)
            return
        self._pending.append(entry)
        if cls == PROTECTED:
            self._protected += 1
        else:
            self._by_class[cls].append(entry)
        self.count += 1
        self.bytes += size
        self._empty.clear()
        if self.on_put is not None and msg.get("_later") is True:
            self._write_later()
        else:
            self._hand_over()

    def _hand_over(self) -> None:
        """Let a live session write what may be sent now; wake the sender for the rest."""
        if self.on_put is not None:
            self.on_put()
            if self._head() is None:
                return  # written already: no need to wake the sender
        self._ready.set()

    def _write_later(self) -> None:
        """Hand the pending messages to the session at the end of this turn of the loop.

        An ``ack`` is queued at once (so it stays ahead of its terminal) but written after
        the work the same turn started: a command's device request leaves first and the
        ``ack`` is written while the device answers. Anything put meanwhile without
        ``_later`` writes everything before it, in order.
        """
        if self._later_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): write now
            self._put_later()
            return
        self._later_due = True
        loop.call_soon(self._put_later)

    def _put_later(self) -> None:
        self._later_due = False
        self._hand_over()

    def _over(self, entry: Entry) -> bool:
        # Reserved room is not kept empty: a terminal of an accepted command evicts any other
        # message when it comes, and protected + reserved <= max_messages always leaves it room.
        return self.count + 1 > self.max_messages or self.bytes + entry.size > self.max_bytes

    def _make_room(self, entry: Entry) -> bool:
        while self._over(entry):
            if not self._drop_one(entry.cls):
                # a terminal of an accepted command is kept even past max_bytes
                return entry.cls == PROTECTED and self.count + 1 <= self.max_messages
        return True

    def _drop_one(self, incoming: str) -> bool:
        limit = len(DROP_ORDER) if incoming == PROTECTED else DROP_ORDER.index(incoming) + 1
        for cls in DROP_ORDER[:limit]:
            queue = self._by_class[cls]
            while queue and queue[0].state == GONE:
                queue.popleft()
            if queue:
                victim = queue.popleft()
                self._forget(victim)
                self._count_drop(cls, victim.mtype, victim.request_ref, "outbox full")
                self._done(victim.spool_id)
                return True
        return False

    def _forget(self, entry: Entry) -> None:
        if entry.state == PENDING:
            self._pending_gone += 1
            if self._pending_gone > 64 and self._pending_gone > len(self._pending) // 2:
                self._pending = collections.deque(e for e in self._pending if e.state != GONE)
                self._pending_gone = 0
        entry.state = GONE
        if entry.cls == PROTECTED:
            self._protected -= 1
        self.count -= 1
        self.bytes -= entry.size
        if self.count == 0:
            self._empty.set()

    def _done(self, spool_id: int | None) -> None:
        if spool_id is not None and self.on_done is not None:
            self.on_done(spool_id)

    def _count_drop(self, cls: str, mtype: str, ref: str | None, why: str) -> None:
        self.dropped[mtype] += 1
        level = logging.ERROR if cls in ("terminal", PROTECTED) else logging.WARNING
        log.log(
            level,
            "outbox: dropped a %s (%s); %d dropped so far",
            mtype,
            why,
            sum(self.dropped.values()),
            extra={"request_ref": ref},
        )

    def mark_durable(self, ticket: int) -> None:
        """The spool has committed everything up to ``ticket``."""
        if ticket > self.durable:
            self.durable = ticket
            self._durable_event.set()

    # ------------------------------------------------------------------ the sender

    def _head(self) -> Entry | None:
        while self._pending and self._pending[0].state == GONE:
            self._pending.popleft()
            self._pending_gone -= 1
        return self._pending[0] if self._pending else None

    def take(self) -> Entry | None:
        """Take the oldest pending message if it may be sent now (else None)."""
        entry = self._head()
        if entry is None or entry.ticket > self.durable:
            return None
        self._pending.popleft()
        entry.state = SENT
        self._unconfirmed.append(entry)
        return entry

    async def next(self) -> Entry:
        """Wait for the oldest pending message that may be sent, and take it."""
        while True:
            entry = self.take()
            if entry is not None:
                return entry
            head = self._head()
            if head is None:
                self._ready.clear()
                await self._ready.wait()
            else:  # the spool has not committed it yet
                self._durable_event.clear()
                await self._durable_event.wait()

    def written(self, entry: Entry) -> None:
        """The sender finished writing ``entry`` to the WebSocket."""
        self.last_sent = max(self.last_sent, entry.seq)

    @property
    def unconfirmed(self) -> int:
        """Messages written and not yet confirmed by a pong."""
        return sum(1 for e in self._unconfirmed if e.state == SENT)

    def confirm(self, upto: int) -> int:
        """A pong answered a ping sent after message ``upto``: everything until it is delivered."""
        done = 0
        while self._unconfirmed and self._unconfirmed[0].seq <= upto:
            entry = self._unconfirmed.popleft()
            if entry.state == GONE:
                continue
            self._forget(entry)
            queue = self._by_class.get(entry.cls)
            while queue and queue[0].state == GONE:
                queue.popleft()
            self._done(entry.spool_id)
            done += 1
        return done

    def requeue(self) -> int:
        """The connection dropped: unconfirmed messages go back to the front, in order."""
        back = [e for e in self._unconfirmed if e.state == SENT]
        self._unconfirmed.clear()
        for entry in back:
            entry.state = PENDING
        self._pending.extendleft(reversed(back))
        if back:
            self._ready.set()
        self.last_sent = 0
        return len(back)

    async def drained(self) -> None:
        """Wait until everything queued has been sent and confirmed."""
        await self._empty.wait()

    def pending_items(self) -> list[tuple[str, str]]:
        """(type, text) of every message still held, oldest first (for tests and status)."""
        held = [e for e in self._unconfirmed if e.state == SENT]
        held += [e for e in self._pending if e.state == PENDING]
        return [(e.mtype, e.text) for e in held]
