"""The telemetry collector: every device's poll groups, read at fixed times, reported honestly.

Theory of operation
-------------------
One :class:`LinkCollector` per link holds a heap of poll groups (one entry per device and
group) ordered by their next tick. Ticks are at fixed times, ``start + k * interval``; the
devices of a link start spread across the interval, so a bus is never hit by every device at
once. At a tick, a cycle starts unless the group's previous cycle is still running (then the
tick is skipped and counted) or the device is offline (its link's probe brings it back). A
cycle is a few background jobs on the link, one per transaction of the group's read plan
(:meth:`~edge_proxy.drivers.Device.read_plan`, built once), so a command waits at most for the
one transaction on the wire.

A part of the plan that the device refuses with an exception is read again point by point;
the refused points are reported with quality ``bad`` and the plan remembers the split (the
good points in contiguous parts, the refused ones alone), so one bad address never hides the
rest of the group. What a cycle sends is decided by :class:`~edge_proxy.core.report.
GroupReporter` (deadbands, snapshots, ``min_interval``); this module adds ``seq``, splits a
message that would exceed ``max_frame``, and keeps telemetry out of the outbox while the
Gateway is down with ``telemetry.buffer: latest`` (a snapshot per device and group follows the
next ``REGISTER``, with the original ``sampledAt``).

A cycle that fails (timeout, I/O error, anything) never stops the collector: it is counted and
logged once per change from working to failing.

Cheap by construction: the scheduler is one timer per link whose callback starts the cycles
that are due; a cycle of one read (the usual case: a group's points in one request) is one link
job whose completion, in the link's worker, reports it. Only a cycle of several reads (a split
plan, a refused merged read, a ``command`` group) runs as a task.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_proxy.config import Config, TelemetryGroupConfig
from edge_proxy.core.report import GroupReporter, Report, Sample
from edge_proxy.drivers import Device, OperationContext
from edge_proxy.errors import DeviceException, EdgeProxyError
from edge_proxy.runtime.devices import BACKGROUND, DeviceRuntime, Job, LinkRuntime
from edge_proxy.wire import framing
from edge_proxy.wire.messages import MessageFactory, epoch_timestamp

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
JITTER_SAMPLES = 1024  # recent tick delays kept per link for percentiles


@dataclass(eq=False)
class GroupState:
    """One poll group of one device: its plan, reporter, schedule and counters."""

    device: DeviceRuntime
    group: TelemetryGroupConfig
    reporter: GroupReporter
    points: list[str]
    plan: list[list[str]]
    start: float = 0.0  # loop time of tick 0
    tick: int = 0
    running: bool = False
    again: set[str] = field(default_factory=set)  # read back in a cycle after the running one
    split: set[int] = field(default_factory=set)  # ids of plan parts made by a split
    cycles: int = 0
    failures: int = 0
    skipped: int = 0
    points_read: int = 0
    reported: int = 0
    last_duration: float | None = None
    last_sample: float | None = None  # wall clock of the last good cycle
    failing: bool = False
    durations: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=256)
    )

    @property
    def due(self) -> float:
        """Loop time of the next tick."""
        return self.start + self.tick * self.group.interval

    def status(self) -> dict[str, Any]:
        """The group's entry in QUERY device(s) and edge-proxy status."""
        return {
            "group": self.group.name,
            "interval": self.group.interval,
            "cycles": self.cycles,
            "failures": self.failures,
            "skipped": self.skipped,
            "cycleMs": None if self.last_duration is None else round(self.last_duration * 1e3, 1),
            "lastSample": None if self.last_sample is None else epoch_timestamp(self.last_sample),
        }


