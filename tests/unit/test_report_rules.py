"""The telemetry report rules (``core/report.py``), as scripts of cycles and what each sends.

A script is a list of steps run on one :class:`GroupReporter`:

* ``("u", now, values, bad, expected)``: a cycle ended at monotonic ``now`` (its wall-clock
  ``sampled_at`` is ``1000 + now``); ``expected`` is None (nothing sent) or
  ``(values, quality, snapshot)``, or with a fourth item, the report's ``sampled_at``;
* ``("f", now, expected)``: :meth:`GroupReporter.flush` at ``now``;
* ``("nf", time)``: what :meth:`GroupReporter.next_flush` says;
* ``("req",)``: :meth:`GroupReporter.request_snapshot`;
* ``("force", names)``: :meth:`GroupReporter.force`.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from edge_proxy.config import PointConfig, TelemetryGroupConfig
from edge_proxy.core.report import GroupReporter, Report, Sample, Value, changed

WALL = 1000.0

#: t: a number with deadband 1.0; p: "10%" of 0..200 = 20; n: no deadband; b: bool; s: string
POINTS = {
    "t": PointConfig(type="float32", deadband=1.0),
    "p": PointConfig(min=0, max=200, deadband="10%"),
    "n": PointConfig(),
    "b": PointConfig(table="coil"),
    "s": PointConfig(type="string", length=4),
}

Step = tuple[Any, ...]


def reporter(**group: Any) -> GroupReporter:
    """A reporter of a group over POINTS (interval 1 s unless given)."""
    group.setdefault("interval", 1.0)
    group.setdefault("points", list(POINTS))
    return GroupReporter(TelemetryGroupConfig(**group), POINTS)


def sample(now: float, values: dict[str, Value], bad: Any = ()) -> Sample:
    """A finished cycle at ``now`` (monotonic) and ``WALL + now`` (wall clock)."""
    return Sample(values, frozenset(bad), WALL + now, now)


def check(got: Report | None, expected: Any, now: float, where: str) -> None:
    if expected is None:
        assert got is None, (where, got)
        return
    values, quality, snapshot, *at = expected
    assert got is not None, where
    assert (got.values, got.quality, got.snapshot) == (values, quality, snapshot), where
    assert got.sampled_at == (at[0] if at else WALL + now), where


def run(rep: GroupReporter, steps: list[Step]) -> None:
    """Run a script; each step's outcome is checked where it happens."""
    for i, step in enumerate(steps):
        where = f"step {i}: {step!r}"
        kind = step[0]
        if kind == "u":
            _, now, values, bad, expected = step
            check(rep.update(sample(now, values, bad)), expected, now, where)
        elif kind == "f":
            _, now, expected = step
            check(rep.flush(now), expected, now, where)
        elif kind == "nf":
            assert rep.next_flush() == step[1], where
        elif kind == "req":
            rep.request_snapshot()
        elif kind == "force":
            rep.force(step[1])
        else:  # pragma: no cover - a typo in a script
            raise AssertionError(kind)


SNAP = True
NO: dict[str, str] = {}

