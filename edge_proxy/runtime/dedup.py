"""The de-duplication store: finished commands' terminal messages, for repeats and result slices.

A ``COMMAND`` whose ``requestRef`` finished within ``commands.dedup_window`` is answered from
here instead of being run again: the stored terminal is sent again with its own ``messageId``
and ``"replay": true``. The store is bounded by age, by count (``dedup_max``) and by bytes
(``dedup_max_bytes``): the oldest entries go first. For a terminal that was cut to fit
``gateway.max_frame``, the full ``result.results`` is kept with it so that ``QUERY result``
can hand it out in slices.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# What one entry costs beyond its text: the entry object, its key, the ordered dict's node.
# Charged so that dedup_max_bytes bounds the memory the store really takes.
ENTRY_OVERHEAD = 320


@dataclass(slots=True)
class Finished:
    """One finished command."""

    at: float  # monotonic time it finished
    text: str  # the terminal as sent, encoded (envelope and messageId included)
    targets: tuple[str, ...]
    size: int  # bytes charged against the store's bound
    results: dict[str, Any] | None = None  # the full result.results of a cut terminal

    @property
    def message(self) -> dict[str, Any]:
        """The stored terminal, decoded (for a replay or a result slice: rare)."""
        value: dict[str, Any] = json.loads(self.text)
        return value


class DedupStore:
    """Finished commands by requestRef, oldest first, bounded by age, count and bytes."""

    def __init__(self, window: float, max_count: int, max_bytes: int) -> None:
        self.window = window
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: collections.OrderedDict[str, Finished] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __contains__(self, ref: object) -> bool:
        return ref in self._items

    def get(self, ref: str) -> Finished | None:
        """The finished command, if it is still remembered."""
        self.expire()
        return self._items.get(ref)

    def add(
        self,
        ref: str,
        text: str,
        targets: list[str],
        *,
        results: dict[str, Any] | None = None,
        results_size: int = 0,
        at: float | None = None,
    ) -> None:
        """Remember an encoded terminal (and the full results of a cut one, of that size)."""
        old = self._items.pop(ref, None)
        if old is not None:
            self.bytes -= old.size
        at = time.monotonic() if at is None else at
        size = ENTRY_OVERHEAD + len(text) + len(ref) + results_size + 16 * len(targets)
        self._items[ref] = Finished(at, text, tuple(targets), size, results)
        self.bytes += size
        self.expire()

    def expire(self) -> None:
        """Forget what is past the window or beyond the bounds, oldest first."""
        horizon = time.monotonic() - self.window
        while self._items:
            ref, item = next(iter(self._items.items()))
            if (
                item.at >= horizon
                and len(self._items) <= self.max_count
                and self.bytes <= self.max_bytes
            ):
                break
            del self._items[ref]
            self.bytes -= item.size
