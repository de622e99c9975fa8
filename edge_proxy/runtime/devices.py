"""Devices: each one's state, counters, health checks and offline probes.

A :class:`DeviceRuntime` owns the device's state, which changes only through the table in
:mod:`edge_proxy.core.states`. Each failed operation counts; ``offline_after`` failures in a row
take the device ``offline``, after which commands fail fast with ``DEVICE_OFFLINE`` and a
background probe retries at the link's reconnect backoff intervals until the device answers
again. A dead device thus costs its neighbours at most one transaction timeout per attempt, and
nothing once it is offline.

What is an answer. Only a reply from the device: a good one, or an exception reply
(``DeviceException``: a Modbus exception, a line that does not match ``expect``), which fails
its command but proves the device is there, so it resets the failure count and brings the
device ``online``. An open connection is not an answer. A device whose health check asks it
nothing (a line profile without a ``health`` command, a profile without readable points: see
:func:`health_asks_device`) therefore stays ``connecting`` until a command or a poll is
answered; its health loop only keeps the link open. Offline, such a device has no probe of its
own: one command per backoff interval is let through to it as the probe
(:meth:`DeviceRuntime.take_probe_slot`), the others fail fast.

The health loop wakes on every state change, so a device that goes offline is probed at its
backoff (not after what is left of ``health_interval``).
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

__all__ = [
    "BACKGROUND",
    "PRIORITY_LEVELS",
    "DeviceCounters",
    "DeviceRuntime",
    "Job",
    "LinkRuntime",
    "health_asks_device",
]

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


def health_asks_device(adapter: Device | None) -> bool:
    """Whether ``adapter.health()`` puts a question to the device (so its success is an answer).

    The driver's own :attr:`~edge_proxy.drivers.Device.health_asks_device` says.
    """
    return adapter is not None and adapter.health_asks_device


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
        #: whether the health check asks the device something (else it only keeps the link up)
        self.health_asks = health_asks_device(adapter)
        self._probe_at = 0.0  # monotonic: when an offline device's next probe is due
        self._probe_delay = 0.0  # the backoff of the last probe let through (take_probe_slot)
        self._changed = False  # a state change since the health loop last looked
        self._wakeup: asyncio.Future[None] | None = None  # the health loop's pause
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
        if new == "offline":
            self._probe_at = time.monotonic() + self.probe_backoff.next_delay()
        self._changed = True
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)
        log.info(
            "device %s: %s -> %s (%s)", self.id, previous, new, reason, extra={"device_id": self.id}
        )
        if self.on_state is not None:
            self.on_state(self, new, previous, reason)

    def _answered(self, reason: str) -> None:
        self.consecutive_failures = 0
        self.last_seen = time.time()
        self.last_activity = time.monotonic()
        self.probe_backoff.reset()
        self._fire("success", reason)

    def _note_error(self, exc: BaseException) -> str:
        message = exc.message if isinstance(exc, EdgeProxyError) else str(exc)
        self.last_error = {"code": error_code(exc), "message": message, "at": _iso(time.time())}
        return message

    def record_success(self, elapsed: float) -> None:
        """Count a successful operation; brings the device online."""
        self.counters.transactions += 1
        if self.on_latency is not None:
            self.on_latency(self.id, elapsed)
        self._answered("device answered")

    def record_answer(self, exc: BaseException) -> None:
        """Count an exception reply: the operation failed, but the device answered (online)."""
        self.counters.transactions += 1
        self.counters.failures += 1
        self._note_error(exc)
        self._answered("device answered (with an exception)")

    def record_failure(self, exc: BaseException, *, count_transaction: bool = True) -> None:
        """Count a failed operation; ``offline_after`` in a row take the device offline."""
        if count_transaction:
            self.counters.transactions += 1
        self.counters.failures += 1
        if isinstance(exc, (DeviceTimeout, TimeoutError)):
            self.counters.timeouts += 1
        self.consecutive_failures += 1
        self.last_activity = time.monotonic()
        message = self._note_error(exc)
        limit = self.link.config.offline_after if self.link else 3
        if self.consecutive_failures >= limit:
            self._fire("failed_out", f"{message} (x{self.consecutive_failures})")
        if self.state == "offline" and not self.health_asks and self._probe_delay:
            # a command let through as the probe failed: the next one a backoff after this
            self._probe_at = time.monotonic() + self._probe_delay

    def take_probe_slot(self) -> bool:
        """Whether a command may go to this offline device now, as its probe.

        Only for a device whose health check asks nothing (it has no probe of its own): one
        command per backoff interval goes through; the others fail fast with DEVICE_OFFLINE.
        """
        if self.state != "offline" or self.health_asks:
            return False
        now = time.monotonic()
        if now < self._probe_at:
            return False
        # the interval runs from the END of this probe (record_failure sets it again then);
        # until then no other command goes through, for as long as one transaction can take
        self._probe_delay = self.probe_backoff.next_delay()
        self._probe_at = now + self.max_transaction + self._probe_delay
        return True

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
        while True:
            self._changed = False
            delay = await self._health_step()
            if not self._changed:
                await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or until the device's state changes (a command's failure took it
        offline, a command's answer brought it back): the next step then decides anew."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._wakeup = waiter
        timer = loop.call_later(max(0.0, seconds), _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._wakeup = None

    async def _health_step(self) -> float:
        """One health check or probe when one is due; the seconds until the next may be."""
        assert self.link is not None
        interval = self.link.config.health_interval
        now = time.monotonic()
        if not self.health_asks:
            # Nothing to ask: only keep the link open. Opening it is not an answer; a command
            # (or a poll) is, and offline the commands are the probe (take_probe_slot).
            await self._check(_no_op, answers=False)
            return interval
        if self.state == "online":
            idle = now - self.last_activity
            if idle < interval:
                return interval - idle
        elif self.state == "offline" and now < self._probe_at:
            return self._probe_at - now
        await self._check(_health_op, answers=True)
        if self._changed:
            return 0.0  # the check changed the state: the next step decides anew
        if self.state == "online":
            return interval
        if self.state == "offline":
            self._probe_at = time.monotonic() + self.probe_backoff.next_delay()
            return self._probe_at - time.monotonic()
        return self.probe_backoff.next_delay()

    async def _check(self, op: Callable[[Device], Any], *, answers: bool) -> None:
        assert self.link is not None
        try:
            await self.link.run(self, BACKGROUND, op, probe=True, answers=answers)
        except (EdgeProxyError, OSError, TimeoutError) as exc:
            log.debug(
                "device %s: health check failed: %s", self.id, exc, extra={"device_id": self.id}
            )
        except Exception:
            log.exception("device %s: health check crashed", self.id, extra={"device_id": self.id})


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _health_op(adapter: Device) -> None:
    await adapter.health()


async def _no_op(adapter: Device) -> None:
    return None
