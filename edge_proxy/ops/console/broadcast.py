"""Live updates to browsers over Server-Sent Events, never at the daemon's expense.

Each stream is a :class:`Client` with a bounded queue of encoded events and the topics it
follows. Publishing encodes an event once and offers the same bytes to every client of its
topic without waiting: a client whose queue is full is dropped (its stream ends; the browser's
EventSource reconnects and starts again from a fresh page load of data). Writing to the socket
happens in the client's own request handler, with a time limit, so a stuck browser holds up
nobody but itself.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

QUEUE_SIZE = 64  # events waiting for one client before it counts as too slow


def sse_frame(event: str, data: str) -> bytes:
    """One SSE event (``data`` is one line of JSON)."""
    return f"event: {event}\ndata: {data}\n\n".encode()


class Client:
    """One live stream: the topics it follows and the events waiting for it."""

    def __init__(self, topics: frozenset[str], peer: str, size: int = QUEUE_SIZE) -> None:
        self.topics = topics
        self.peer = peer
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(size)
        self.dropped = False
        #: per topic: state the producer keeps for this client (e.g. the last sample time sent)
        self.marks: dict[str, float] = {}

    def offer(self, frame: bytes) -> bool:
        """Queue one event without waiting; False (and the client is dropped) when full."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.drop()
            return False
        return True

    def drop(self) -> None:
        """End the stream: what is queued is discarded, the handler sees the end at once."""
        if self.dropped:
            return
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Broadcaster:
    """Every open stream, by topic; at most ``max_clients`` at once."""

    def __init__(self, max_clients: int, queue_size: int = QUEUE_SIZE) -> None:
        self.max_clients = max_clients
        self.queue_size = queue_size
        self.clients: set[Client] = set()
        self.dropped = 0  # clients dropped for being too slow
        self.refused = 0  # streams refused: max_clients were open

    def join(self, topics: frozenset[str], peer: str = "?") -> Client | None:
        """A new stream, or None when ``max_clients`` are already open."""
        if len(self.clients) >= self.max_clients:
            self.refused += 1
            return None
        client = Client(topics, peer, self.queue_size)
        self.clients.add(client)
        return client

    def leave(self, client: Client) -> None:
        """Forget a stream that ended."""
        self.clients.discard(client)

    def topics(self) -> set[str]:
        """Every topic some open stream follows."""
        out: set[str] = set()
        for client in self.clients:
            out |= client.topics
        return out

    def followers(self, topic: str) -> list[Client]:
        """The open streams that follow ``topic``."""
        return [c for c in self.clients if topic in c.topics and not c.dropped]

    def publish(self, topic: str, event: str, data: str) -> int:
        """Offer one event to every stream of ``topic``; how many took it."""
        frame: bytes | None = None
        taken = 0
        for client in self.followers(topic):
            if frame is None:
                frame = sse_frame(event, data)
            if client.offer(frame):
                taken += 1
            else:
                self.dropped += 1
                log.info("console: a live stream to %s was too slow and was dropped", client.peer)
        return taken

    def close_all(self) -> None:
        """End every stream (shutdown)."""
        for client in list(self.clients):
            client.drop()
