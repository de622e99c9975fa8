"""The command engine end to end: BATCH, COMPLEX, priorities, timeouts, CANCEL, QUERY, de-dup.

Everything goes over the real test Gateway and a running daemon. Device work is observed
with a small recording driver defined here (``engine-recorder``): it logs every transaction
with the command it belongs to, counts transactions running at once on its link, fails writes
on request, and can hold a transaction until the test releases it, so ordering tests wait on
events instead of on time.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, cast

import pytest

from edge_proxy.config import Config, DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.drivers import Device, Driver, Link, checkpoint, current_operation, registry
from edge_proxy.errors import DeviceException
from edge_proxy.ops.daemon import Daemon
from edge_proxy.runtime import engine as engine_module
from edge_proxy.runtime.engine import CommandState
from edge_proxy_drivers.simulated import SimulatedLink
from tests.builders import base_tree, command, is_terminal, make_config
from tests.integration.support import Gateway

EdgeFactory = Callable[[Config], Awaitable[Daemon]]
RECORDER_DRIVER = "engine-recorder"

# ---------------------------------------------------------------- the recording driver


@dataclass
class Tx:
    """One transaction seen by the recording driver."""

    link: str
    device: str
    kind: str  # "read" | "write"
    ref: str | None  # the command's requestRef; None for health checks
    points: list[str]
    values: dict[str, Any]
    start: float
    end: float | None = None
    failed: bool = False


Gate = tuple[Callable[[Tx], bool], asyncio.Event]


@dataclass
class Recorder:
    """Every transaction of every recording link, and gates that hold chosen ones."""

    txs: list[Tx] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    _cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def changed(self) -> None:
        """Wake every waiter."""
        cond = self._condition()
        async with cond:
            cond.notify_all()

    async def wait(self, pred: Callable[[Tx], bool], timeout: float = 10.0) -> Tx:
        """Wait until a transaction matching ``pred`` has started; return it."""
        cond = self._condition()
        async with cond:
            await asyncio.wait_for(cond.wait_for(lambda: any(pred(t) for t in self.txs)), timeout)
        return next(t for t in self.txs if pred(t))

    def hold(self, pred: Callable[[Tx], bool]) -> asyncio.Event:
        """Hold transactions matching ``pred`` (after they start) until the event is set."""
        event = asyncio.Event()
        self.gates.append((pred, event))
        return event

    def of(self, ref: str) -> list[Tx]:
        """Transactions of one command, in start order."""
        return [t for t in self.txs if t.ref == ref]

    def commands(self) -> list[Tx]:
        """Transactions of commands (health checks left out), in start order."""
        return [t for t in self.txs if t.ref is not None]


RECORDER = Recorder()


class RecordingLink(SimulatedLink):
    """A simulated link (always there) that counts how many transactions run on it at once.

    Keys: ``latency`` (added to every command transaction; health checks are instant),
    ``fail_devices`` (writes to these devices fail), ``fail_points`` (writes of these points fail).
    """

    def __init__(self, name: str, config: LinkConfig) -> None:
        super().__init__(name, config)
        extra = config.extra_keys
        self.fail_devices = set(extra.get("fail_devices", []))
        self.fail_points = set(extra.get("fail_points", []))
        self.active = 0
        self.max_active = 0


class RecordingDevice(Device):
    """Stores values like the simulated driver and records every transaction."""

    link: RecordingLink

    def __init__(self, link: Link, config: DeviceConfig, profile: ProfileConfig) -> None:
        super().__init__(link, config, profile)
        self.values: dict[str, Any] = {
            name: False if p.type == "bool" else 0 for name, p in profile.points.items()
        }

    async def _transaction(
        self, kind: str, points: Sequence[str], values: Mapping[str, Any]
    ) -> None:
        checkpoint()
        ctx = current_operation()
        tx = Tx(
            self.link.name,
            self.config.id,
            kind,
            ctx.request_ref if ctx is not None else None,
            list(points),
            dict(values),
            time.monotonic(),
        )
        link = self.link
        link.active += 1
        link.max_active = max(link.max_active, link.active)
        RECORDER.txs.append(tx)
        try:
            await RECORDER.changed()
            for pred, event in RECORDER.gates:
                if pred(tx):
                    await event.wait()
            if link.latency and tx.ref is not None:
                await asyncio.sleep(link.latency)
            if kind == "write" and (
                self.config.id in link.fail_devices or set(values) & link.fail_points
            ):
                tx.failed = True
                raise DeviceException(f"device {self.config.id} refused the write")
        finally:
            link.active -= 1
            tx.end = time.monotonic()
            await RECORDER.changed()

    async def read(self, points: Sequence[str]) -> dict[str, Any]:
        """Return the stored values."""
        await self._transaction("read", points, {})
        return {name: self.values[name] for name in points}

    async def write(self, values: Mapping[str, Any]) -> None:
        """Store the values."""
        await self._transaction("write", list(values), values)
        self.values.update(values)


class RecordingDriver(Driver):
    """Registry entry of the recording driver."""

    name: ClassVar[str] = RECORDER_DRIVER
    link_class: ClassVar[type[Link]] = RecordingLink
    device_class: ClassVar[type[Device]] = RecordingDevice
    extra_link_keys: ClassVar[frozenset[str]] = frozenset(
        {"latency", "fail_devices", "fail_points"}
    )


registry.register(RECORDER_DRIVER, RecordingDriver)


@pytest.fixture(autouse=True)
def recorder() -> Iterator[Recorder]:
    """A fresh recorder per test; gates still closed at the end are opened."""
    global RECORDER
    RECORDER = Recorder()
    yield RECORDER
    for _, event in RECORDER.gates:
        event.set()


# ---------------------------------------------------------------- helpers


def rec_link(latency: str = "0ms", **extra: Any) -> dict[str, Any]:
    """A recording link mapping."""
    return {"driver": RECORDER_DRIVER, "latency": latency, "health_interval": "30s", **extra}


def dev(dev_id: str, link: str, dev_type: str = "pillar", **extra: Any) -> dict[str, Any]:
    """A device mapping on the pillar profile."""
    return {"id": dev_id, "type": dev_type, "profile": "pillar", "link": link, **extra}


def make_tree(
    gateway: Gateway,
    links: dict[str, Any] | None = None,
    devices: list[dict[str, Any]] | None = None,
    commands: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """base_tree() plus extra links, devices and a commands: section."""
    tree = base_tree(gateway.url)
    tree["links"].update(links or {})
    tree["devices"].extend(devices or [])
    if commands is not None:
        tree["commands"] = commands
    return tree


async def start(gateway: Gateway, edge_factory: EdgeFactory, tree: dict[str, Any]) -> Daemon:
    """Start a daemon on ``tree`` and wait for its REGISTER."""
    daemon = await edge_factory(make_config(tree))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    return daemon


async def online(gateway: Gateway, *ids: str) -> None:
    """Wait until every named device has reported itself online."""
    wanted = set(ids)
    await gateway.wait(
        lambda f: (
            f["type"] == "device_status" and f["deviceId"] in wanted and f["status"] == "online"
        ),
        count=len(wanted),
    )


def sim_values(daemon: Daemon, device: str) -> dict[str, Any]:
    """The stored values of a simulated or recording device."""
    adapter = daemon.devices[device].adapter
    values: dict[str, Any] = adapter.values  # type: ignore[union-attr]
    return values


def rec_link_of(daemon: Daemon, device: str) -> RecordingLink:
    """The recording link a device is on."""
    runtime = daemon.devices[device].link
    assert runtime is not None
    return cast(RecordingLink, runtime.link)


def batch(
    ref: str,
    targets: Any = None,
    *,
    device: str = "pillar-001",
    values: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    device_type: str | None = None,
    device_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A BATCH COMMAND frame of a generic write: ``values``, or ``params`` given whole."""
    p: dict[str, Any] = dict(params) if params is not None else {"values": values or {"mode": 1}}
    if targets is not None:
        p["targets"] = targets
    p["batch"] = True
    msg = command(ref, device, op="write", params=p, ctype="BATCH", **extra)
    if device_type is not None:
        msg["command"]["deviceType"] = device_type
    if device_id is not None:
        msg["command"]["deviceId"] = device_id
    return msg


