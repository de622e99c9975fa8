"""Device and link runtime: the state machine, per-link queues, reconnects and health checks.

Theory of operation
-------------------
A :class:`LinkRuntime` owns one driver :class:`~edge_proxy.drivers.Link` (one serial port, one
TCP connection) and one worker task. Every device operation is a :class:`Job` in the link's
queue; the worker runs one job at a time, so there is never more than one transaction on a
wire. Jobs are taken by priority (urgent, high, normal, low) with aging, so a ``low`` command
still runs under a stream of ``high`` ones; background work (health checks, probes, polls) runs
only when no command is waiting.

A :class:`DeviceRuntime` owns the device's state, which changes only through
:data:`TRANSITIONS`. Each failed operation counts; ``offline_after`` failures in a row take the
device ``offline``, after which commands fail fast with ``DEVICE_OFFLINE`` and a background
probe retries at backoff intervals until the device answers again. A dead device thus costs
its neighbours at most one transaction timeout per attempt, and nothing once it is offline.

When the connection itself fails, the link closes it and waits out an exponential backoff
with jitter before the next attempt; jobs arriving meanwhile fail fast.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig, ReconnectConfig
from edge_proxy.drivers import Device, Driver, Link, OperationContext, set_current_operation
from edge_proxy.errors import (
    DeviceOffline,
    DeviceTimeout,
    EdgeProxyError,
    LinkIOError,
    OperationAborted,
    RequestError,
    error_code,
)
from edge_proxy.ops.logsetup import OutageLog
from edge_proxy.wire.messages import utc_timestamp

log = logging.getLogger(__name__)

# State machine as data: (state, event) -> next state. Events not listed leave the state as is.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("connecting", "success"): "online",
    ("connecting", "failed_out"): "offline",
    ("online", "failed_out"): "offline",
    ("offline", "success"): "online",
    ("connecting", "disable"): "disabled",
    ("online", "disable"): "disabled",
    ("offline", "disable"): "disabled",
    ("disabled", "enable"): "connecting",
}

PRIORITY_LEVELS = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
BACKGROUND = 4

StateListener = Callable[["DeviceRuntime", str, str | None, str], None]


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
        new = TRANSITIONS.get((self.state, event))
        if new is None or new == self.state:
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


JobFn = Callable[[Device], Awaitable[Any]]


async def _guarded(awaitable: Awaitable[Any], seconds: float) -> Any:
    """``wait_for`` without a task per call where the runtime offers ``asyncio.timeout``."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable


@dataclass(eq=False)
class Job:
    """One device operation waiting for, or holding, its link."""

    device: DeviceRuntime
    level: int
    fn: JobFn
    ctx: OperationContext
    probe: bool
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)
    started: bool = False