class LinkCollector:
    """The scheduler of one link: a timer, a heap of poll groups by their next tick.

    No task per device and none per cycle where a call will do: the timer's callback starts
    the cycles that are due, a cycle of one read is one link job whose completion reports it;
    only a cycle that needs several reads (a split plan, a refused merged read, a command)
    runs as a task.
    """

    def __init__(self, link: LinkRuntime, owner: Telemetry) -> None:
        self.link = link
        self.owner = owner
        self.groups: list[GroupState] = []
        self._heap: list[tuple[float, int, GroupState]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._cycles: set[asyncio.Task[None]] = set()
        self._jobs: set[Job] = set()
        self.jitter: collections.deque[float] = collections.deque(maxlen=JITTER_SAMPLES)

    def start(self) -> None:
        """Spread the first ticks across each interval and arm the timer."""
        now = asyncio.get_running_loop().time()
        by_interval: dict[float, list[GroupState]] = collections.defaultdict(list)
        for gs in self.groups:
            by_interval[gs.group.interval].append(gs)
        for interval, states in by_interval.items():
            for i, gs in enumerate(states):
                gs.start = now + interval * i / len(states)
                gs.tick = 0
                heapq.heappush(self._heap, (gs.due, next(self._order), gs))
        self._arm()

    async def stop(self) -> None:
        """Stop the timer and any cycle still running."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for job in list(self._jobs):
            self.link.discard(job)
        tasks = list(self._cycles)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _arm(self) -> None:
        if self._heap and not self._stopped:
            self._timer = asyncio.get_running_loop().call_at(self._heap[0][0], self._fire)

    def _fire(self) -> None:
        """The timer: start every cycle that is due, then arm the timer for the next tick."""
        self._timer = None
        now = asyncio.get_running_loop().time()
        try:
            while self._heap and self._heap[0][0] <= now:
                due, _, gs = heapq.heappop(self._heap)
                self.jitter.append(now - due)
                # the next tick at a fixed time; ticks already past are skipped and counted
                gs.tick += 1
                behind = int((now - gs.due) // gs.group.interval) + 1 if gs.due <= now else 0
                if behind:
                    gs.skipped += behind
                    gs.tick += behind
                heapq.heappush(self._heap, (gs.due, next(self._order), gs))
                try:
                    self._tick(gs)
                except Exception:  # whatever goes wrong, the collector goes on
                    log.exception("telemetry %s: cannot start a cycle", gs.device.id)
        finally:
            self._arm()

    def _tick(self, gs: GroupState) -> None:
        if gs.running:
            gs.skipped += 1
            return
        if gs.device.state not in ("online", "connecting"):
            return  # offline devices are not polled; the link's probe brings them back
        self.run_cycle(gs)

    def run_cycle(self, gs: GroupState) -> None:
        """Start one cycle of ``gs`` now (a tick, or a read-back after a write)."""
        if self._stopped:
            return
        gs.running = True
        began = asyncio.get_running_loop().time()
        if gs.group.command is None and len(gs.plan) == 1:
            part, stamp = gs.plan[0], [0.0]
            try:
                job = self.link.submit(
                    gs.device, BACKGROUND, read_job(part, stamp), OperationContext()
                )
            except Exception as exc:
                self._cycle_done(gs, began, None, exc)
                return
            job.on_done = lambda done: self._read_done(gs, part, stamp, began, done)
            self._jobs.add(job)
            return
        self._spawn(gs, self._cycle(gs, began))

    def _spawn(self, gs: GroupState, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=f"poll:{gs.device.id}:{gs.group.name}")
        self._cycles.add(task)
        task.add_done_callback(self._cycles.discard)

    def _read_done(
        self, gs: GroupState, part: list[str], stamp: list[float], began: float, job: Job
    ) -> None:
        """The one read of a one-read cycle has finished (called by the link's worker)."""
        self._jobs.discard(job)
        if self._stopped:
            gs.running = False
            return
        exc = job.future.exception()
        if isinstance(exc, DeviceException):  # a merged read refused: split it, in a task
            self._spawn(gs, self._cycle(gs, began, refused=(part, stamp)))
            return
        sample = None
        if exc is None:
            values = job.future.result()
            if values:
                sampled = stamp[0] or time.time()
                sample = Sample(values, frozenset(), sampled, asyncio.get_running_loop().time())
        self._cycle_done(gs, began, sample, exc)

    async def _cycle(
        self,
        gs: GroupState,
        began: float,
        refused: tuple[list[str], list[float]] | None = None,
    ) -> None:
        sample: Sample | None = None
        error: BaseException | None = None
        try:
            if refused is not None:
                part, stamp = refused
                got, bad = await self._split_part(gs, part, stamp)
                sample = self._sample(got, bad, stamp)
            else:
                sample = await self._read(gs)
        except asyncio.CancelledError:
            gs.running = False
            raise
        except Exception as exc:
            error = exc
        self._cycle_done(gs, began, sample, error)

    def _cycle_done(
        self, gs: GroupState, began: float, sample: Sample | None, exc: BaseException | None
    ) -> None:
        """Count a finished cycle and report its sample; never raises for a bad cycle."""
        loop = asyncio.get_running_loop()
        if exc is not None:  # whatever goes wrong, the collector goes on
            sample = None
            gs.failures += 1
            if not gs.failing:
                gs.failing = True
                level = logging.INFO if isinstance(exc, EdgeProxyError) else logging.WARNING
                log.log(
                    level,
                    "telemetry %s/%s: cycle failed: %s",
                    gs.device.id,
                    gs.group.name,
                    exc,
                    extra={"device_id": gs.device.id},
                    exc_info=None if isinstance(exc, EdgeProxyError) else exc,
                )
        elif gs.failing:
            gs.failing = False
            log.info(
                "telemetry %s/%s: cycles work again",
                gs.device.id,
                gs.group.name,
                extra={"device_id": gs.device.id},
            )
        gs.running = False
        gs.cycles += 1
        gs.last_duration = loop.time() - began
        gs.durations.append(gs.last_duration)
        if self.owner.on_cycle is not None:
            self.owner.on_cycle(gs.group.name, gs.last_duration)
        if sample is not None:
            gs.last_sample = sample.sampled_at
            if self.owner.on_sample is not None:
                self.owner.on_sample(gs.device.id, gs.group.name, sample)
            gs.points_read += len(sample.values)
            self.owner.report(gs, gs.reporter.update(sample))
        if gs.again:  # the running cycle may have read before the write: once more, forced
            gs.reporter.force(gs.again)
            gs.again = set()
            self.run_cycle(gs)

    async def _read(self, gs: GroupState) -> Sample | None:
        values: dict[str, Any] = {}
        bad: set[str] = set()
        stamp = [0.0]
        if gs.group.command is not None:
            command = gs.group.command

            async def run_command(adapter: Device) -> dict[str, Any]:
                out = await adapter.execute(command, {})
                stamp[0] = time.time()
                return out

            values.update(await self.link.run(gs.device, BACKGROUND, run_command))
        else:
            for part in list(gs.plan):
                got, refused = await self._read_part(gs, part, stamp)
                values.update(got)
                bad.update(refused)
        return self._sample(values, bad, stamp)

    @staticmethod
    def _sample(values: dict[str, Any], bad: set[str], stamp: list[float]) -> Sample | None:
        if not values and not bad:
            return None
        sampled = stamp[0] or time.time()
        now = asyncio.get_running_loop().time()
        return Sample(values, frozenset(bad), sampled, now)

    async def _read_part(
        self, gs: GroupState, part: list[str], stamp: list[float]
    ) -> tuple[dict[str, Any], set[str]]:
        try:
            return await self.link.run(gs.device, BACKGROUND, read_job(part, stamp)), set()
        except DeviceException:
            pass
        return await self._split_part(gs, part, stamp)

    async def _split_part(
        self, gs: GroupState, part: list[str], stamp: list[float]
    ) -> tuple[dict[str, Any], set[str]]:
        """After the device refused the read of ``part``: point by point, and remember it."""
        stamp[0] = time.time()  # an exception reply is an answer too
        if len(part) == 1:
            return {}, set(part)
        got: dict[str, Any] = {}
        refused: set[str] = set()
        for name in part:
            try:
                got.update(await self.link.run(gs.device, BACKGROUND, read_job([name], stamp)))
            except DeviceException:
                refused.add(name)
        self._remember_split(gs, part, [n for n in part if n not in refused], refused)
        return got, refused

    def _remember_split(
        self, gs: GroupState, part: list[str], good: list[str], refused: set[str]
    ) -> None:
        adapter = gs.device.adapter
        if id(part) in gs.split or adapter is None:
            pieces = [[n] for n in good]  # a part made by a split was refused again: singles
        else:
            pieces = adapter.read_plan(good, contiguous=True)
        pieces += [[n] for n in part if n in refused]
        for piece in pieces:
            gs.split.add(id(piece))
        at = gs.plan.index(part)
        gs.plan[at : at + 1] = pieces
        log.warning(
            "telemetry %s/%s: a merged read was refused; %s read alone from now on",
            gs.device.id,
            gs.group.name,
            ", ".join(sorted(refused)) or "nothing",
            extra={"device_id": gs.device.id},
        )


def read_job(names: list[str], stamp: list[float]) -> Callable[[Device], Any]:
    """A job that reads ``names`` and stamps the time the reply arrived in ``stamp[0]``."""

    async def job(adapter: Device) -> dict[str, Any]:
        out = await adapter.read(names)
        stamp[0] = time.time()
        return out

    return job


class Telemetry:
    """Every link's collector, the per-device ``seq``, and the Gateway-facing side."""

    def __init__(
        self, config: Config, factory: MessageFactory, emit: Emit, gateway_up: Callable[[], bool]
    ) -> None:
        self.config = config
        self.factory = factory
        self.emit = emit
        self.gateway_up = gateway_up
        self.buffer = config.telemetry.buffer
        self.max_frame = config.gateway.max_frame
        self.collectors: dict[int, LinkCollector] = {}
        self.by_device: dict[str, list[GroupState]] = {}
        self.seq: collections.Counter[str] = collections.Counter()  # telemetry messages per device
        self._flush_handles: dict[int, asyncio.TimerHandle] = {}
        self.dropped_while_down = 0
        #: told (group name, seconds) after each cycle (metrics' histogram)
        self.on_cycle: Callable[[str, float], None] | None = None
        #: told (device id, group name, sample) after each good cycle (the console's history)
        self.on_sample: Callable[[str, str, Sample], None] | None = None

    # ------------------------------------------------------------------ setup

    def add_device(self, dev: DeviceRuntime) -> None:
        """Set up the poll groups of a device (a device without groups or link costs nothing)."""
        if dev.link is None or dev.adapter is None or not dev.config.telemetry:
            return
        states = []
        for group in dev.profile.telemetry:
            points = [] if group.command is not None else group.point_names(dev.profile)
            plan = dev.adapter.read_plan(points) if points else []
            reporter = GroupReporter(group, dev.profile.points)
            states.append(GroupState(dev, group, reporter, points, plan))
        if not states:
            return
        collector = self.collectors.get(id(dev.link))
        if collector is None:
            collector = self.collectors[id(dev.link)] = LinkCollector(dev.link, self)
        collector.groups.extend(states)
        self.by_device[dev.id] = states

    def start(self) -> None:
        """Start every link's scheduler."""
        for collector in self.collectors.values():
            collector.start()

    async def stop(self) -> None:
        """Stop every scheduler and cycle."""
        for handle in self._flush_handles.values():
            handle.cancel()
        self._flush_handles.clear()
        for collector in self.collectors.values():
            await collector.stop()

    # ------------------------------------------------------------------ events

    def device_state(self, dev_id: str, new: str, previous: str | None) -> None:
        """A device changed state: back online means the next good cycle is a snapshot."""
        if new == "online" and previous is not None:
            for gs in self.by_device.get(dev_id, ()):
                gs.reporter.request_snapshot()

    def gateway_connected(self) -> None:
        """REGISTER was sent: a snapshot of every device and group (buffer: latest sends the
        kept latest values now, with their original sample time)."""
        for states in self.by_device.values():
            for gs in states:
                if self.buffer == "latest":
                    self.report(gs, gs.reporter.snapshot())
                else:
                    gs.reporter.request_snapshot()

    def written(self, dev_id: str, names: Iterable[str]) -> None:
        """A command wrote these points: read back every group that polls one of them."""
        wrote = set(names)
        for gs in self.by_device.get(dev_id, ()):
            hit = wrote.intersection(gs.points)
            if not hit:
                continue
            if gs.running:
                gs.again |= hit
            else:
                gs.reporter.force(hit)
                self.collectors[id(gs.device.link)].run_cycle(gs)

    # ------------------------------------------------------------------ reporting

    def report(self, gs: GroupState, report: Report | None) -> None:
        """Send what a cycle (or a flush) decided, and schedule a pending min_interval flush."""
        pending = gs.reporter.next_flush()
        key = id(gs)
        if pending is not None and key not in self._flush_handles:
            loop = asyncio.get_running_loop()
            self._flush_handles[key] = loop.call_at(pending, self._flush, gs)
        if report is None:
            return
        gs.reported += len(report.values)
        if self.buffer == "latest" and not self.gateway_up():
            # not queued message by message: the latest values go in a snapshot after REGISTER
            self.dropped_while_down += 1
            return
        dev = gs.device
        msg = self.factory.telemetry(
            dev.id,
            dev.config.type,
            gs.group.name,
            self.seq[dev.id] + 1,
            report.sampled_at,
            report.values,
            snapshot=report.snapshot,
            quality=report.quality or None,
        )
        text = framing.encode(msg)
        if framing.text_size(text) <= self.max_frame:  # the usual case: encoded once, sent
            self.seq[dev.id] += 1
            msg["_text"] = text
            self.emit(msg)
            return
        for i, piece in enumerate(framing.split_mapping(msg, "values", self.max_frame)):
            self.seq[dev.id] += 1
            part = {**piece, "seq": self.seq[dev.id]}
            if i:  # every part is a message of its own
                part["messageId"] = self.factory.message_id()
            self.emit(part)

    def _flush(self, gs: GroupState) -> None:
        self._flush_handles.pop(id(gs), None)
        now = asyncio.get_running_loop().time()
        self.report(gs, gs.reporter.flush(now))

    # ------------------------------------------------------------------ views

    def values(self, dev_id: str) -> dict[str, Any]:
        """QUERY values: the cache of every polled point with its sample time and quality."""
        states = self.by_device.get(dev_id)
        if not states:
            return {}
        values: dict[str, Any] = {}
        sampled: dict[str, str] = {}
        quality: dict[str, str] = {}
        for gs in states:
            stale = gs.device.state != "online" or gs.failing
            times = gs.reporter.latest_times
            for name, value in gs.reporter.latest.items():
                values[name] = value
                if name in times:
                    sampled[name] = epoch_timestamp(times[name])
                quality[name] = "stale" if stale else "good"
            for name in gs.reporter.bad:
                quality[name] = "bad"
        return {"values": values, "sampledAt": sampled, "quality": quality}

    def status(self, dev_id: str) -> list[dict[str, Any]] | None:
        """Per-group cycle figures of a device, for QUERY device(s) and edge-proxy status."""
        states = self.by_device.get(dev_id)
        return [gs.status() for gs in states] if states else None

    def counters(self) -> Mapping[str, int]:
        """Totals over every group, for tests and status."""
        totals: collections.Counter[str] = collections.Counter()
        for per_group in self.counters_by_group().values():
            totals.update(per_group)
        totals["dropped_while_down"] = self.dropped_while_down
        return totals

    def counters_by_group(self) -> dict[str, collections.Counter[str]]:
        """Totals per group name over every device, for metrics (labels stay few)."""
        out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for states in list(self.by_device.values()):
            for gs in states:
                c = out[gs.group.name]
                c["cycles"] += gs.cycles
                c["failures"] += gs.failures
                c["skipped"] += gs.skipped
                c["points_read"] += gs.points_read
                c["reported"] += gs.reported
        for c in out.values():
            # read but not sent: held back by a deadband (or merged by min_interval)
            c["suppressed"] = max(0, c["points_read"] - c["reported"])
        return dict(out)