def complex_cmd(
    ref: str, steps: list[dict[str, Any]], device: str = "pillar-001", **extra: Any
) -> dict[str, Any]:
    """A COMPLEX COMMAND frame with ``parameters.steps``."""
    return command(ref, device, params={"steps": steps}, ctype="COMPLEX", **extra)


def write_step(values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A COMPLEX step writing point values."""
    return {"operationType": "write", "parameters": {"values": values}, **extra}


def progress_of(gateway: Gateway, ref: str) -> list[dict[str, Any]]:
    """Every progress_update of ``ref``, in arrival order."""
    return [f for f in gateway.of(ref) if f["type"] == "progress_update"]


def acks_of(gateway: Gateway, ref: str) -> list[str]:
    """The statuses of every ack of ``ref``."""
    return [f["status"] for f in gateway.of(ref) if f["type"] == "ack"]


_settles = itertools.count(1)


async def settle(gateway: Gateway) -> None:
    """Round-trip a QUERY: every frame the edge emitted before it has arrived."""
    ref = f"settle-{next(_settles)}"
    await gateway.send({"type": "QUERY", "requestRef": ref, "query": "devices"})
    await gateway.terminal(ref)


async def exactly_one_terminal(gateway: Gateway, ref: str) -> dict[str, Any]:
    """The terminal message of ``ref``, checked to be the only one."""
    term = await gateway.terminal(ref)
    await settle(gateway)
    frames = gateway.of(ref)
    assert sum(1 for f in frames if is_terminal(f)) == 1, frames
    return term


async def expect_error(gateway: Gateway, ref: str, code: str) -> dict[str, Any]:
    """The terminal of ``ref`` is an ``error`` with ``code`` and no ack was sent."""
    term = await exactly_one_terminal(gateway, ref)
    assert term["type"] == "error" and term["code"] == code, term
    assert term["message"]
    assert acks_of(gateway, ref) == []
    return term


def terminal_order(gateway: Gateway, refs: Sequence[str]) -> list[str]:
    """The refs among ``refs`` in the order their terminal messages arrived."""
    wanted = set(refs)
    return [
        f["requestRef"] for f in gateway.frames if is_terminal(f) and f.get("requestRef") in wanted
    ]


def watch_aborts(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> dict[str, asyncio.Event]:
    """Events set when the engine aborts a command (deadline or CANCEL), by requestRef."""
    events: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
    original = daemon.engine.abort

    def spy(cs: CommandState, reason: str) -> None:
        original(cs, reason)
        events[cs.request.request_ref].set()

    monkeypatch.setattr(daemon.engine, "abort", spy)
    return events


def watch_emits(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[float, dict[str, Any]]]:
    """Every message the engine emits, with the monotonic time it was emitted."""
    sent: list[tuple[float, dict[str, Any]]] = []
    original = daemon.engine.emit

    def spy(msg: dict[str, Any]) -> None:
        sent.append((time.monotonic(), msg))
        original(msg)

    monkeypatch.setattr(daemon.engine, "emit", spy)
    return sent


def wire_time(frame: dict[str, Any]) -> float:
    """A frame's ``timestamp`` as epoch seconds."""
    stamp = datetime.strptime(frame["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return stamp.replace(tzinfo=timezone.utc).timestamp()


# ================================================================ BATCH

KIOSK = dev("kiosk-1", "sim", "kiosk", unit=3)
ALL_SIM = {"pillar-001", "pillar-002", "pillar-slow", "kiosk-1"}

TARGET_FORMS: list[tuple[str, dict[str, Any], set[str]]] = [
    ("comma string", {"targets": "pillar-001, pillar-002"}, {"pillar-001", "pillar-002"}),
    ("list", {"targets": ["pillar-002", "kiosk-1"]}, {"pillar-002", "kiosk-1"}),
    ("glob", {"targets": "pillar-*"}, {"pillar-001", "pillar-002", "pillar-slow"}),
    ("glob and id overlap", {"targets": "pillar-00?,pillar-001"}, {"pillar-001", "pillar-002"}),
    (
        "star of a deviceType",
        {"targets": "*", "device_type": "pillar"},
        {"pillar-001", "pillar-002", "pillar-slow"},
    ),
    ("star of another deviceType", {"targets": "*", "device_type": "kiosk"}, {"kiosk-1"}),
    ("star without deviceType", {"targets": "*"}, ALL_SIM),
    (
        "command.deviceId",
        {"device_id": "kiosk-1,pillar-002", "device": "pillar-001"},
        {"kiosk-1", "pillar-002"},
    ),
]


@pytest.mark.parametrize(
    ("name", "form", "expected"), TARGET_FORMS, ids=[t[0] for t in TARGET_FORMS]
)
async def test_batch_target_forms(
    gateway: Gateway,
    edge_factory: EdgeFactory,
    name: str,
    form: dict[str, Any],
    expected: set[str],
) -> None:
    daemon = await start(gateway, edge_factory, make_tree(gateway, devices=[KIOSK]))
    await gateway.send(batch("b1", values={"mode": 6}, callback={"k": 1}, **form))
    term = await exactly_one_terminal(gateway, "b1")
    ack = gateway.of("b1")[0]
    assert ack["type"] == "ack" and ack["status"] == "accepted"
    assert sorted(ack["targets"]) == sorted(expected) and len(ack["targets"]) == len(expected)
    assert term["type"] == "command_response" and term["status"] == "completed", term
    assert term["callback"] == {"k": 1}
    n = len(expected)
    assert term["result"]["summary"] == {"total": n, "succeeded": n, "failed": 0}
    assert term["result"]["results"] == {
        d: {"status": "completed", "result": {"values": {"mode": 6}}} for d in expected
    }
    for d in ALL_SIM:
        assert sim_values(daemon, d)["mode"] == (6 if d in expected else 0), d


UNKNOWN_TARGETS: list[tuple[str, dict[str, Any]]] = [
    ("unknown id", {"targets": "pillar-001,pillar-404"}),
    ("unknown id in a list", {"targets": ["pillar-001", "pillar-404"]}),
    ("glob matching nothing", {"targets": "pillar-001,lamp-*"}),
    ("star of a type with no device", {"targets": "*", "device_type": "lamp"}),
    ("unknown command.deviceId", {"device_id": "pillar-404"}),
]


@pytest.mark.parametrize(("name", "form"), UNKNOWN_TARGETS, ids=[t[0] for t in UNKNOWN_TARGETS])
async def test_batch_unknown_target_runs_nothing(
    gateway: Gateway, edge: Daemon, name: str, form: dict[str, Any]
) -> None:
    await gateway.send(batch("bu", values={"mode": 4}, **form))
    err = await expect_error(gateway, "bu", "UNKNOWN_DEVICE")
    assert err["details"]["field"].startswith("command")
    for d in ("pillar-001", "pillar-002", "pillar-slow"):
        assert sim_values(edge, d)["mode"] == 0


LAMP_PROFILE: dict[str, Any] = {
    "points": {"brightness": {"table": "holding", "address": 1, "access": "rw", "max": 50}},
    "commands": {},
}


def lamp_tree(gateway: Gateway) -> dict[str, Any]:
    """base_tree()'s pillars and lamp-1, whose profile has only brightness (at most 50)."""
    tree = make_tree(
        gateway,
        devices=[{"id": "lamp-1", "type": "lamp", "profile": "lamp", "link": "sim", "unit": 4}],
    )
    tree["profiles"]["lamp"] = LAMP_PROFILE
    return tree


INVALID_FOR_TARGETS: list[tuple[str, dict[str, Any], str]] = [
    ("point missing on one profile", {"values": {"mode": 3}}, "INVALID_PARAMETERS"),
    ("value above one profile's max", {"values": {"brightness": 80}}, "INVALID_PARAMETERS"),
    ("misspelt parameter", {"values": {"brightness": 10}, "valeus": 1}, "INVALID_PARAMETERS"),
    ("read-only point", {"values": {"door_state": 1}}, "ACCESS_DENIED"),
]


@pytest.mark.parametrize(
    ("name", "params", "code"), INVALID_FOR_TARGETS, ids=[t[0] for t in INVALID_FOR_TARGETS]
)
async def test_batch_parameters_checked_for_every_target_first(
    gateway: Gateway, edge_factory: EdgeFactory, name: str, params: dict[str, Any], code: str
) -> None:
    daemon = await start(gateway, edge_factory, lamp_tree(gateway))
    # pillar-001 comes first: it would have run already if validation were per target
    await gateway.send(batch("bp", "pillar-001,pillar-002,lamp-1", params=params))
    err = await expect_error(gateway, "bp", code)
    misspelt = sorted(set(params) - {"values"})
    field = f"command.parameters.{misspelt[0]}" if misspelt else "command.parameters.values."
    assert err["details"]["field"].startswith(field), err
    assert err["details"]["deviceId"] in ("pillar-001", "lamp-1")
    for d in ("pillar-001", "pillar-002"):
        assert sim_values(daemon, d)["mode"] == 0
        assert sim_values(daemon, d)["brightness"] == 0
    assert sim_values(daemon, "lamp-1")["brightness"] == 0


def brightness_batch(ref: str, targets: str) -> dict[str, Any]:
    """A BATCH of the profile command SET_BRIGHTNESS (20) on ``targets``."""
    params = {"targets": targets, "brightness": 20}
    return command(ref, code="SET_BRIGHTNESS", params=params, ctype="BATCH")


async def test_batch_profile_command_missing_on_a_target(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    daemon = await start(gateway, edge_factory, lamp_tree(gateway))
    await gateway.send(brightness_batch("bc", "pillar-001,lamp-1"))
    err = await expect_error(gateway, "bc", "UNSUPPORTED_COMMAND")
    assert err["details"]["deviceId"] == "lamp-1"
    assert sim_values(daemon, "pillar-001")["brightness"] == 0
    # the same profile command on targets that all have it runs
    await gateway.send(brightness_batch("bc2", "pillar-001,pillar-002"))
    term = await gateway.terminal("bc2")
    assert term["status"] == "completed"
    assert sim_values(daemon, "pillar-002")["brightness"] == 20


def status_tree(gateway: Gateway) -> dict[str, Any]:
    return make_tree(
        gateway,
        links={"rec": rec_link(fail_devices=["rec-bad"])},
        devices=[
            dev("pillar-off", "sim", unit=9, enabled=False),
            dev("rec-ok", "rec"),
            dev("rec-bad", "rec"),
        ],
    )


async def test_batch_completed_partial_failed(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    daemon = await start(gateway, edge_factory, status_tree(gateway))
    await online(gateway, "rec-ok", "rec-bad", "pillar-001")

    await gateway.send(batch("ok", "pillar-001,rec-ok", values={"mode": 2}))
    term = await exactly_one_terminal(gateway, "ok")
    assert term["status"] == "completed"
    assert term["result"]["summary"] == {"total": 2, "succeeded": 2, "failed": 0}

    await gateway.send(batch("part", "pillar-001,pillar-off,rec-bad,rec-ok", values={"mode": 3}))
    term = await exactly_one_terminal(gateway, "part")
    assert term["status"] == "partial", term
    assert "error" not in term
    result = term["result"]
    assert result["summary"] == {"total": 4, "succeeded": 2, "failed": 2}
    assert set(result["results"]) == {"pillar-001", "pillar-off", "rec-bad", "rec-ok"}
    off = result["results"]["pillar-off"]
    assert off["status"] == "failed" and off["error"]["code"] == "DEVICE_OFFLINE"
    assert off["error"]["message"]
    bad = result["results"]["rec-bad"]
    assert bad["status"] == "failed" and bad["error"]["code"] == "DEVICE_EXCEPTION"
    assert "result" not in bad
    assert result["results"]["rec-ok"] == {"status": "completed", "result": {"values": {"mode": 3}}}
    assert sim_values(daemon, "rec-ok")["mode"] == 3
    assert sim_values(daemon, "rec-bad")["mode"] == 0
    assert daemon.devices["pillar-off"].adapter is None  # disabled: never built

    await gateway.send(batch("allbad", ["pillar-off", "rec-bad"], values={"mode": 4}))
    term = await exactly_one_terminal(gateway, "allbad")
    assert term["status"] == "failed", term
    assert term["result"]["summary"] == {"total": 2, "succeeded": 0, "failed": 2}
    assert {r["status"] for r in term["result"]["results"].values()} == {"failed"}


async def test_failed_batch_carries_an_error_object(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    await start(gateway, edge_factory, status_tree(gateway))
    await gateway.send(batch("allbad", ["pillar-off", "rec-bad"], values={"mode": 4}))
    term = await exactly_one_terminal(gateway, "allbad")
    assert term["status"] == "failed"
    assert isinstance(term.get("error"), dict) and term["error"].get("code"), term


def many_tree(gateway: Gateway, n: int, latency: str) -> dict[str, Any]:
    return make_tree(
        gateway,
        links={"rec": rec_link(latency)},
        devices=[dev(f"m-{i:02d}", "rec") for i in range(n)],
    )


async def test_batch_progress_throttled_and_monotonic(
    gateway: Gateway, edge_factory: EdgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 20
    daemon = await start(gateway, edge_factory, many_tree(gateway, n, "40ms"))
    await online(gateway, *(f"m-{i:02d}" for i in range(n)))
    sent = watch_emits(daemon, monkeypatch)
    await gateway.send(batch("bt", "m-*", values={"mode": 1}))
    term = await exactly_one_terminal(gateway, "bt")
    assert term["status"] == "completed"
    assert term["result"]["summary"] == {"total": n, "succeeded": n, "failed": 0}

    frames = progress_of(gateway, "bt")
    # every progress frame precedes the terminal message
    order = [f["type"] for f in gateway.of("bt")]
    assert order[0] == "ack" and order[-1] == "command_response"
    assert set(order[1:-1]) == {"progress_update"}
    progress = [f["progress"] for f in frames]
    assert progress == sorted(progress), progress
    assert all(isinstance(p, int) and 0 <= p <= 100 for p in progress)
    last = frames[-1]
    assert last["progress"] == 100 and last["completed"] == n and last["total"] == n
    assert all(f["total"] == n for f in frames)
    completed = [f["completed"] for f in frames]
    assert completed == sorted(completed) and len(set(completed)) == len(completed)
    assert all(f["progress"] == f["completed"] * 100 // n for f in frames)
    assert all(f["deviceId"].startswith("m-") and f["stage"] for f in frames)
    # throttled: 20 targets 40 ms apart give at most one frame per 100 ms, the last always
    assert 2 <= len(frames) < n
    times = [at for at, msg in sent if msg["type"] == "progress_update"]
    assert len(times) == len(frames)
    gaps = [b - a for a, b in itertools.pairwise(times[:-1])]
    assert all(g >= 0.099 for g in gaps), gaps
    span = term["durationMs"] / 1000
    assert len(frames) <= span / 0.1 + 2
    # and the frames' own timestamps say so (millisecond precision)
    stamps = [wire_time(f) for f in frames]
    stamp_gaps = [round(b - a, 3) for a, b in itertools.pairwise(stamps[:-1])]
    assert all(g >= 0.099 for g in stamp_gaps), stamp_gaps


class OffsetClock:
    """``time`` for the engine module: monotonic() plus an offset a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


async def test_progress_throttle_survives_a_late_timer(
    gateway: Gateway, edge_factory: EdgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine's clock jumps ahead as if the event loop had been busy: its flush timer
    # (on the loop's own clock) is then late, which is what a loaded edge sees.
    interval = 0.5
    monkeypatch.setattr(engine_module, "PROGRESS_INTERVAL", interval)
    clock = OffsetClock()
    monkeypatch.setattr(engine_module, "time", clock)
    daemon = await start_two_rec(gateway, edge_factory)
    sent: list[tuple[float, int]] = []
    original = daemon.engine.emit

    def spy(msg: dict[str, Any]) -> None:
        if msg["type"] == "progress_update":
            sent.append((clock.monotonic(), msg["completed"]))
        original(msg)

    monkeypatch.setattr(daemon.engine, "emit", spy)
    step3 = RECORDER.hold(lambda t: t.ref == "pt" and t.values == {"mode": 3})
    step5 = RECORDER.hold(lambda t: t.ref == "pt" and t.values == {"mode": 5})
    steps = [write_step({"mode": i}) for i in range(1, 6)]
    await gateway.send(complex_cmd("pt", steps, "r1"))
    # step 1's progress went out at once; step 2's waits for the flush timer
    await RECORDER.wait(lambda t: t.ref == "pt" and t.values == {"mode": 3})
    await asyncio.sleep(0.05)  # step 3 finishes 50 ms after step 2 ...
    clock.offset += 2 * interval  # ... while the engine's clock says a second later
    step3.set()
    await gateway.wait(lambda f: f.get("requestRef") == "pt" and f.get("completed") == 4)
    step5.set()
    assert (await gateway.terminal("pt"))["status"] == "completed"
    assert [c for _, c in sent][-1] == 5
    gaps = [(c2, round(b - a, 3)) for (a, _), (b, c2) in itertools.pairwise(sent[:-1])]
    assert all(g >= interval - 0.001 for _, g in gaps), gaps


async def test_batch_runs_links_concurrently(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    latency = 0.25
    links = {f"line{i}": rec_link(f"{int(latency * 1000)}ms") for i in range(4)}
    devices = [dev(f"c-{i}", f"line{i}") for i in range(4)]
    daemon = await start(gateway, edge_factory, make_tree(gateway, links=links, devices=devices))
    await online(gateway, *(d["id"] for d in devices))
    await gateway.send(batch("bc", "c-*", values={"mode": 5}))
    term = await exactly_one_terminal(gateway, "bc")
    assert term["status"] == "completed"
    assert term["result"]["summary"]["succeeded"] == 4
    txs = RECORDER.of("bc")
    assert sorted(t.device for t in txs) == ["c-0", "c-1", "c-2", "c-3"]
    # every transaction started before any of them ended: they overlapped
    first_end = min(t.end or 0.0 for t in txs)
    assert all(t.start < first_end for t in txs)
    assert term["durationMs"] < 3 * latency * 1000
    for i in range(4):
        assert rec_link_of(daemon, f"c-{i}").max_active == 1


async def test_batch_serialised_in_order_on_one_link(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = make_tree(
        gateway,
        links={"bus": rec_link("20ms"), "other": rec_link("20ms")},
        devices=[dev(f"s-{i}", "bus") for i in range(5)] + [dev("o-1", "other")],
    )
    daemon = await start(gateway, edge_factory, tree)
    await online(gateway, "s-0", "s-1", "s-2", "s-3", "s-4", "o-1")
    order = ["s-3", "s-0", "s-4", "s-1", "s-2"]
    await gateway.send(batch("b1", order, values={"mode": 1}))
    await gateway.send(batch("b2", ["s-2", "o-1", "s-1"], values={"mode": 2}))
    await gateway.send(command("one", "s-0", op="read", params={"points": ["mode"]}))
    for ref in ("b1", "b2", "one"):
        assert (await gateway.terminal(ref))["status"] == "completed"
    assert [t.device for t in RECORDER.of("b1")] == order
    assert [t.device for t in RECORDER.of("b2") if t.link == "bus"] == ["s-2", "s-1"]
    assert rec_link_of(daemon, "s-0").max_active == 1
    bus = sorted((t for t in RECORDER.txs if t.link == "bus"), key=lambda t: t.start)
    for a, b in itertools.pairwise(bus):
        assert a.end is not None and a.end <= b.start


async def test_batch_of_2000_targets(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    n = 2000
    tree = base_tree(gateway.url)
    tree["links"].update(
        {f"bulk{i}": {"driver": "simulated", "health_interval": "30s"} for i in range(4)}
    )
    tree["devices"] += [
        {"id": f"bulk-{i:04d}", "type": "bulk", "profile": "pillar", "link": f"bulk{i % 4}"}
        for i in range(n)
    ]
    daemon = await start(gateway, edge_factory, tree)
    await gateway.send(batch("big", "*", device_type="bulk", values={"mode": 7}, timeout=60000))
    term = await gateway.terminal("big", timeout=40)
    ack = gateway.of("big")[0]
    assert ack["status"] == "accepted" and len(ack["targets"]) == n
    assert term["status"] == "completed", term.get("result", {}).get("summary")
    assert term["result"]["summary"] == {"total": n, "succeeded": n, "failed": 0}
    assert len(term["result"]["results"]) == n
    assert all(sim_values(daemon, f"bulk-{i:04d}")["mode"] == 7 for i in range(n))
    assert sim_values(daemon, "pillar-001")["mode"] == 0
    frames = progress_of(gateway, "big")
    assert frames[-1]["progress"] == 100 and frames[-1]["completed"] == n
    progress = [f["progress"] for f in frames]
    assert progress == sorted(progress)
    assert len(frames) < 100  # throttled (the exact spacing: test_progress_throttle_*)


async def test_batch_max_targets(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    tree = make_tree(gateway, commands={"max_batch_targets": 2})
    daemon = await start(gateway, edge_factory, tree)
    await gateway.send(batch("over", "pillar-*", values={"mode": 1}))
    err = await expect_error(gateway, "over", "INVALID_COMMAND")
    assert err["details"]["field"] == "command.parameters.targets"
    assert sim_values(daemon, "pillar-001")["mode"] == 0
    await gateway.send(batch("at", "pillar-001,pillar-002", values={"mode": 1}))
    assert (await gateway.terminal("at"))["status"] == "completed"


# ================================================================ COMPLEX


def two_rec_tree(gateway: Gateway, latency: str = "0ms", **link_extra: Any) -> dict[str, Any]:
    return make_tree(
        gateway,
        links={"ra": rec_link(latency, **link_extra), "rb": rec_link(latency)},
        devices=[dev("r1", "ra"), dev("r2", "rb")],
    )


async def start_two_rec(gateway: Gateway, edge_factory: EdgeFactory) -> Daemon:
    """A daemon on two_rec_tree(), once r1 and r2 are online."""
    daemon = await start(gateway, edge_factory, two_rec_tree(gateway))
    await online(gateway, "r1", "r2")
    return daemon


async def r1_held_by_a_blocker(
    gateway: Gateway, edge_factory: EdgeFactory, mode: int = 1
) -> tuple[Daemon, asyncio.Event]:
    """A daemon on two_rec_tree whose r1 runs the write "blocker" until the event is set."""
    daemon = await start_two_rec(gateway, edge_factory)
    release = RECORDER.hold(lambda t: t.ref == "blocker")
    await gateway.send(command("blocker", "r1", op="write", params={"values": {"mode": mode}}))
    await RECORDER.wait(lambda t: t.ref == "blocker")
    return daemon, release


async def test_complex_parameter_steps(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    daemon = await start(gateway, edge_factory, two_rec_tree(gateway, "120ms"))
    await online(gateway, "r1", "r2")
    RECORDER.txs.clear()
    steps = [
        write_step({"mode": 2}),
        {"delayMs": 150},
        {"commandCode": "SET_BRIGHTNESS", "parameters": {"brightness": 30}},
        {"operationType": "read", "parameters": {"points": ["mode", "brightness"]}},
        {"deviceId": "r2", **write_step({"mode": 5})},
    ]
    await gateway.send(complex_cmd("cx", steps, "r1", callback="c"))
    term = await exactly_one_terminal(gateway, "cx")
    ack = gateway.of("cx")[0]
    assert ack["status"] == "accepted" and ack["targets"] == ["r1", "r2"]
    assert term["status"] == "completed", term
    assert term["callback"] == "c"
    result_steps = term["result"]["steps"]
    assert [s["status"] for s in result_steps] == ["completed"] * 5
    assert [s["index"] for s in result_steps] == [0, 1, 2, 3, 4]
    assert [s["deviceId"] for s in result_steps] == ["r1", "r1", "r1", "r1", "r2"]
    assert [s["step"].split(":")[0] for s in result_steps] == [f"step {i}" for i in range(1, 6)]
    assert "result" not in result_steps[1]  # the delay
    assert result_steps[3]["result"] == {"values": {"mode": 2, "brightness": 30}}
    assert term["result"]["values"] == {"mode": 5, "brightness": 30}
    assert sim_values(daemon, "r1")["mode"] == 2 and sim_values(daemon, "r1")["brightness"] == 30
    assert sim_values(daemon, "r2")["mode"] == 5
    # the device saw the steps in order, the delay between steps 1 and 3
    txs = RECORDER.of("cx")
    assert [(t.device, t.kind, t.values) for t in txs] == [
        ("r1", "write", {"mode": 2}),
        ("r1", "write", {"brightness": 30}),
        ("r1", "read", {}),
        ("r2", "write", {"mode": 5}),
    ]
    assert txs[0].end is not None and txs[1].start - txs[0].end >= 0.149
    # steps are over 100 ms apart, so each one has its own progress_update
    frames = progress_of(gateway, "cx")
    assert [f["completed"] for f in frames] == [1, 2, 3, 4, 5]
    assert [f["progress"] for f in frames] == [20, 40, 60, 80, 100]
    assert all(f["total"] == 5 for f in frames)
    assert [f["deviceId"] for f in frames] == ["r1", "r1", "r1", "r1", "r2"]
    assert frames[1]["stage"] == "step 2: delay"


async def test_complex_profile_command_with_steps(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    daemon = await start_two_rec(gateway, edge_factory)
    sim_values(daemon, "r1")["status_word"] = 11
    await gateway.send(command("cm", "r1", "COMMISSION", ctype="COMPLEX"))
    term = await exactly_one_terminal(gateway, "cm")
    assert term["status"] == "completed"
    labels = [s["step"] for s in term["result"]["steps"]]
    assert labels == [
        "COMMISSION step 1: write",
        "COMMISSION step 2: delay",
        "COMMISSION step 3: read",
    ]
    assert term["result"]["values"] == {"mode": 2, "status_word": 11}
    assert [(t.kind, t.values, t.points) for t in RECORDER.of("cm")] == [
        ("write", {"mode": 2}, ["mode"]),
        ("read", {}, ["status_word"]),
    ]
    assert progress_of(gateway, "cm")[-1]["progress"] == 100

    # a named COMPLEX command used as one step of another
    sim_values(daemon, "r1")["mode"] = 0
    steps = [{"commandCode": "COMMISSION"}, write_step({"brightness": 9})]
    await gateway.send(complex_cmd("cm2", steps, "r1"))
    term = await exactly_one_terminal(gateway, "cm2")
    assert term["status"] == "completed"
    assert len(term["result"]["steps"]) == 4
    assert [t.kind for t in RECORDER.of("cm2")] == ["write", "read", "write"]
    assert sim_values(daemon, "r1")["mode"] == 2


BAD_STEP_3: list[tuple[str, dict[str, Any], str]] = [
    ("misspelt point", write_step({"brigthness": 5}), "INVALID_PARAMETERS"),
    ("value out of range", write_step({"brightness": 500}), "INVALID_PARAMETERS"),
    ("read-only point", write_step({"door_state": 1}), "ACCESS_DENIED"),
    ("unknown commandCode", {"commandCode": "SET_BRIGTHNESS"}, "UNSUPPORTED_COMMAND"),
    (
        "misspelt command parameter",
        {"commandCode": "SET_BRIGHTNESS", "parameters": {"brightnes": 5}},
        "INVALID_PARAMETERS",
    ),
    (
        "unknown step device",
        {"deviceId": "r404", "operationType": "read", "parameters": {"points": ["mode"]}},
        "UNKNOWN_DEVICE",
    ),
    ("bad operationType", {"operationType": "wirte", "parameters": {}}, "INVALID_COMMAND"),
    ("negative delay", {"delayMs": -5}, "INVALID_COMMAND"),
    ("no action", {"continueOnError": True}, "INVALID_COMMAND"),
    (
        "continueOnError not a bool",
        {**write_step({"mode": 1}), "continueOnError": "yes"},
        "INVALID_COMMAND",
    ),
    ("step not an object", "write mode 1", "INVALID_COMMAND"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("name", "step", "code"), BAD_STEP_3, ids=[t[0] for t in BAD_STEP_3])
async def test_complex_bad_step_3_rejected_before_step_1(
    gateway: Gateway, edge_factory: EdgeFactory, name: str, step: Any, code: str
) -> None:
    daemon = await start_two_rec(gateway, edge_factory)
    steps = [write_step({"mode": 1}), {"deviceId": "r2", **write_step({"mode": 2})}, step]
    await gateway.send(complex_cmd("bad", steps, "r1"))
    err = await expect_error(gateway, "bad", code)
    assert err["details"]["field"].startswith("command.parameters.steps[2]"), err
    assert RECORDER.of("bad") == []
    assert sim_values(daemon, "r1")["mode"] == 0 and sim_values(daemon, "r2")["mode"] == 0


@pytest.mark.parametrize("step", [{"commandCode": "SET_BRIGTHNESS"}, {"continueOnError": True}])
async def test_complex_step_error_field_names_the_step(
    gateway: Gateway, edge: Daemon, step: dict[str, Any]
) -> None:
    await gateway.send(complex_cmd("bad", [write_step({"mode": 1}), write_step({"mode": 2}), step]))
    err = await gateway.terminal("bad")
    assert err["type"] == "error"
    assert err["details"]["field"].startswith("command.parameters.steps[2]"), err


async def test_complex_misspelt_step_key_rejected(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    daemon = await start_two_rec(gateway, edge_factory)
    steps = [
        write_step({"mode": 1}),
        write_step({"brightness": 2}),
        {**write_step({"mode": 3}), "deviceID": "r2"},
    ]
    await gateway.send(complex_cmd("typo", steps, "r1"))
    term = await gateway.terminal("typo")
    assert term["type"] == "error", (term, [(t.device, t.values) for t in RECORDER.of("typo")])
    assert sim_values(daemon, "r1")["mode"] == 0


async def test_complex_failing_step_stops(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    daemon = await start(gateway, edge_factory, two_rec_tree(gateway, fail_points=["relay"]))
    await online(gateway, "r1", "r2")
    steps = [write_step({"mode": 1}), write_step({"relay": True}), write_step({"mode": 3})]
    await gateway.send(complex_cmd("cf", steps, "r1"))
    term = await exactly_one_terminal(gateway, "cf")
    assert term["status"] == "failed"
    assert term["error"]["code"] == "DEVICE_EXCEPTION" and term["error"]["message"]
    result_steps = term["result"]["steps"]
    assert [s["status"] for s in result_steps] == ["completed", "failed"]
    assert result_steps[1]["error"]["code"] == "DEVICE_EXCEPTION"
    assert [t.values for t in RECORDER.of("cf")] == [{"mode": 1}, {"relay": True}]
    assert sim_values(daemon, "r1")["mode"] == 1
    assert [f["completed"] for f in progress_of(gateway, "cf")] == [1]


async def test_complex_continue_on_error_is_partial(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    daemon = await start(gateway, edge_factory, two_rec_tree(gateway, fail_points=["relay"]))
    await online(gateway, "r1", "r2")
    steps = [
        write_step({"mode": 1}),
        write_step({"relay": True}, continueOnError=True),
        write_step({"mode": 3}),
    ]
    await gateway.send(complex_cmd("cp", steps, "r1"))
    term = await exactly_one_terminal(gateway, "cp")
    assert term["status"] == "partial", term
    result_steps = term["result"]["steps"]
    assert [s["status"] for s in result_steps] == ["completed", "failed", "completed"]
    assert result_steps[1]["error"]["code"] == "DEVICE_EXCEPTION"
    assert result_steps[2]["result"] == {"values": {"mode": 3}}
    assert sim_values(daemon, "r1")["mode"] == 3 and sim_values(daemon, "r1")["relay"] is False
    frames = progress_of(gateway, "cp")
    assert frames[-1]["progress"] == 100 and frames[-1]["completed"] == 3

    # a failing step without continueOnError after one with it still stops the command
    steps = [
        write_step({"relay": True}, continueOnError=True),
        write_step({"relay": True}),
        write_step({"mode": 9}),
    ]
    await gateway.send(complex_cmd("cp2", steps, "r1"))
    term = await exactly_one_terminal(gateway, "cp2")
    assert term["status"] == "failed"
    assert [s["status"] for s in term["result"]["steps"]] == ["failed", "failed"]
    assert sim_values(daemon, "r1")["mode"] == 3


async def test_complex_max_steps(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    daemon = await start(gateway, edge_factory, make_tree(gateway, commands={"max_steps": 3}))
    four = [write_step({"mode": i}) for i in range(1, 5)]
    await gateway.send(complex_cmd("m4", four))
    err = await expect_error(gateway, "m4", "INVALID_COMMAND")
    assert err["details"]["field"] == "command.parameters.steps"
    # two steps, but the named one expands to three: four in all
    await gateway.send(complex_cmd("m2", [{"commandCode": "COMMISSION"}, write_step({"mode": 8})]))
    await expect_error(gateway, "m2", "INVALID_COMMAND")
    assert sim_values(daemon, "pillar-001")["mode"] == 0
    await gateway.send(complex_cmd("m3", four[:3]))
    assert (await gateway.terminal("m3"))["status"] == "completed"
    assert sim_values(daemon, "pillar-001")["mode"] == 3


# ================================================================ priorities


async def test_priorities_then_arrival_order(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    daemon, release = await r1_held_by_a_blocker(gateway, edge_factory, mode=99)
    sent = ["low-1", "normal-1", "high-1", "urgent-1", "low-2", "normal-2", "high-2", "urgent-2"]
    for i, ref in enumerate(sent):
        prio = ref.split("-")[0]
        await gateway.send(
            command(ref, "r1", op="write", params={"values": {"mode": i + 1}}, priority=prio)
        )
    await gateway.wait(lambda f: f["type"] == "ack" and f["requestRef"] in sent, count=len(sent))
    assert RECORDER.commands()[-1].ref == "blocker"  # everything else is still queued
    release.set()
    for ref in sent:
        assert (await gateway.terminal(ref))["status"] == "completed"
    expected = [
        "urgent-1",
        "urgent-2",
        "high-1",
        "high-2",
        "normal-1",
        "normal-2",
        "low-1",
        "low-2",
    ]
    assert [t.ref for t in RECORDER.commands()] == ["blocker", *expected]
    assert terminal_order(gateway, sent) == expected
    assert sim_values(daemon, "r1")["mode"] == sent.index("low-2") + 1


@pytest.mark.parametrize(("aging", "low_overtakes"), [("200ms", True), ("60s", False)])
async def test_aging_lets_low_run_under_a_stream_of_high(
    gateway: Gateway, edge_factory: EdgeFactory, aging: str, low_overtakes: bool
) -> None:
    tree = make_tree(
        gateway,
        links={"ra": rec_link("40ms")},
        devices=[dev("r1", "ra")],
        commands={"aging": aging},
    )
    await start(gateway, edge_factory, tree)
    await online(gateway, "r1")
    n, ahead = 30, 4

    def high(i: int) -> dict[str, Any]:
        return command(f"h{i}", "r1", op="write", params={"values": {"mode": i}}, priority="high")

    for i in range(ahead):
        await gateway.send(high(i))
    await gateway.send(
        command("low", "r1", op="write", params={"values": {"relay": True}}, priority="low")
    )
    # keep `ahead` high commands waiting: a new one each time one finishes
    for i in range(ahead, n):
        await gateway.terminal(f"h{i - ahead}")
        await gateway.send(high(i))
    for ref in [*(f"h{i}" for i in range(n)), "low"]:
        assert (await gateway.terminal(ref))["status"] == "completed"
    order = [t.ref for t in RECORDER.commands()]
    finished = terminal_order(gateway, [*(f"h{i}" for i in range(n)), "low"])
    if low_overtakes:
        # it ran while the stream was still going: several high ones came after it
        assert finished.index("low") < n - 5, finished
        assert order.index("low") < n - 5, order
    else:
        # without aging it waits for the stream to end: the test's stream is steady enough
        assert order[-1] == "low" and finished[-1] == "low", order


# ================================================================ timeouts


async def test_timeout_while_queued_never_reaches_device(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    daemon, release = await r1_held_by_a_blocker(gateway, edge_factory)
    await gateway.send(
        command("late", "r1", op="write", params={"values": {"mode": 2}}, timeout=150)
    )
    term = await gateway.terminal("late")  # answered while the blocker still holds the link
    assert term["status"] == "timeout" and term["durationMs"] >= 150
    assert "result" not in term
    release.set()
    assert (await gateway.terminal("blocker"))["status"] == "completed"
    await exactly_one_terminal(gateway, "late")
    assert RECORDER.of("late") == []
    assert sim_values(daemon, "r1")["mode"] == 1
    assert daemon.engine.running == {}


async def test_complex_timeout_reports_finished_steps(
    gateway: Gateway, edge_factory: EdgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = await start_two_rec(gateway, edge_factory)
    aborted = watch_aborts(daemon, monkeypatch)
    release = RECORDER.hold(lambda t: t.ref == "ct" and t.values == {"mode": 2})
    steps = [write_step({"mode": 1}), write_step({"mode": 2}), write_step({"mode": 3})]
    await gateway.send(complex_cmd("ct", steps, "r1", timeout=200))
    await RECORDER.wait(lambda t: t.ref == "ct" and t.values == {"mode": 2})
    # the deadline passes while step 2 is on the wire; it is allowed to finish
    await asyncio.wait_for(aborted["ct"].wait(), 5)
    release.set()
    term = await exactly_one_terminal(gateway, "ct")
    assert term["status"] == "timeout", term
    assert term["durationMs"] >= 200
    assert [s["status"] for s in term["result"]["steps"]] == ["completed", "completed"]
    assert [t.values for t in RECORDER.of("ct")] == [{"mode": 1}, {"mode": 2}]
    assert sim_values(daemon, "r1")["mode"] == 2

    # expiring during a delay step: the steps before it are reported
    await gateway.send(
        complex_cmd(
            "cd",
            [write_step({"mode": 5}), {"delayMs": 5000}, write_step({"mode": 6})],
            "r1",
            timeout=200,
        )
    )
    term = await exactly_one_terminal(gateway, "cd")
    assert term["status"] == "timeout"
    assert [s["status"] for s in term["result"]["steps"]] == ["completed"]
    assert term["durationMs"] < 4000
    assert sim_values(daemon, "r1")["mode"] == 5


async def test_batch_timeout_reports_finished_targets(
    gateway: Gateway, edge_factory: EdgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = await start(gateway, edge_factory, many_tree(gateway, 5, "0ms"))
    await online(gateway, *(f"m-{i:02d}" for i in range(5)))
    aborted = watch_aborts(daemon, monkeypatch)
    release = RECORDER.hold(lambda t: t.ref == "bt" and t.device == "m-02")
    await gateway.send(batch("bt", "m-*", values={"mode": 4}, timeout=200))
    await RECORDER.wait(lambda t: t.ref == "bt" and t.device == "m-02")
    await asyncio.wait_for(aborted["bt"].wait(), 5)
    release.set()
    term = await exactly_one_terminal(gateway, "bt")
    assert term["status"] == "timeout", term
    result = term["result"]
    assert set(result["results"]) == {"m-00", "m-01", "m-02"}
    assert all(r["status"] == "completed" for r in result["results"].values())
    assert result["summary"]["total"] == 5
    assert result["summary"]["succeeded"] == 3 and result["summary"]["failed"] == 0
    assert result["summary"].get("notRun") == 2
    assert [t.device for t in RECORDER.of("bt")] == ["m-00", "m-01", "m-02"]
    assert sim_values(daemon, "m-03")["mode"] == 0 and sim_values(daemon, "m-04")["mode"] == 0


# ================================================================ CANCEL


async def test_cancel_queued_command(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    daemon, release = await r1_held_by_a_blocker(gateway, edge_factory)
    await gateway.send(
        command("k", "r1", op="write", params={"values": {"mode": 2}}, callback="cb")
    )
    await gateway.wait(lambda f: f.get("requestRef") == "k" and f["type"] == "ack")
    await gateway.send({"type": "CANCEL", "requestRef": "k"})
    term = await gateway.terminal("k")  # while the blocker still holds the link
    assert term["type"] == "command_response" and term["status"] == "cancelled"
    assert term["callback"] == "cb"
    release.set()
    assert (await gateway.terminal("blocker"))["status"] == "completed"
    await exactly_one_terminal(gateway, "k")
    assert RECORDER.of("k") == []
    assert sim_values(daemon, "r1")["mode"] == 1


async def test_cancel_running_complex_stops_before_next_step(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    daemon = await start_two_rec(gateway, edge_factory)
    release = RECORDER.hold(lambda t: t.ref == "cx" and t.values == {"mode": 2})
    steps = [write_step({"mode": 1}), write_step({"mode": 2}), write_step({"mode": 3})]
    await gateway.send(complex_cmd("cx", steps, "r1"))
    await RECORDER.wait(lambda t: t.ref == "cx" and t.values == {"mode": 2})
    await gateway.send({"type": "CANCEL", "requestRef": "cx"})
    await gateway.send({"type": "CANCEL", "requestRef": "cx"})  # twice: still one terminal
    release.set()
    term = await exactly_one_terminal(gateway, "cx")
    assert term["status"] == "cancelled"
    assert [s["status"] for s in term["result"]["steps"]] == ["completed", "completed"]
    assert [t.values for t in RECORDER.of("cx")] == [{"mode": 1}, {"mode": 2}]
    assert sim_values(daemon, "r1")["mode"] == 2
    # the link is free again
    await gateway.send(command("after", "r1", op="read", params={"points": ["mode"]}))
    assert (await gateway.terminal("after"))["result"] == {"values": {"mode": 2}}


async def test_cancel_of_unknown_or_finished_ref_sends_nothing(
    gateway: Gateway, edge: Daemon
) -> None:
    await gateway.send(command("done", op="write", params={"values": {"mode": 1}}))
    await gateway.terminal("done")
    await settle(gateway)
    before = len(gateway.frames)
    await gateway.send({"type": "CANCEL", "requestRef": "never-sent"})
    await gateway.send({"type": "cancel", "requestRef": "done"})
    await settle(gateway)
    new = gateway.frames[before:]
    assert len(new) == 1 and new[0]["requestRef"].startswith("settle-"), new
    assert sum(1 for f in gateway.of("done") if is_terminal(f)) == 1
    assert sim_values(edge, "pillar-001")["mode"] == 1


# ================================================================ QUERY


async def test_query_devices_and_device_after_failure(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    await start(gateway, edge_factory, status_tree(gateway))
    await online(gateway, "rec-ok", "rec-bad")
    await gateway.send(command("f1", "rec-bad", op="write", params={"values": {"mode": 1}}))
    term = await gateway.terminal("f1")
    assert term["status"] == "failed" and term["error"]["code"] == "DEVICE_EXCEPTION"

    await gateway.send({"type": "QUERY", "requestRef": "qa", "query": "devices"})
    term = await exactly_one_terminal(gateway, "qa")
    assert term["type"] == "command_response" and term["status"] == "completed"
    devices = {d["deviceId"]: d for d in term["result"]["devices"]}
    assert set(devices) == {
        "pillar-001",
        "pillar-002",
        "pillar-slow",
        "pillar-off",
        "rec-ok",
        "rec-bad",
    }
    assert devices["pillar-off"]["status"] == "disabled"
    assert devices["rec-ok"]["status"] == "online" and devices["rec-ok"]["lastError"] is None
    assert devices["rec-ok"]["deviceType"] == "pillar" and devices["rec-ok"]["link"] == "rec"
    assert devices["rec-bad"]["lastError"]["code"] == "DEVICE_EXCEPTION"

    await gateway.send(
        {"type": "Query", "requestRef": "qd", "query": "DEVICE", "deviceId": "rec-bad"}
    )
    term = await exactly_one_terminal(gateway, "qd")
    info = term["result"]["device"]
    assert info["deviceId"] == "rec-bad" and info["status"] == "online"
    assert info["counters"] == {"transactions": 2, "failures": 1, "timeouts": 0, "reconnects": 0}
    err = info["lastError"]
    assert err["code"] == "DEVICE_EXCEPTION" and "refused" in err["message"]
    assert err["at"].endswith("Z")
    assert isinstance(info["lastSeen"], str) and info["lastSeen"].endswith("Z")
    assert "SET_BRIGHTNESS" in info["commands"] and "mode" in info["points"]


QUERY_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown device", {"query": "device", "deviceId": "pillar-404"}, "UNKNOWN_DEVICE"),
    ("device without deviceId", {"query": "device"}, "INVALID_COMMAND"),
    ("deviceId not a string", {"query": "device", "deviceId": 7}, "INVALID_COMMAND"),
    ("unknown query", {"query": "everything"}, "INVALID_COMMAND"),
    ("no query", {}, "INVALID_COMMAND"),
    ("query not a string", {"query": ["devices"]}, "INVALID_COMMAND"),
]


@pytest.mark.parametrize(("name", "body", "code"), QUERY_ERRORS, ids=[q[0] for q in QUERY_ERRORS])
async def test_query_errors(
    gateway: Gateway, edge: Daemon, name: str, body: dict[str, Any], code: str
) -> None:
    await gateway.send({"type": "QUERY", "requestRef": "qe", **body})
    err = await exactly_one_terminal(gateway, "qe")
    assert err["type"] == "error" and err["code"] == code, err


async def test_query_without_request_ref(gateway: Gateway, edge: Daemon) -> None:
    await gateway.send({"type": "QUERY", "query": "devices"})
    err = (await gateway.wait(lambda f: f["type"] == "error"))[0]
    assert err["code"] == "INVALID_COMMAND" and "requestRef" not in err


# ================================================================ de-duplication


async def test_duplicate_while_running_gets_the_terminal_again(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    daemon = await start_two_rec(gateway, edge_factory)
    release = RECORDER.hold(lambda t: t.ref == "d")
    msg = command("d", "r1", op="write", params={"values": {"mode": 3}}, callback="x")
    await gateway.send(msg)
    await RECORDER.wait(lambda t: t.ref == "d")
    await gateway.send(msg)
    await gateway.wait(lambda f: f.get("requestRef") == "d" and f["type"] == "ack", count=2)
    assert not [f for f in gateway.of("d") if is_terminal(f)]
    release.set()
    terms = await gateway.wait(lambda f: f.get("requestRef") == "d" and is_terminal(f), count=2)
    await settle(gateway)
    assert len([f for f in gateway.of("d") if is_terminal(f)]) == 2
    # the repeat is the same stored message (same messageId), marked as a replay
    assert terms[1] == {**terms[0], "replay": True}
    assert terms[0]["status"] == "completed" and terms[0]["callback"] == "x"
    acks = [f for f in gateway.of("d") if f["type"] == "ack"]
    assert [a["status"] for a in acks] == ["accepted", "duplicate"]
    assert acks[1]["targets"] == ["r1"]
    assert len(RECORDER.of("d")) == 1
    assert sim_values(daemon, "r1")["mode"] == 3


async def test_duplicate_after_finish_is_answered_not_run(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    daemon = await start_two_rec(gateway, edge_factory)
    msg = complex_cmd("d", [write_step({"mode": 3}), write_step({"brightness": 4})], "r1")
    await gateway.send(msg)
    first = await gateway.terminal("d")
    sim_values(daemon, "r1")["mode"] = 0
    await gateway.send(msg)
    frames = await gateway.wait(lambda f: f.get("requestRef") == "d" and is_terminal(f), count=2)
    await settle(gateway)
    assert frames[1] == {**first, "replay": True}  # same message, same messageId
    acks = [f for f in gateway.of("d") if f["type"] == "ack"]
    assert [a["status"] for a in acks] == ["accepted", "duplicate"]
    assert acks[1]["targets"] == ["r1"]
    # the duplicate ack comes before the repeated terminal, and no new progress is sent
    later = gateway.of("d")[gateway.of("d").index(first) + 1 :]
    assert [f["type"] for f in later] == ["ack", "command_response"]
    assert len(RECORDER.of("d")) == 2
    assert sim_values(daemon, "r1")["mode"] == 0


async def test_duplicate_after_dedup_window_runs_again(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = make_tree(
        gateway,
        links={"ra": rec_link()},
        devices=[dev("r1", "ra")],
        commands={"dedup_window": "200ms"},
    )
    await start(gateway, edge_factory, tree)
    await online(gateway, "r1")
    msg = command("w", "r1", op="write", params={"values": {"mode": 3}})
    await gateway.send(msg)
    await gateway.terminal("w")
    await gateway.send(msg)  # inside the window
    await gateway.wait(lambda f: f.get("requestRef") == "w" and is_terminal(f), count=2)
    assert len(RECORDER.of("w")) == 1
    await asyncio.sleep(0.3)  # the thing tested is the window's length
    await gateway.send(msg)
    await gateway.wait(lambda f: f.get("requestRef") == "w" and is_terminal(f), count=3)
    await settle(gateway)
    assert acks_of(gateway, "w") == ["accepted", "duplicate", "accepted"]
    assert len(RECORDER.of("w")) == 2


async def test_dedup_max_bounds_memory(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    daemon = await start(gateway, edge_factory, make_tree(gateway, commands={"dedup_max": 5}))
    most = 0
    for i in range(20):
        await gateway.send(command(f"n{i}", op="write", params={"values": {"mode": i}}))
        await gateway.terminal(f"n{i}")
        most = max(most, len(daemon.engine.finished))
    assert most == 5
    assert list(daemon.engine.finished) == [f"n{i}" for i in range(15, 20)]
    # the newest is still remembered; the oldest was forgotten and runs again
    await gateway.send(command("n19", op="write", params={"values": {"mode": 77}}))
    await gateway.wait(lambda f: f.get("requestRef") == "n19" and is_terminal(f), count=2)
    assert sim_values(daemon, "pillar-001")["mode"] == 19
    await gateway.send(command("n0", op="write", params={"values": {"mode": 55}}))
    await gateway.wait(lambda f: f.get("requestRef") == "n0" and is_terminal(f), count=2)
    assert acks_of(gateway, "n0") == ["accepted", "accepted"]
    assert sim_values(daemon, "pillar-001")["mode"] == 55
    assert len(daemon.engine.finished) == 5


# ================================================================ limits


async def test_max_queued_in_total_is_overloaded(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    daemon = await start(
        gateway,
        edge_factory,
        make_tree(
            gateway,
            links={"ra": rec_link(), "rb": rec_link()},
            devices=[dev("r1", "ra"), dev("r2", "rb")],
            commands={"max_queued": 2},
        ),
    )
    await online(gateway, "r1", "r2")
    release = RECORDER.hold(lambda t: t.ref in ("q1", "q2"))
    # on three different links: the limit is the edge's total, not a link's
    await gateway.send(command("q1", "r1", op="write", params={"values": {"mode": 1}}))
    await gateway.send(command("q2", "r2", op="write", params={"values": {"mode": 1}}))
    await gateway.send(command("q3", "pillar-001", op="write", params={"values": {"mode": 1}}))
    err = await expect_error(gateway, "q3", "OVERLOADED")
    assert err["requestRef"] == "q3"
    assert sim_values(daemon, "pillar-001")["mode"] == 0
    release.set()
    for ref in ("q1", "q2"):
        assert (await gateway.terminal(ref))["status"] == "completed"
    await gateway.send(command("q4", "pillar-001", op="write", params={"values": {"mode": 4}}))
    assert (await gateway.terminal("q4"))["status"] == "completed"
    assert sim_values(daemon, "pillar-001")["mode"] == 4


async def test_message_over_max_message_size(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    tree = make_tree(gateway)
    tree["gateway"]["max_message_size"] = 2048
    daemon = await start(gateway, edge_factory, tree)
    small = command("fits", op="write", params={"values": {"mode": 1}})
    small["pad"] = "x" * (2000 - len(json.dumps(small)))
    assert len(json.dumps(small)) <= 2048
    await gateway.send(small)
    assert (await gateway.terminal("fits"))["status"] == "completed"
    big = command("too-big", op="write", params={"values": {"mode": 2}})
    big["pad"] = "x" * 3000
    await gateway.send(big)
    err = await expect_error(gateway, "too-big", "MALFORMED_MESSAGE")
    assert "large" in err["message"]
    assert sim_values(daemon, "pillar-001")["mode"] == 1
    # the connection and the daemon still work
    await gateway.send(command("after", op="read", params={"points": ["mode"]}))
    assert (await gateway.terminal("after"))["result"] == {"values": {"mode": 1}}
    assert gateway.connections == 1


# ================================================================ the last-resort guard


class UntimedLink(RecordingLink):
    """A recording link whose driver does not bound its own waits (``self_timed`` False)."""

    self_timed: ClassVar[bool] = False


class UntimedDriver(RecordingDriver):
    """Registry entry of the untimed recording driver."""

    name: ClassVar[str] = "recording-untimed"
    link_class: ClassVar[type[Link]] = UntimedLink


registry.register(UntimedDriver.name, UntimedDriver)


async def test_an_operation_that_never_returns_is_ended_by_the_guard_and_the_link_goes_on(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    """A driver that is not ``self_timed`` and never returns: the core's guard (4 x the
    transaction timeout + 5 s + what was left of the deadline) ends the operation, the
    command gets its one terminal, the connection is reset, and the next command runs."""
    link = {**rec_link(), "driver": UntimedDriver.name, "timeout": "100ms"}
    tree = make_tree(gateway, links={"untimed": link}, devices=[dev("u1", "untimed")])
    await start(gateway, edge_factory, tree)
    await online(gateway, "u1")
    RECORDER.hold(lambda t: t.ref == "hang")  # never released: the driver hangs
    await gateway.send(
        command("hang", "u1", op="write", params={"values": {"mode": 3}}, timeout=200)
    )
    await RECORDER.wait(lambda t: t.ref == "hang")
    term = await gateway.terminal("hang", timeout=15)
    assert term["status"] == "timeout", term
    (tx,) = RECORDER.of("hang")
    assert tx.end is not None  # the hung operation was stopped, not left running
    await gateway.send(command("next", "u1", op="write", params={"values": {"mode": 4}}))
    assert (await exactly_one_terminal(gateway, "next"))["status"] == "completed"
    await exactly_one_terminal(gateway, "hang")