SCRIPTS: dict[str, tuple[dict[str, Any], list[Step]]] = {
    "the first good cycle is a snapshot, then only changes": (
        {},
        [
            ("u", 0, {"t": 20.0, "b": True}, (), ({"t": 20.0, "b": True}, NO, SNAP)),
            ("u", 1, {"t": 20.0, "b": True}, (), None),
            ("u", 2, {"t": 20.0, "b": False}, (), ({"b": False}, NO, False)),
        ],
    ),
    "a drift of 0.4 per cycle under deadband 1.0 is reported on the third cycle": (
        {},
        [
            ("u", 0, {"t": 0.0}, (), ({"t": 0.0}, NO, SNAP)),
            ("u", 1, {"t": 0.4}, (), None),
            ("u", 2, {"t": 0.8}, (), None),
            ("u", 3, {"t": 1.2000000000000002}, (), ({"t": 1.2000000000000002}, NO, False)),
            # against the last REPORTED value (1.2), not the last read
            ("u", 4, {"t": 1.6}, (), None),
            ("u", 5, {"t": 2.0}, (), None),
            ("u", 6, {"t": 2.4}, (), ({"t": 2.4}, NO, False)),
        ],
    ),
    "a move of exactly the deadband is not more than it": (
        {},
        [
            ("u", 0, {"t": 10.0}, (), ({"t": 10.0}, NO, SNAP)),
            ("u", 1, {"t": 11.0}, (), None),
            ("u", 2, {"t": 9.0}, (), None),
            ("u", 3, {"t": 8.5}, (), ({"t": 8.5}, NO, False)),
        ],
    ),
    '"10%" of min 0 .. max 200 is a deadband of 20': (
        {},
        [
            ("u", 0, {"p": 100}, (), ({"p": 100}, NO, SNAP)),
            ("u", 1, {"p": 119}, (), None),
            ("u", 2, {"p": 120}, (), None),
            ("u", 3, {"p": 121}, (), ({"p": 121}, NO, False)),
            ("u", 4, {"p": 101.5}, (), None),
            ("u", 5, {"p": 100}, (), ({"p": 100}, NO, False)),
        ],
    ),
    "deadband 0: any change": (
        {},
        [
            ("u", 0, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
            ("u", 1, {"n": 1}, (), ({"n": 1}, NO, False)),
            ("u", 2, {"n": 1}, (), None),
            ("u", 3, {"n": 0}, (), ({"n": 0}, NO, False)),
        ],
    ),
    "bools and strings on any change": (
        {},
        [
            ("u", 0, {"b": False, "s": "ab"}, (), ({"b": False, "s": "ab"}, NO, SNAP)),
            ("u", 1, {"b": True, "s": "ab"}, (), ({"b": True}, NO, False)),
            ("u", 2, {"b": True, "s": "ac"}, (), ({"s": "ac"}, NO, False)),
            ("u", 3, {"b": True, "s": "ac"}, (), None),
            ("u", 4, {"b": False, "s": "AC"}, (), ({"b": False, "s": "AC"}, NO, False)),
        ],
    ),
    "several points change in one cycle: one report, only those": (
        {},
        [
            ("u", 0, {"t": 0.0, "n": 0, "p": 0}, (), ({"t": 0.0, "n": 0, "p": 0}, NO, SNAP)),
            ("u", 1, {"t": 5.0, "n": 1, "p": 1}, (), ({"t": 5.0, "n": 1}, NO, False)),
        ],
    ),
    "report: always sends every point every cycle, and the bad ones each time": (
        {"report": "always"},
        [
            ("u", 0, {"t": 0.0, "n": 0}, (), ({"t": 0.0, "n": 0}, NO, SNAP)),
            ("u", 1, {"t": 0.0, "n": 0}, (), ({"t": 0.0, "n": 0}, NO, False)),
            ("u", 2, {"t": 0.1}, {"n"}, ({"t": 0.1}, {"n": "bad"}, False)),
            ("u", 3, {"t": 0.1}, {"n"}, ({"t": 0.1}, {"n": "bad"}, False)),
            ("u", 4, {"t": 0.1, "n": 0}, (), ({"t": 0.1, "n": 0}, NO, False)),
        ],
    ),
    "report: always still sends snapshots when asked": (
        {"report": "always", "heartbeat": 5},
        [
            ("u", 0, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
            ("u", 1, {"n": 0}, (), ({"n": 0}, NO, False)),
            ("req",),
            ("u", 2, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
            ("u", 7, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
        ],
    ),
    "min_interval: changes within it are merged into one report with the latest values": (
        {"min_interval": 10},
        [
            ("u", 0, {"t": 0.0, "n": 0}, (), ({"t": 0.0, "n": 0}, NO, SNAP)),
            ("nf", None),
            ("u", 1, {"t": 0.0, "n": 1}, (), None),  # held: the snapshot opened a window at 0
            ("nf", 10),
            ("u", 2, {"t": 0.5, "n": 2}, (), None),
            ("u", 3, {"t": 5.0, "n": 2}, (), None),
            ("u", 4, {"t": 5.2, "n": 2}, (), None),  # t is pending: its latest value goes
            ("nf", 10),
            ("f", 5, None),  # too early
            ("f", 10, ({"n": 2, "t": 5.2}, NO, False, WALL + 4)),
            ("nf", None),
            ("f", 11, None),  # nothing pending
            ("u", 11, {"t": 5.2, "n": 3}, (), None),
            ("nf", 20),
            # the window is over at the next cycle: the update sends it (no flush needed)
            ("u", 20, {"t": 5.2, "n": 3}, (), ({"n": 3}, NO, False)),
            ("nf", None),
            ("u", 31, {"t": 5.2, "n": 4}, (), ({"n": 4}, NO, False)),  # a window long over
        ],
    ),
    "min_interval: a change undone within it is sent with its latest value": (
        {"min_interval": 10},
        [
            ("u", 0, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
            ("u", 1, {"n": 1}, (), None),
            ("u", 2, {"n": 0}, (), None),
            ("f", 10, ({"n": 0}, NO, False, WALL + 2)),
        ],
    ),
    "min_interval: a flush a little early (a timer's resolution) still sends": (
        {"min_interval": 2},
        [
            ("u", 0, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
            ("u", 1, {"n": 1}, (), None),
            ("f", 1.9999, ({"n": 1}, NO, False, WALL + 1)),
            ("nf", None),
        ],
    ),
    "a snapshot is sent at once, not held by min_interval, and starts a new window": (
        {"min_interval": 10},
        [
            ("u", 0, {"n": 0, "t": 0.0}, (), ({"n": 0, "t": 0.0}, NO, SNAP)),
            ("u", 1, {"n": 1, "t": 0.0}, (), None),
            ("req",),
            ("u", 2, {"n": 2, "t": 0.0}, (), ({"n": 2, "t": 0.0}, NO, SNAP)),
            ("nf", None),  # the pending change went with the snapshot
            ("f", 10, None),
            ("u", 3, {"n": 3, "t": 0.0}, (), None),
            ("nf", 12),
        ],
    ),
    "heartbeat: a snapshot at least every heartbeat (half an interval early, not late)": (
        {"heartbeat": 10},
        [
            ("u", 0, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
            ("u", 5, {"n": 0}, (), None),
            ("u", 9.4, {"n": 0}, (), None),
            ("u", 9.6, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
            ("u", 10.6, {"n": 0}, (), None),
            ("u", 19.0, {"n": 0}, (), None),  # due at 9.6 + 10 - 0.5
            ("u", 19.2, {"n": 1}, (), ({"n": 1}, NO, SNAP)),
        ],
    ),
    "heartbeat 0: never a snapshot by time": (
        {"heartbeat": 0},
        [
            ("u", 0, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
            ("u", 100_000, {"n": 0}, (), None),
        ],
    ),
    "a heartbeat snapshot counts as the last report of every point": (
        {"heartbeat": 10},
        [
            ("u", 0, {"t": 0.0}, (), ({"t": 0.0}, NO, SNAP)),
            ("u", 10, {"t": 0.9}, (), ({"t": 0.9}, NO, SNAP)),
            ("u", 11, {"t": 1.8}, (), None),  # 0.9 from the snapshot's 0.9
            ("u", 12, {"t": 2.0}, (), ({"t": 2.0}, NO, False)),
        ],
    ),
    "request_snapshot: the next good cycle is a snapshot, once": (
        {},
        [
            ("u", 0, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
            ("u", 1, {"n": 0}, (), None),
            ("req",),
            ("u", 2, {"n": 0}, (), ({"n": 0}, NO, SNAP)),
            ("u", 3, {"n": 0}, (), None),
            # a cycle whose every point is refused is not a good one: the snapshot waits
            ("req",),
            ("u", 4, {}, {"n"}, ({}, {"n": "bad"}, False)),
            ("u", 5, {"n": 7}, (), ({"n": 7}, NO, SNAP)),
        ],
    ),
    "quality: bad once when it goes bad, then its value when it reads again": (
        {},
        [
            ("u", 0, {"t": 0.0, "n": 5}, (), ({"t": 0.0, "n": 5}, NO, SNAP)),
            ("u", 1, {"t": 0.0}, {"n"}, ({}, {"n": "bad"}, False)),
            ("u", 2, {"t": 0.0}, {"n"}, None),  # still bad: said already
            ("u", 3, {"t": 5.0}, {"n"}, ({"t": 5.0}, NO, False)),
            ("u", 4, {"t": 5.0, "n": 5}, (), ({"n": 5}, NO, False)),  # unchanged, but was bad
            ("u", 5, {"t": 5.0, "n": 5}, (), None),
        ],
    ),
    "quality: a point bad from the start is in the first snapshot's quality, and again in later": (
        {},
        [
            ("u", 0, {"t": 0.0}, {"n"}, ({"t": 0.0}, {"n": "bad"}, SNAP)),
            ("u", 1, {"t": 0.0}, {"n"}, None),
            ("req",),
            ("u", 2, {"t": 0.0}, {"n"}, ({"t": 0.0}, {"n": "bad"}, SNAP)),
            ("u", 3, {"t": 0.4, "n": 1}, (), ({"n": 1}, NO, False)),
        ],
    ),
    "quality: bad points under min_interval; bad and back within it sends nothing": (
        {"min_interval": 10},
        [
            ("u", 0, {"t": 0.0, "n": 0}, (), ({"t": 0.0, "n": 0}, NO, SNAP)),
            ("u", 1, {"t": 0.0}, {"n"}, None),
            ("nf", 10),
            ("u", 2, {"t": 0.0, "n": 0}, (), None),
            ("nf", None),
            ("f", 10, None),
            ("u", 11, {"t": 0.0, "n": 1}, {"t"}, ({"n": 1}, {"t": "bad"}, False)),
            ("u", 12, {"t": 0.0, "n": 1}, (), None),  # t is back, but held
            ("f", 21, ({"t": 0.0}, NO, False, WALL + 12)),
        ],
    ),
    "a point that is both read and bad counts as bad": (
        {},
        [
            ("u", 0, {"t": 0.0, "n": 3}, {"n"}, ({"t": 0.0}, {"n": "bad"}, SNAP)),
        ],
    ),
    "every point refused in the first cycle: their quality, no snapshot yet": (
        {},
        [
            ("u", 0, {}, {"t", "n"}, ({}, {"n": "bad", "t": "bad"}, False)),
            ("u", 1, {}, {"t", "n"}, None),
            ("u", 2, {"t": 1.0}, {"n"}, ({"t": 1.0}, {"n": "bad"}, SNAP)),
        ],
    ),
    "force: a read-back is reported in the next update even if unchanged, once": (
        {},
        [
            ("u", 0, {"t": 0.0, "n": 0}, (), ({"t": 0.0, "n": 0}, NO, SNAP)),
            ("force", ["t", "not-in-group"]),
            ("u", 1, {"t": 0.1, "n": 0}, (), ({"t": 0.1}, NO, False)),
            ("u", 2, {"t": 0.2, "n": 0}, (), None),
            ("force", ["n"]),
            ("u", 3, {"t": 0.2, "n": 0}, (), ({"n": 0}, NO, False)),
        ],
    ),
    "force: the read-back is not held by min_interval, and takes the pending changes along": (
        {"min_interval": 10},
        [
            ("u", 0, {"t": 0.0, "n": 0}, (), ({"t": 0.0, "n": 0}, NO, SNAP)),
            ("u", 1, {"t": 0.0, "n": 1}, (), None),
            ("force", ["t"]),
            ("u", 2, {"t": 0.0, "n": 1}, (), ({"n": 1, "t": 0.0}, NO, False)),
            ("nf", None),
            ("u", 3, {"t": 0.0, "n": 2}, (), None),  # a new window from the read-back
            ("nf", 12),
        ],
    ),
    "a name without a point config (a command group's result) has deadband 0": (
        {"points": None, "command": "STATUS"},
        [
            (
                "u",
                0,
                {"door": "1", "brightness": "50"},
                (),
                ({"door": "1", "brightness": "50"}, NO, SNAP),
            ),
            ("u", 1, {"door": "1", "brightness": "51"}, (), ({"brightness": "51"}, NO, False)),
            ("u", 2, {"door": "1", "level": 3}, (), ({"level": 3}, NO, False)),
        ],
    ),
}


@pytest.mark.parametrize(("group", "steps"), SCRIPTS.values(), ids=list(SCRIPTS))
def test_report_rules(group: dict[str, Any], steps: list[Step]) -> None:
    run(reporter(**group), steps)


# ----------------------------------------------------------------------------- the cache


def test_the_cache_for_query_values() -> None:
    rep = reporter()
    assert (rep.latest, rep.latest_at, rep.bad) == ({}, None, frozenset())
    assert rep.snapshot() is None  # before the first good cycle
    rep.update(sample(0, {"t": 1.0, "n": 2}))
    rep.update(sample(1, {"t": 1.5}, {"n"}))
    # the latest good value of each point (a bad one keeps its last), the last good cycle
    assert rep.latest == {"t": 1.5, "n": 2}
    assert rep.latest_times == {"t": WALL + 1, "n": WALL + 0}
    assert rep.latest_at == WALL + 1
    assert rep.bad == {"n"}
    rep.update(sample(2, {}, {"t", "n"}))  # nothing read: not a good cycle
    assert rep.latest_at == WALL + 1 and rep.bad == {"t", "n"}


def test_snapshot_for_buffer_latest_counts_as_sent() -> None:
    rep = reporter(min_interval=10)
    rep.update(sample(0, {"t": 0.0, "n": 0}))
    assert rep.update(sample(1, {"t": 3.0, "n": 0}, {"n"})) is None  # held by min_interval
    snap = rep.snapshot()
    assert snap == Report({"t": 3.0}, {"n": "bad"}, True, WALL + 1)
    assert rep.next_flush() is None  # the held change went with it
    # it is the last report of every point, and the snapshot a request asked for
    rep.request_snapshot()
    rep.snapshot()
    assert rep.update(sample(20, {"t": 3.5}, {"n"})) is None
    assert rep.update(sample(21, {"t": 4.5, "n": 1})) == Report(
        {"t": 4.5, "n": 1}, {}, False, WALL + 21
    )


def test_a_report_is_a_copy() -> None:
    rep = reporter()
    first = rep.update(sample(0, {"n": 0}))
    assert first is not None
    first.values["n"] = 99
    assert rep.latest == {"n": 0}
    assert rep.update(sample(1, {"n": 0})) is None


# ----------------------------------------------------------------------------- comparison


@pytest.mark.parametrize(
    ("old", "new", "deadband", "expected"),
    [
        (0, 0, 0.0, False),
        (0, 1, 0.0, True),
        (0, 1, 1.0, False),
        (0, 1.01, 1.0, True),
        (0.0, -1.5, 1.0, True),
        (2**63, 2**63 + 1, 0.0, True),  # exact for large integers
        (1, 1.0, 0.0, False),  # an int and a float of one value
        (math.nan, math.nan, 0.0, False),
        (math.nan, 1.0, 0.0, True),
        (True, True, 5.0, False),
        (True, False, 5.0, True),
        (1, True, 5.0, True),  # a change of kind
        (True, 1, 5.0, True),
        ("a", "a", 0.0, False),
        ("a", "b", 5.0, True),
        ("1", 1, 0.0, True),
        (1, "1", 0.0, True),
    ],
)
def test_changed(old: Value, new: Value, deadband: float, expected: bool) -> None:
    assert changed(old, new, deadband) is expected


@pytest.mark.parametrize("deadband", [0.0, 1.0, 5.0])
@pytest.mark.parametrize(
    ("old", "new"),
    [
        (0, 0), (0, 1), (0, 6), (0, 1.01), (0.0, -1.5), (2**63, 2**63 + 1), (1, 1.0),
        (math.nan, math.nan), (math.nan, 1.0), (1.0, math.nan), (True, True), (True, False),
        (1, True), ("a", "a"), ("a", "b"), ("1", 1), (2.5, 2.5),
    ],
)  # fmt: skip
def test_a_cycle_reports_what_changed_says(old: Value, new: Value, deadband: float) -> None:
    """The reporter's quick path for a plain cycle decides as :func:`changed` does."""
    points = {"x": PointConfig(deadband=deadband) if deadband else PointConfig()}
    rep = GroupReporter(TelemetryGroupConfig(interval=1.0, points=["x"]), points)
    assert rep.update(sample(0, {"x": old})) is not None  # the first snapshot
    got = rep.update(sample(1, {"x": new}))
    if changed(old, new, deadband):
        assert got is not None and got.snapshot is False
        assert list(got.values) == ["x"] and got.values["x"] is new
    else:
        assert got is None
