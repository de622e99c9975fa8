"""Outage logging for connections that retry for ever: one line per outage, not per attempt."""

from __future__ import annotations

import logging
import time


class OutageLog:
    """Logs a connection outage without filling a disk: the first failure and then one reminder
    every ``every`` seconds at WARNING, the rest at DEBUG, and the recovery once at INFO."""

    def __init__(self, logger: logging.Logger, what: str, every: float = 600.0) -> None:
        self.logger = logger
        self.what = what
        self.every = every
        self.failures = 0
        self.since = 0.0
        self._last_warning = 0.0

    def failed(self, reason: str) -> None:
        """One more failed attempt."""
        now = time.monotonic()
        if self.failures == 0:
            self.since = now
        self.failures += 1
        if self.failures == 1 or now - self._last_warning >= self.every:
            self._last_warning = now
            extra = (
                ""
                if self.failures == 1
                else (f" ({self.failures} attempts over {now - self.since:.0f}s; still retrying)")
            )
            self.logger.warning("%s down: %s%s", self.what, reason, extra)
        else:
            self.logger.debug("%s down: %s (attempt %d)", self.what, reason, self.failures)

    def recovered(self) -> None:
        """A connection works again."""
        if self.failures:
            self.logger.info(
                "%s back after %d failed attempt(s) over %.0fs",
                self.what,
                self.failures,
                time.monotonic() - self.since,
            )
        self.failures = 0