class LinkRuntime:
    """One shared connection: its queue, its worker, its reconnect backoff."""

    def __init__(
        self,
        name: str,
        driver: type[Driver],
        link: Link,
        config: LinkConfig,
        *,
        max_queued: int = 1000,
        aging: float = 2.0,
    ) -> None:
        self.name = name
        self.driver = driver
        self.link = link
        self.config = config
        self.max_queued = max_queued
        self.aging = aging
        #: accepted, unfinished commands that target this link (the engine's admission bound)
        self.reserved = 0
        self.queues: list[collections.deque[Job]] = [collections.deque() for _ in range(5)]
        self.queued = 0
        self.devices: dict[str, DeviceRuntime] = {}
        self.backoff = Backoff(config.reconnect)
        self.retry_at = 0.0
        self.connects = 0
        self.last_link_error: str | None = None
        self.current: Job | None = None
        self._wakeup = asyncio.Event()
        self._outage = OutageLog(log, f"link {name}")
        self._worker: asyncio.Task[None] | None = None
        self._closing = False

    # ------------------------------------------------------------------ queue

    def start(self) -> None:
        """Start the worker."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"link:{self.name}")

    async def run(
        self,
        device: DeviceRuntime,
        level: int,
        fn: JobFn,
        ctx: OperationContext | None = None,
        *,
        probe: bool = False,
    ) -> Any:
        """Queue one operation and wait for its result (raises what the operation raised)."""
        job = self.submit(device, level, fn, ctx or OperationContext(), probe=probe)
        return await job.future

    def submit(
        self,
        device: DeviceRuntime,
        level: int,
        fn: JobFn,
        ctx: OperationContext,
        *,
        probe: bool = False,
    ) -> Job:
        """Queue one operation (the engine bounds how many commands may wait per link)."""
        if self._closing:
            raise DeviceOffline(f"link {self.name} is shutting down")
        if level < BACKGROUND:
            self.queued += 1
        loop = asyncio.get_running_loop()
        job = Job(device, level, fn, ctx, probe, loop.create_future())
        self.queues[level].append(job)
        self._wakeup.set()
        return job

    def discard(self, job: Job) -> bool:
        """Drop a job that has not started; True if it was dropped (its future gets the reason)."""
        if job.started or job.future.done():
            return False
        try:
            self.queues[job.level].remove(job)
        except ValueError:
            return False
        self._dequeued(job)
        job.future.set_exception(OperationAborted(job.ctx.reason or "cancelled"))
        job.future.exception()  # the engine reads ctx.reason; keep asyncio from warning
        return True

    def _dequeued(self, job: Job) -> None:
        if job.level < BACKGROUND:
            self.queued -= 1

    def _pick(self) -> Job | None:
        now = time.monotonic()
        best: tuple[float, int] | None = None
        best_level = -1
        for level in range(BACKGROUND):
            queue = self.queues[level]
            if queue:
                # Aging: every ``aging`` seconds of waiting lifts a job one level.
                rank = (level - (now - queue[0].enqueued) / self.aging, level)
                if best is None or rank < best:
                    best, best_level = rank, level
        if best_level >= 0:
            return self.queues[best_level].popleft()
        if self.queues[BACKGROUND]:
            return self.queues[BACKGROUND].popleft()
        return None

    def pending(self) -> int:
        """Commands waiting (background work not counted)."""
        return self.queued

    # ------------------------------------------------------------------ worker

    async def _work(self) -> None:
        while True:
            job = self._pick()
            if job is None:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._dequeued(job)
            if job.future.done():
                continue
            self.current = job
            job.started = True
            try:
                result = await self._execute(job)
            except asyncio.CancelledError:
                if not job.future.done():
                    job.future.set_exception(DeviceOffline(f"link {self.name} stopped"))
                raise
            except BaseException as exc:  # every failure belongs to the job, not the worker
                if not job.future.done():
                    job.future.set_exception(exc)
            else:
                if not job.future.done():
                    job.future.set_result(result)
            finally:
                self.current = None
            if self.config.turnaround > 0:
                await asyncio.sleep(self.config.turnaround)

    async def _ensure_open(self, device: DeviceRuntime) -> None:
        if self.link.is_open:
            return
        now = time.monotonic()
        if now < self.retry_at:
            raise DeviceOffline(
                f"link {self.name} is down ({self.last_link_error}); "
                f"next attempt in {self.retry_at - now:.1f}s"
            )
        timeout = self.config.connect_timeout or self.config.timeout
        try:
            await asyncio.wait_for(self.link.open(), timeout)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            with contextlib.suppress(Exception):
                await self.link.close()
            self.retry_at = time.monotonic() + self.backoff.next_delay()
            reason = str(exc) or type(exc).__name__
            self.last_link_error = reason
            self._outage.failed(reason)
            err = LinkIOError(f"link {self.name}: cannot connect: {reason}")
            for dev in list(self.devices.values()):
                if dev.state != "disabled":
                    dev.record_failure(err, count_transaction=False)
            raise err from exc
        if self.connects:
            for dev in self.devices.values():
                dev.counters.reconnects += 1
        self.connects += 1
        self.backoff.reset()
        self.last_link_error = None
        self._outage.recovered()
        log.info("link %s: connected", self.name)

    async def _execute(self, job: Job) -> Any:
        device = job.device
        job.ctx.check()
        if device.state == "disabled":
            raise DeviceOffline(f"device {device.id} is disabled")
        if device.state == "offline" and not job.probe:
            raise DeviceOffline(
                f"device {device.id} is offline ({(device.last_error or {}).get('message')})"
            )
        await self._ensure_open(device)
        assert device.adapter is not None
        set_current_operation(job.ctx)
        started = time.monotonic()
        # A last-resort guard for drivers that never return: the driver's own per-transaction
        # timeouts should always fire first.
        guard = device.max_transaction * 4 + 5.0
        if job.ctx.deadline is not None:
            guard += max(0.0, job.ctx.deadline - asyncio.get_running_loop().time())
        try:
            result = await _guarded(job.fn(device.adapter), guard)
        except OperationAborted:
            raise
        except (asyncio.TimeoutError, TimeoutError) as exc:
            err = (
                exc
                if isinstance(exc, DeviceTimeout)
                else DeviceTimeout(f"device {device.id} did not answer in time")
            )
            device.record_failure(err)
            if not isinstance(exc, DeviceTimeout):
                await self._reset_connection("operation overran its guard")
            raise err from exc
        except (LinkIOError, OSError, ConnectionError, EOFError) as exc:
            device.record_failure(exc)
            await self._reset_connection(str(exc) or type(exc).__name__)
            raise
        except RequestError:
            raise
        except EdgeProxyError as exc:
            device.record_failure(exc)
            raise
        except Exception as exc:
            log.exception("device %s: driver error", device.id, extra={"device_id": device.id})
            device.record_failure(exc)
            raise
        finally:
            set_current_operation(None)
        device.record_success(time.monotonic() - started)
        return result

    async def _reset_connection(self, reason: str) -> None:
        log.warning("link %s: closing connection: %s", self.name, reason)
        self.last_link_error = reason
        with contextlib.suppress(Exception):
            await self.link.close()

    async def close(self) -> None:
        """Stop the worker, fail queued jobs, close the connection."""
        self._closing = True
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        for queue in self.queues:
            while queue:
                job = queue.popleft()
                self._dequeued(job)
                if not job.future.done():
                    job.future.set_exception(DeviceOffline(f"link {self.name} stopped"))
                    job.future.exception()
        try:
            await self.link.close()
        except Exception:
            log.exception("link %s: error while closing", self.name)
