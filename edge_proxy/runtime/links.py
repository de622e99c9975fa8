"""Links: one shared connection each, with its priority queue, worker and reconnect backoff.

A :class:`LinkRuntime` owns one driver :class:`~edge_proxy.drivers.Link` (one serial port, one
TCP connection) and one worker task. Every device operation is a :class:`Job` in the link's
queue; the worker runs one job at a time, so there is never more than one transaction on a
wire. Jobs are taken by priority (urgent, high, normal, low) with aging, so a ``low`` command
still runs under a stream of ``high`` ones; background work (health checks, probes, polls) runs
only when no command is waiting. When the connection itself fails, the link closes it and waits
out an exponential backoff with jitter before the next attempt; jobs arriving meanwhile fail
fast.

How a job's outcome counts for its device: a reply is an answer, good or not. A
``DeviceException`` (an exception reply) fails the job but is recorded as an answer
(``record_answer``), never toward ``offline_after``; a timeout or an I/O error is a failure.
A job submitted with ``answers=False`` (a health check that only keeps the link open) records
nothing when it succeeds: an open connection is not an answer. An offline device's commands
fail fast unless the device lets one through as its probe (``take_probe_slot``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_proxy.config import LinkConfig
from edge_proxy.core.backoff import Backoff
from edge_proxy.drivers import Device, Driver, Link, OperationContext, set_current_operation
from edge_proxy.errors import (
    DeviceException,
    DeviceOffline,
    DeviceTimeout,
    EdgeProxyError,
    LinkIOError,
    OperationAborted,
    RequestError,
)
from edge_proxy.runtime.outage import OutageLog

log = logging.getLogger(__name__)

PRIORITY_LEVELS = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
BACKGROUND = 4


class LinkDevice(Protocol):
    """What a link needs of a device on it (the runtime's LinkDevice)."""

    state: str
    adapter: Device | None
    max_transaction: float
    last_error: dict[str, Any] | None

    @property
    def id(self) -> str:
        """The device id."""
        ...

    @property
    def link(self) -> LinkRuntime | None:
        """The link the device is on."""
        ...

    def count_reconnect(self) -> None:
        """Count a reconnect of the device's link."""
        ...

    def record_success(self, elapsed: float) -> None:
        """Count a successful operation."""
        ...

    def record_answer(self, exc: BaseException) -> None:
        """Count an exception reply: a failed operation, but an answer."""
        ...

    def record_failure(self, exc: BaseException, *, count_transaction: bool = True) -> None:
        """Count a failed operation."""
        ...

    def take_probe_slot(self) -> bool:
        """Whether a command may go to this offline device now, as its probe."""
        ...


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

    device: LinkDevice
    level: int
    fn: JobFn
    ctx: OperationContext
    probe: bool
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.monotonic)
    started: bool = False
    #: whether the job's success is an answer from the device (False: it only opened the link)
    answers: bool = True
    #: called once, synchronously, when the job's future is settled (a SIMPLE command's finish)
    on_done: Callable[[Job], None] | None = None

    def settle(self, result: Any = None, exc: BaseException | None = None) -> None:
        """Give the job its outcome (once), then tell ``on_done``; never raises."""
        if self.future.done():
            return
        if exc is not None:
            self.future.set_exception(exc)
            if self.on_done is not None:
                self.future.exception()  # the callback reads it; keep asyncio from warning
        else:
            self.future.set_result(result)
        callback, self.on_done = self.on_done, None
        if callback is not None:
            try:
                callback(self)
            except Exception:  # a bug in a callback must not take the link's worker down
                log.exception(
                    "link job completion failed", extra={"request_ref": self.ctx.request_ref}
                )


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
        self.devices: dict[str, LinkDevice] = {}
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
        device: LinkDevice,
        level: int,
        fn: JobFn,
        ctx: OperationContext | None = None,
        *,
        probe: bool = False,
        answers: bool = True,
    ) -> Any:
        """Queue one operation and wait for its result (raises what the operation raised)."""
        job = self.submit(
            device, level, fn, ctx or OperationContext(), probe=probe, answers=answers
        )
        return await job.future

    def submit(
        self,
        device: LinkDevice,
        level: int,
        fn: JobFn,
        ctx: OperationContext,
        *,
        probe: bool = False,
        answers: bool = True,
    ) -> Job:
        """Queue one operation (the engine bounds how many commands may wait per link)."""
        if self._closing:
            raise DeviceOffline(f"link {self.name} is shutting down")
        if level < BACKGROUND:
            self.queued += 1
        loop = asyncio.get_running_loop()
        job = Job(device, level, fn, ctx, probe, loop.create_future(), answers=answers)
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
        job.settle(exc=OperationAborted(job.ctx.reason or "cancelled"))
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
        # ``not self._closing``: on Python 3.10 and 3.11 ``asyncio.wait_for`` swallows a
        # cancellation that arrives just as the operation finishes, so close() cannot rely on
        # the cancel alone to end the worker.
        while not self._closing:
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
                job.settle(exc=DeviceOffline(f"link {self.name} stopped"))
                raise
            except BaseException as exc:  # every failure belongs to the job, not the worker
                job.settle(exc=exc)
            else:
                job.settle(result)
            finally:
                self.current = None
            if self.config.turnaround > 0:
                await asyncio.sleep(self.config.turnaround)

    async def _ensure_open(self, device: LinkDevice) -> None:
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
                dev.count_reconnect()
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
        if device.state == "offline" and not job.probe and not device.take_probe_slot():
            raise DeviceOffline(
                f"device {device.id} is offline ({(device.last_error or {}).get('message')})"
            )
        await self._ensure_open(device)
        assert device.adapter is not None
        set_current_operation(job.ctx)
        started = time.monotonic()
        try:
            if self.link.self_timed:
                result = await job.fn(device.adapter)
            else:
                # A last-resort guard for drivers that never return: the driver's own
                # per-transaction timeouts should always fire first.
                guard = device.max_transaction * 4 + 5.0
                if job.ctx.deadline is not None:
                    guard += max(0.0, job.ctx.deadline - asyncio.get_running_loop().time())
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
        except DeviceException as exc:
            device.record_answer(exc)  # an exception reply is an answer: the device is there
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
        if job.answers:
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
                    job.settle(exc=DeviceOffline(f"link {self.name} stopped"))
                    job.future.exception()
        try:
            await self.link.close()
        except Exception:
            log.exception("link %s: error while closing", self.name)
