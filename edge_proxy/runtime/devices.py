"""Devices: each one's state, counters, health checks and offline probes.

A :class:`DeviceRuntime` owns the device's state, which changes only through the table in
:mod:`edge_proxy.core.states`. Each failed operation counts; ``offline_after`` failures in a row
take the device ``offline``, after which commands fail fast with ``DEVICE_OFFLINE`` and a
background probe retries at backoff intervals until the device answers again. A dead device
thus costs its neighbours at most one transaction timeout per attempt, and nothing once it is
offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from edge_proxy.config import DeviceConfig, ProfileConfig, ReconnectConfig
from edge_proxy.core.backoff import Backoff
from edge_proxy.core.states import next_state
from edge_proxy.drivers import Device
from edge_proxy.errors import DeviceTimeout, EdgeProxyError, error_code
from edge_proxy.runtime.links import BACKGROUND, PRIORITY_LEVELS, Job, LinkRuntime
from edge_proxy.wire.messages import utc_timestamp

__all__ = ["BACKGROUND", "PRIORITY_LEVELS", "DeviceCounters", "DeviceRuntime", "Job", "LinkRuntime"]

log = logging.getLogger(__name__)

StateListener = Callable[["DeviceRuntime", str, str | None, str], None]


@dataclass
class DeviceCounters:
    """Per-device counters shown in REGISTER, QUERY and metrics."""

    transactions: int = 0
    failures: int = 0
    timeouts: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a JSON object."""
        return {
            "transactions": self.transactions,
            "failures": self.failures,
            "timeouts": self.timeouts,
            "reconnects": self.reconnects,
        }


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return utc_timestamp(datetime.fromtimestamp(epoch, timezone.utc))


class DeviceRuntime:
    """One configured device: its adapter, state, counters and link."""

    def __init__(
        self,
        config: DeviceConfig,
        profile: ProfileConfig,
        link: LinkRuntime | None,
        adapter: Device | None,
        on_state: StateListener | None = None,
    ) -> None:
        self.config = config
        self.profile = profile
        self.link = link
        self.adapter = adapter
        self.on_state = on_state
        #: called with (device id, seconds) after each successful operation (metrics)
        self.on_latency: Callable[[str, float], None] | None = None
        self.state = "connecting" if config.enabled else "disabled"
        self.last_error: dict[str, Any] | None = None
        self.last_seen: float | None = None  # wall clock
        self.last_activity = time.monotonic()
        self.consecutive_failures = 0
        self.counters = DeviceCounters()
        self.probe_backoff = Backoff(link.config.reconnect if link else ReconnectConfig())
        # the longest one transaction may take: the link's timeout or a command's own
        timeouts = [c.timeout for c in profile.commands.values() if c.timeout is not None]
        self.max_transaction = max([link.config.timeout if link else 1.0, *timeouts])
        self._health_task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        """The device id."""
        return self.config.id

    def _fire(self, event: str, reason: str) -> None:
        new = next_state(self.state, event)
        if new == self.state:
            return
        previous, self.state = self.state, new
        log.info(
            "device %s: %s -> %s (%s)", self.id, previous, new, reason, extra={"device_id": self.id}
        )
        if self.on_state is not None:
            self.on_state(self, new, previous, reason)

    def record_success(self, elapsed: float) -> None:
        """Count a successful operation; brings the device online."""
        self.counters.transactions += 1
        if self.on_latency is not None:
            self.on_latency(self.id, elapsed)
        self.consecutive_failures = 0
        self.last_seen = time.time()
        self.last_activity = time.monotonic()
        self.probe_backoff.reset()
        self._fire("success", "device answered")

    def record_failure(self, exc: BaseException, *, count_transaction: bool = True) -> None:
        """Count a failed operation; ``offline_after`` in a row take the device offline."""
        if count_transaction:
            self.counters.transactions += 1
        self.counters.failures += 1
        if isinstance(exc, (DeviceTimeout, TimeoutError)):
            self.counters.timeouts += 1
        self.consecutive_failures += 1
        self.last_activity = time.monotonic()
        message = exc.message if isinstance(exc, EdgeProxyError) else str(exc)
        self.last_error = {"code": error_code(exc), "message": message, "at": _iso(time.time())}
        limit = self.link.config.offline_after if self.link else 3
        if self.consecutive_failures >= limit:
            self._fire("failed_out", f"{message} (x{self.consecutive_failures})")

    def count_reconnect(self) -> None:
        """Count a reconnect of the device's link."""
        self.counters.reconnects += 1

    def set_enabled(self, enabled: bool) -> None:
        """Enable or disable the device."""
        self._fire("enable" if enabled else "disable", "configuration")

    def status(self) -> dict[str, Any]:
        """The device's entry in REGISTER and QUERY results."""
        return {
            "deviceId": self.id,
            "deviceType": self.config.type,
            "status": self.state,
            "profile": self.config.profile,
            "link": self.link.name if self.link else None,
            "lastError": self.last_error,
            "lastSeen": _iso(self.last_seen),
            "counters": self.counters.as_dict(),
        }

    # ------------------------------------------------------------------ health

    def start_health(self) -> None:
        """Start the background health check / offline probe loop."""
        if self._health_task is None and self.link is not None and self.config.enabled:
            self._health_task = asyncio.create_task(self._health_loop(), name=f"health:{self.id}")

    async def stop_health(self) -> None:
        """Stop the health loop."""
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _health_loop(self) -> None:
        assert self.link is not None
        interval = self.link.config.health_interval
        while True:
            if self.state == "online":
                idle = time.monotonic() - self.last_activity
                if idle < interval:
                    await asyncio.sleep(interval - idle)
                    continue
            try:
                await self.link.run(self, BACKGROUND, _health_op, probe=True)
            except (EdgeProxyError, OSError, TimeoutError) as exc:
                log.debug(
                    "device %s: health check failed: %s", self.id, exc, extra={"device_id": self.id}
                )
            except Exception:
                log.exception(
                    "device %s: health check crashed", self.id, extra={"device_id": self.id}
                )
            if self.state != "online":
                await asyncio.sleep(self.probe_backoff.next_delay())


async def _health_op(adapter: Device) -> None:
    await adapter.health()
