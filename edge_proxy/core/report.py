"""The telemetry report rules: what one poll cycle of one (device, group) sends.

Pure decisions, no I/O: the runtime (``runtime/telemetry.py``) reads the points, hands each
finished cycle to :meth:`GroupReporter.update` as a :class:`Sample` with the times it took,
and sends the :class:`Report` it gets back (adding ``seq`` and the envelope, and splitting by
``max_frame``). The rules (config.md, "Telemetry"; protocol.md, ``telemetry``):

* **Report on change** (``report: change``): a number is reported when it has moved MORE than
  its point's deadband away from the value last *reported* (not last read), so a slow drift is
  reported once it adds up; deadband 0: any change. A bool or a string: any change.
* ``report: always``: every point, every cycle.
* ``min_interval``: at most one on-change message per ``min_interval``; changes within it are
  merged and the latest values go out when it elapses (:meth:`GroupReporter.flush`, due at
  :meth:`GroupReporter.next_flush`) or with the first cycle after it, whichever comes first.
* **Snapshots** (every point of the group, ``snapshot: true``): on the first good cycle, on
  the first good cycle after :meth:`GroupReporter.request_snapshot` (the device is back online,
  the Gateway reconnected), and every ``heartbeat`` (0: never by time). A snapshot goes out at
  once (never held by ``min_interval``), counts as the last report of every point, and starts
  a new ``min_interval`` window.
* **Quality** is sparse: a point that could not be read or decoded in a cycle in which others
  were is reported once as ``"bad"`` when it goes bad, and is absent from ``values``; it is not
  repeated while it stays bad, except in snapshots and with ``report: always``. When it reads
  again its value is reported, whatever the deadband: it changed from bad.
* A cycle in which NOTHING could be read (the device did not answer) is not a Sample at all:
  the runtime reports the device's state (``device_status``) instead, never old values again.
  A Sample whose points were all refused (``values`` empty, every point in ``bad``) is not a
  good cycle: it reports the newly bad points and sends no snapshot.
* **Read-back after a write** (:meth:`GroupReporter.force`): the named points are reported in
  the next update even if unchanged, and that update is not held by ``min_interval``.
* ``sampled_at`` of a report is its sample's; for a merged, flushed report the newest merged
  sample's; for :meth:`GroupReporter.snapshot` the last good cycle's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from edge_proxy.config.profiles import PointConfig
from edge_proxy.config.telemetry import TelemetryGroupConfig

#: A decoded point value.
Value: TypeAlias = bool | int | float | str

#: How early (seconds) :meth:`GroupReporter.flush` may be called and still send: a timer may
#: fire up to the clock's resolution before its time.
FLUSH_SLACK = 0.001


@dataclass(frozen=True)
class Sample:
    """One finished cycle of one (device, group): what was read, and when."""

    #: points read and decoded this cycle
    values: Mapping[str, Value]
    #: points that could not be read or decoded this cycle (a name in both counts as bad)
    bad: frozenset[str]
    #: wall-clock epoch seconds when the cycle's last reply arrived
    sampled_at: float
    #: monotonic seconds at the cycle's end
    now: float


@dataclass(frozen=True)
class Report:
    """What to send for one (device, group): the runtime adds seq and the envelope."""

    values: dict[str, Value]
    #: sparse: ``{"energy": "bad"}``; empty when every point is good
    quality: dict[str, str]
    snapshot: bool
    sampled_at: float


_UNSENT: Any = object()  # a point the Gateway has not been told of


def changed(old: Value, new: Value, deadband: float) -> bool:
    """Whether ``new`` is to be reported against the last reported ``old``.

    Numbers: moved more than ``deadband`` (0: any change; NaN equals NaN). Bools, strings and
    a change of kind (a number that becomes a string): any change.
    """
    number = (int, float)
    if isinstance(old, bool) or isinstance(new, bool) or not isinstance(old, number):
        return type(old) is not type(new) or old != new
    if not isinstance(new, number):
        return True
    if isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new):
        return False
    if deadband <= 0:
        return bool(old != new)
    return bool(abs(new - old) > deadband)


class GroupReporter:
    """The report rules of one (device, group), with the latest values as their cache."""

    def __init__(self, group: TelemetryGroupConfig, points: Mapping[str, PointConfig]) -> None:
        """``points``: the profile's points by name, for their deadbands (others: 0)."""
        self.group = group
        self._deadband = {name: point.deadband_value() for name, point in points.items()}
        #: the latest good value of every point read so far (a bad point keeps its last one)
        self.latest: dict[str, Value] = {}
        #: wall-clock time each point of :attr:`latest` was read
        self.latest_times: dict[str, float] = {}
        #: ``sampled_at`` of the last good cycle (None before the first)
        self.latest_at: float | None = None
        #: the points bad in the last cycle
        self.bad: frozenset[str] = frozenset()
        # what the Gateway was last told: a value per point, the points it knows are bad
        self._sent: dict[str, Value] = {}
        self._sent_bad: set[str] = set()
        # changes held by min_interval, merged: latest values, newly bad points, newest sample
        self._pending: dict[str, Value] = {}
        self._pending_bad: set[str] = set()
        self._pending_at = 0.0
        self._forced: set[str] = set()
        self._snapshot_wanted = True
        self._last_snapshot: float | None = None  # monotonic
        self._window_start: float | None = None  # monotonic time of the last message

    # ------------------------------------------------------------------ requests

    def request_snapshot(self) -> None:
        """Make the next good cycle send a snapshot (device back online, Gateway reconnect)."""
        self._snapshot_wanted = True

    def force(self, names: Iterable[str]) -> None:
        """Report these points in the next update whatever the deadband (a write's read-back).

        Call it for the cycle that reads after the write, not while an older one is running:
        the next update consumes it.
        """
        self._forced.update(names)

    # ------------------------------------------------------------------ cycles

    def update(self, sample: Sample) -> Report | None:
        """Decide what this cycle sends (None: nothing)."""
        bad = frozenset(sample.bad)
        if bad:
            values = {k: v for k, v in sample.values.items() if k not in bad}
        else:
            values = dict(sample.values)
        self.latest.update(values)
        self.latest_times.update(dict.fromkeys(values, sample.sampled_at))
        self.bad = bad
        forced, self._forced = self._forced, set()
        if values:
            self.latest_at = sample.sampled_at
            if self._snapshot_due(sample.now):
                return self._take_snapshot(sample.now, sample.sampled_at)
        if self.group.report == "always":
            if not values and bad <= self._sent_bad:
                return None  # every point refused again: said already
            return self._send(dict(values), bad, False, sample.now, sample.sampled_at)
        self._merge(values, bad, forced, sample.sampled_at)
        if not self._pending and not self._pending_bad:
            return None
        if forced & (values.keys() | bad) or self._window_open(sample.now):
            return self._send_pending(sample.now)
        return None

    def flush(self, now: float) -> Report | None:
        """Send the merged pending changes once min_interval has elapsed (else None)."""
        due = self.next_flush()
        if due is None or now < due - FLUSH_SLACK:
            return None
        return self._send_pending(now)

    def next_flush(self) -> float | None:
        """The monotonic time :meth:`flush` is due, when changes are pending (else None)."""
        if not (self._pending or self._pending_bad) or self._window_start is None:
            return None
        return self._window_start + self.group.min_interval

    def snapshot(self) -> Report | None:
        """Every point's latest value with the last good cycle's time; None before one.

        For ``buffer: latest`` after REGISTER: it counts as sent (the last report of every
        point, and the snapshot a :meth:`request_snapshot` asked for). Not for an offline
        device: its old values are not to be sent again.
        """
        if self.latest_at is None:
            return None
        report = self._snapshot_report(self.latest_at)
        self._count_as_snapshot(report)
        return report

    # ------------------------------------------------------------------ rules

    def _snapshot_due(self, now: float) -> bool:
        if self._snapshot_wanted or self._last_snapshot is None:
            return True
        heartbeat = self.group.heartbeat
        # half an interval early rather than a cycle late: "at least this often"
        return heartbeat > 0 and now >= self._last_snapshot + heartbeat - self.group.interval / 2

    def _window_open(self, now: float) -> bool:
        if self._window_start is None or self.group.min_interval <= 0:
            return True
        return now >= self._window_start + self.group.min_interval - FLUSH_SLACK

    def _merge(
        self, values: Mapping[str, Value], bad: frozenset[str], forced: set[str], at: float
    ) -> None:
        """Add this cycle's changes to the pending ones (the latest value of each wins)."""
        touched = False
        for name in bad:
            if name in self._pending:
                del self._pending[name]
                touched = True
            if name not in self._sent_bad and name not in self._pending_bad:
                self._pending_bad.add(name)
                touched = True
        pending, sent, deadbands = self._pending, self._sent, self._deadband
        if pending or forced or self._sent_bad or self._pending_bad:
            for name, value in values.items():
                if name in self._pending_bad:
                    self._pending_bad.discard(name)
                    touched = True
                if (
                    name in pending
                    or name in forced
                    or name in self._sent_bad
                    or name not in sent
                    or changed(sent[name], value, deadbands.get(name, 0.0))
                ):
                    pending[name] = value
                    touched = True
        else:  # the common cycle: nothing held back, nothing bad, only the deadbands to apply
            for name, value in values.items():
                old = sent.get(name, _UNSENT)
                kind = type(value)
                if old is _UNSENT:
                    moved = True
                elif type(old) is kind and (kind is int or kind is float):
                    band = deadbands.get(name, 0.0)
                    if band <= 0:  # any change; NaN equals NaN
                        moved = old != value and not (
                            kind is float and math.isnan(old) and math.isnan(value)  # type: ignore[arg-type]
                        )
                    else:
                        moved = abs(value - old) > band  # type: ignore[operator]
                else:
                    moved = changed(old, value, deadbands.get(name, 0.0))
                if moved:
                    pending[name] = value
                    touched = True
        if touched:
            self._pending_at = at

    def _send_pending(self, now: float) -> Report:
        values, bad = self._pending, frozenset(self._pending_bad)
        self._pending, self._pending_bad = {}, set()
        return self._send(values, bad, False, now, self._pending_at)

    def _send(
        self, values: dict[str, Value], bad: frozenset[str], snapshot: bool, now: float, at: float
    ) -> Report:
        self._sent.update(values)
        self._sent_bad.difference_update(values)
        self._sent_bad.update(bad)
        self._window_start = now
        return Report(values, {name: "bad" for name in sorted(bad)}, snapshot, at)

    def _snapshot_report(self, at: float) -> Report:
        values = {k: v for k, v in self.latest.items() if k not in self.bad}
        return Report(values, {name: "bad" for name in sorted(self.bad)}, True, at)

    def _take_snapshot(self, now: float, at: float) -> Report:
        report = self._snapshot_report(at)
        self._count_as_snapshot(report)
        self._last_snapshot = now
        self._window_start = now
        return report

    def _count_as_snapshot(self, report: Report) -> None:
        self._sent = dict(report.values)
        self._sent_bad = set(report.quality)
        self._pending, self._pending_bad = {}, set()
        self._snapshot_wanted = False
