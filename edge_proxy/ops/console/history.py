"""Ring buffers of recent numeric samples, for the console's charts; memory is bounded.

One :class:`GroupRing` per (device, poll group): ``size`` sample times (float64) and, per numeric
point, ``size`` values as float32 (a chart needs no more; the live value shown beside it comes
from the telemetry cache). A point missing from a sample, or read as bad, is a NaN there (a gap
in the chart). Memory is ``size * (8 + 4 * numeric points)`` bytes per group, allocated when
the group's first sample comes: for 500 devices of 30 points and the default 300 samples,
about 19 MB. Bools and strings are not charted.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

from edge_proxy.core.report import Sample

NAN = math.nan
_NUMBERS = (int, float)


class GroupRing:
    """The last ``size`` samples of one poll group of one device."""

    __slots__ = ("count", "head", "known", "size", "times", "values")

    def __init__(self, size: int) -> None:
        self.size = size
        self.times = array("d", bytes(8 * size))
        self.values: dict[str, array[float]] = {}
        self.known: set[str] = set()  # every point name seen, numeric or not
        self.head = 0  # the slot the next sample goes to
        self.count = 0

    def add(self, sampled_at: float, values: Mapping[str, Any], bad: Iterable[str] = ()) -> None:
        """Append one sample (numbers only; the rest of the group's points get a gap)."""
        slot = self.head
        self.times[slot] = sampled_at
        if not self.known.issuperset(values):
            for name, value in values.items():
                if name not in self.known:
                    self.known.add(name)
                    if type(value) in _NUMBERS:
                        self.values[name] = array("f", [NAN]) * self.size
        get = values.get
        try:  # the fast path: every charted point's value is a number (or missing)
            for name, ring in self.values.items():
                ring[slot] = get(name, NAN)
        except TypeError:  # a charted point read as something else this once: a gap
            for name, ring in self.values.items():
                value = get(name)
                ring[slot] = value if type(value) in _NUMBERS else NAN  # type: ignore[assignment]
        for name in bad:
            bad_ring = self.values.get(name)
            if bad_ring is not None:
                bad_ring[slot] = NAN
        self.head = (slot + 1) % self.size
        if self.count < self.size:
            self.count += 1

    def _order(self) -> range | list[int]:
        if self.count < self.size:
            return range(self.count)
        return [*range(self.head, self.size), *range(self.head)]

    def series(self, after: float = -math.inf) -> dict[str, list[list[float | None]]]:
        """Each numeric point's samples after ``after``, oldest first: ``[[time, value], ...]``
        (a gap's value is None)."""
        slots = [i for i in self._order() if self.times[i] > after]
        out: dict[str, list[list[float | None]]] = {}
        for name, ring in self.values.items():
            out[name] = [[self.times[i], _finite(ring[i])] for i in slots]
        return out

    def last_time(self) -> float | None:
        """The newest sample's time, or None before the first."""
        return None if not self.count else self.times[(self.head - 1) % self.size]

    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        return self.times.itemsize * self.size + sum(
            r.itemsize * self.size for r in self.values.values()
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class History:
    """Every device's group rings, fed by the telemetry collector's ``on_sample``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rings: dict[str, dict[str, GroupRing]] = {}

    def add(self, dev_id: str, group: str, sample: Sample) -> None:
        """Telemetry hook: one good cycle of ``group`` of ``dev_id``."""
        groups = self.rings.get(dev_id)
        if groups is None:
            groups = self.rings[dev_id] = {}
        ring = groups.get(group)
        if ring is None:
            ring = groups[group] = GroupRing(self.size)
        ring.add(sample.sampled_at, sample.values, sample.bad)

    def series(self, dev_id: str, after: float = -math.inf) -> dict[str, list[list[float | None]]]:
        """A device's numeric points' samples after ``after`` (every group merged)."""
        out: dict[str, list[list[float | None]]] = {}
        for ring in self.rings.get(dev_id, {}).values():
            for name, points in ring.series(after).items():
                if name in out:
                    out[name] = sorted(out[name] + points, key=lambda p: p[0] or 0.0)
                else:
                    out[name] = points
        return out

    def last_time(self, dev_id: str) -> float | None:
        """The newest sample time of a device, or None."""
        times = [t for r in self.rings.get(dev_id, {}).values() if (t := r.last_time()) is not None]
        return max(times) if times else None

    def keep_only(self, dev_ids: Iterable[str]) -> None:
        """Forget the devices a reload removed."""
        keep = set(dev_ids)
        for dev_id in [d for d in self.rings if d not in keep]:
            del self.rings[dev_id]

    def nbytes(self) -> int:
        """Bytes held by every ring."""
        return sum(r.nbytes() for groups in self.rings.values() for r in groups.values())
