"""Exponential backoff with jitter, for reconnects and offline probes."""

from __future__ import annotations

import random

from edge_proxy.config import ReconnectConfig


class Backoff:
    """Exponential backoff with jitter."""

    def __init__(self, config: ReconnectConfig) -> None:
        self.config = config
        self.attempts = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles it up to ``max``."""
        base = min(self.config.max, self.config.initial * (2.0 ** min(self.attempts, 30)))
        self.attempts += 1
        spread = base * self.config.jitter
        return max(0.0, base + random.uniform(-spread, spread))

    def reset(self) -> None:
        """Start again from ``initial`` after a success."""
        self.attempts = 0
