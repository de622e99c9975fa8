"""What happened lately: the Gateway link's state and since when, the recent state changes.

The daemon keeps one :class:`Activity` whether or not the console runs: ``edge-proxy status``
(and its ``--watch``) shows the same overview as the console's first page. Device changes come
from the devices' ``on_state``; the Gateway session has no such hook, so a small task looks at
its state four times a second (a change is seen within 250 ms).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from typing import Any

from edge_proxy.wire.messages import epoch_timestamp

#: how often the Gateway session's state is looked at (seconds)
WATCH_INTERVAL = 0.25


class Activity:
    """The recent state changes (devices and the Gateway link), bounded."""

    def __init__(self, keep: int = 100) -> None:
        self.changes: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.gateway_state: str | None = None
        self.gateway_since = time.time()
        #: told each change as it is recorded (the console pushes it to open pages)
        self.on_change: Callable[[dict[str, Any]], None] | None = None
        self._task: asyncio.Task[None] | None = None

    def device_changed(self, dev_id: str, new: str, previous: str | None, reason: str) -> None:
        """Record a device's state change."""
        self._add({"what": "device", "id": dev_id, "state": new, "previous": previous}, reason)

    def gateway_seen(self, state: str) -> None:
        """Note the Gateway session's state; a change is recorded with its time."""
        if state == self.gateway_state:
            return
        previous, self.gateway_state = self.gateway_state, state
        self.gateway_since = time.time()
        if previous is not None:
            self._add({"what": "gateway", "id": "gateway", "state": state, "previous": previous})

    def _add(self, change: dict[str, Any], reason: str = "") -> None:
        change["at"] = epoch_timestamp(time.time())
        change["reason"] = reason
        self.changes.append(change)
        if self.on_change is not None:
            self.on_change(change)

    def recent(self, count: int = 20) -> list[dict[str, Any]]:
        """The latest ``count`` changes, newest first."""
        items = list(self.changes)[-count:]
        items.reverse()
        return items

    def gateway(self) -> dict[str, Any]:
        """The Gateway link's state and since when (ISO time)."""
        return {"state": self.gateway_state, "since": epoch_timestamp(self.gateway_since)}

    def start(self, state: Callable[[], str]) -> None:
        """Watch ``state()`` (the session's) until stop()."""
        self.gateway_seen(state())

        async def watch() -> None:
            while True:
                await asyncio.sleep(WATCH_INTERVAL)
                self.gateway_seen(state())

        self._task = asyncio.create_task(watch(), name="activity-watch")

    async def stop(self) -> None:
        """Stop watching."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
