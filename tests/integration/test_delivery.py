"""Delivery guarantees end to end: a seeded storm of commands with Gateway drops, and a SIGKILL.

The storm runs a few hundred mixed COMMANDs (SIMPLE, BATCH, COMPLEX, every priority, tight
timeouts, CANCELs, re-sent frames, invalid ones) against a daemon whose devices sit on a
test-only driver that fails at random and logs every wire transaction with the ``requestRef``
it was made for. The Gateway is killed and restarted several times while results are being
produced. At the end every frame the edge queued is matched against what the Gateway received,
and every transaction against the moment its command's terminal message was queued.

The SIGKILL test runs ``python -m edge_proxy run`` with an on-disk spool, kills it while its
results cannot be delivered, restarts it, and checks each terminal arrives exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest
import yaml

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig, parse_duration
from edge_proxy.drivers import Device, Driver, Link, checkpoint, current_operation, registry
from edge_proxy.errors import DeviceException, DeviceTimeout, LinkIOError
from edge_proxy.ops.daemon import Daemon
from edge_proxy.runtime.engine import PROGRESS_INTERVAL, CommandState
from edge_proxy_drivers.simulated import SimulatedDevice
from tests.builders import base_tree, command, is_terminal, make_config
from tests.integration.support import Gateway, edge_cmd

# ---------------------------------------------------------------- a flaky, recording test driver

DRIVER = "delivery-test-flaky"


@dataclass(frozen=True)
class Transaction:
    """One wire transaction as the device saw it."""

    link: str
    device: str
    ref: str | None  # current_operation().request_ref; None for health probes
    kind: str
    start: float  # time.monotonic()
    end: float
    outcome: str  # "ok" or the exception class raised


class FlakyLink(Link):
    """A link that fails to open now and then and logs every transaction made on it."""

    def __init__(self, name: str, config: LinkConfig) -> None:
        super().__init__(name, config)
        extra = config.extra_keys
        self.rng = random.Random(f"{extra.get('seed', 0)}/{name}")
        self.fail_rate = float(extra.get("fail_rate", 0.0))
        self.open_fail_rate = float(extra.get("open_fail_rate", 0.0))
        self.latency = parse_duration(extra.get("latency", "2ms"))
        self.transactions: list[Transaction] = []
        self.overlaps = 0  # two transactions on the wire at once: must stay 0
        self.closed_use = 0  # a transaction on a link the core did not open: must stay 0
        self.busy = False
        self._open = False

    @property
    def is_open(self) -> bool:
        """Whether the last open() succeeded and close() was not called since."""
        return self._open

    async def open(self) -> None:
        """Open, or fail the way a refused connection does."""
        if self.rng.random() < self.open_fail_rate:
            raise LinkIOError(f"{self.name}: connection refused (injected)")
        self._open = True

    async def close(self) -> None:
        """Close."""
        self._open = False


class FlakyDevice(Device):
    """Points in a dict; one transaction per point, each of which may fail."""

    link: FlakyLink

    def __init__(self, link: Link, config: DeviceConfig, profile: ProfileConfig) -> None:
        super().__init__(link, config, profile)
        self.values: dict[str, Any] = dict.fromkeys(profile.points, 0)

    async def _transaction(self, kind: str) -> None:
        checkpoint()
        link = self.link
        if not link.is_open:
            link.closed_use += 1
        if link.busy:
            link.overlaps += 1
        link.busy = True
        ctx = current_operation()
        start = time.monotonic()
        outcome = "ok"
        try:
            await asyncio.sleep(link.rng.uniform(0.0, link.latency))  # time on the wire
            if link.rng.random() < link.fail_rate:
                kinds: list[type[Exception]] = [DeviceTimeout, DeviceException, LinkIOError]
                exc = link.rng.choice(kinds)(f"{self.config.id}: injected failure")
                outcome = type(exc).__name__
                raise exc
        finally:
            link.busy = False
            link.transactions.append(
                Transaction(
                    link.name,
                    self.config.id,
                    ctx.request_ref if ctx is not None else None,
                    kind,
                    start,
                    time.monotonic(),
                    outcome,
                )
            )

    async def read(self, points: Sequence[str]) -> dict[str, Any]:
        """Read point by point (a checkpoint before each)."""
        out = {}
        for name in points:
            await self._transaction(f"read {name}")
            out[name] = self.values[name]
        return out

    async def write(self, values: Mapping[str, Any]) -> None:
        """Write point by point (a checkpoint before each)."""
        for name, value in values.items():
            await self._transaction(f"write {name}")
            self.values[name] = value


class FlakyDriver(Driver):
    """Registry entry of the flaky test driver."""

    name: ClassVar[str] = DRIVER
    link_class: ClassVar[type[Link]] = FlakyLink
    device_class: ClassVar[type[Device]] = FlakyDevice
    extra_link_keys: ClassVar[frozenset[str]] = frozenset(
        {"seed", "fail_rate", "open_fail_rate", "latency"}
    )


registry.register(DRIVER, FlakyDriver)

# ---------------------------------------------------------------- the storm's device map

LINKS: dict[str, list[str]] = {
    "bus-a": ["a-1", "a-2", "a-3"],  # fast, rarely failing
    "bus-b": ["b-1", "b-2"],  # failing often: devices go offline and come back
    "bus-c": ["c-1"],  # slow: timeouts expire while a transaction is on the wire
}
DEVICES = [d for ids in LINKS.values() for d in ids]
READABLE = ["door_state", "brightness", "temperature", "mode", "status_word"]
PRIORITIES = ["low", "normal", "high", "urgent", "HIGH", None]
FAILURE_CODES = {"DEVICE_OFFLINE", "DEVICE_TIMEOUT", "DEVICE_EXCEPTION", "IO_ERROR"}
ABORT_STATUS = {"timeout": "timeout", "cancelled": "cancelled"}


def storm_tree(url: str, seed: int) -> dict[str, Any]:
    """Six pillars on three flaky links, with short backoffs."""
    tree = base_tree(url)
    reconnect = {"initial": "20ms", "max": "100ms", "jitter": 0.1}

    def link(fail: float, latency: str, open_fail: float = 0.0) -> dict[str, Any]:
        return {
            "driver": DRIVER,
            "seed": seed,
            "fail_rate": fail,
            "open_fail_rate": open_fail,
            "latency": latency,
            "health_interval": "60s",
            "reconnect": reconnect,
        }

    tree["links"] = {
        "bus-a": link(0.05, "4ms"),
        "bus-b": link(0.3, "6ms", 0.3),
        "bus-c": link(0.05, "60ms"),
    }
    tree["devices"] = [
        {"id": dev, "type": "pillar", "profile": "pillar", "link": name, "unit": unit}
        for name, ids in LINKS.items()
        for unit, dev in enumerate(ids, start=1)
    ]
    return tree


# ---------------------------------------------------------------- recording the edge's side


class Recorder:
    """Wraps the daemon's outbox and abort: when each message was queued, when each abort hit."""

    def __init__(self) -> None:
        self.emitted: list[tuple[float, dict[str, Any]]] = []
        self.first_terminal: dict[str, float] = {}
        self.aborted: dict[str, tuple[float, str]] = {}
        self.queued_while_down: list[str] = []
        self.gateway_down = False
        self._event = asyncio.Event()

    def install(self, daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
        """Install the wrappers (before the daemon starts)."""
        put = daemon.outbox.put
        abort = daemon.engine.abort

        def recording_put(msg: dict[str, Any], spool_id: int | None = None) -> None:
            now = time.monotonic()
            self.emitted.append((now, msg))
            ref = msg.get("requestRef")
            if is_terminal(msg) and isinstance(ref, str):
                self.first_terminal.setdefault(ref, now)
            if self.gateway_down:
                self.queued_while_down.append(msg["messageId"])
            self._event.set()
            put(msg, spool_id)

        def recording_abort(cs: CommandState, reason: str) -> None:
            if not cs.finished:
                self.aborted.setdefault(cs.request.request_ref, (time.monotonic(), reason))
            abort(cs, reason)

        monkeypatch.setattr(daemon.outbox, "put", recording_put)
        monkeypatch.setattr(daemon.engine, "abort", recording_abort)

    async def wait_emitted(self, count: int, timeout: float) -> None:
        """Wait until ``count`` messages were queued in all (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while len(self.emitted) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._event.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._event.wait(), remaining)


# ---------------------------------------------------------------- the Gateway's side


@dataclass
class Sent:
    """One requestRef the storm sent."""

    frame: dict[str, Any]
    ctype: str
    expect_error: str | None = None
    sends: int = 1
    cancels: int = 0


class Storm:
    """Plays a seeded schedule of Gateway actions against one daemon."""

    def __init__(self, seed: int, gateway: Gateway, daemon: Daemon, recorder: Recorder) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.gateway = gateway
        self.daemon = daemon
        self.recorder = recorder
        self.sent: dict[str, Sent] = {}
        self.valid: list[str] = []
        self.done: set[str] = set()  # refs with a terminal seen at the Gateway
        self._scanned = 0
        self.probes = 0
        self.connections = 1
        self.last_probe = ""

    # ---------------------------------------------------------------- building commands

    def _points(self) -> list[str]:
        return self.rng.sample(READABLE, self.rng.randint(1, 3))

    def _decorate(self, msg: dict[str, Any], n: int) -> dict[str, Any]:
        rng = self.rng
        priority = rng.choice(PRIORITIES)
        if priority is not None:
            msg["priority"] = priority
        roll = rng.random()
        if roll < 0.3:
            msg["timeout"] = rng.randint(5, 120)  # tight: expires queued or mid-run
        elif roll < 0.6:
            msg["timeout"] = rng.randint(1500, 4000)
        if rng.random() < 0.2:
            msg["callback"] = {"n": n, "tag": ["x", None]}
        return msg

    def _valid(self, ref: str, n: int) -> tuple[dict[str, Any], str]:
        rng = self.rng
        dev = rng.choice(DEVICES)
        kind = rng.choices(["read", "write", "profile", "batch", "complex"], [3, 3, 3, 2, 3])[0]
        if kind == "read":
            msg = command(ref, dev, op="read", params={"points": self._points()})
        elif kind == "write":
            values: dict[str, Any] = {"brightness": rng.randint(0, 100)}
            if rng.random() < 0.5:
                values["mode"] = rng.randint(0, 1000)
            msg = command(ref, dev, op="write", params={"values": values})
        elif kind == "profile":
            code = rng.choice(["SET_BRIGHTNESS", "STATUS", "OPEN_DOOR", "COMMISSION"])
            params = {"brightness": rng.randint(0, 100)} if code == "SET_BRIGHTNESS" else {}
            msg = command(ref, dev, code, op=rng.choice([None, "execute"]), params=params)
        elif kind == "batch":
            targets: Any = rng.choice(
                ["a-*", "b-*", "*", ["a-1", "c-1"], "a-2,b-1", "?-1", ["c-*", "b-2"]]
            )
            op = rng.choice(["read", "write", "STATUS", "SET_BRIGHTNESS"])
            batch: dict[str, Any] = {"targets": targets, "batch": True}
            if op == "read":
                msg = command(ref, dev, op="read", params={**batch, "points": self._points()})
            elif op == "write":
                batch["values"] = {"mode": rng.randint(0, 1000)}
                msg = command(ref, dev, op="write", params=batch)
            elif op == "STATUS":
                msg = command(ref, dev, "STATUS", op="execute", params=batch)
            else:
                batch["brightness"] = rng.randint(0, 100)
                msg = command(ref, dev, "SET_BRIGHTNESS", params=batch)
            msg["command"]["commandType"] = "BATCH"
            msg["command"]["deviceType"] = "pillar"
        else:
            steps: list[dict[str, Any]] = []
            for _ in range(rng.randint(2, 5)):
                roll = rng.random()
                step: dict[str, Any]
                if roll < 0.2:
                    steps.append({"delayMs": rng.randint(5, 80)})
                    continue
                if roll < 0.5:
                    step = {"operationType": "read", "parameters": {"points": self._points()}}
                elif roll < 0.8:
                    step = {
                        "operationType": "write",
                        "parameters": {"values": {"brightness": rng.randint(0, 100)}},
                    }
                else:
                    step = {"commandCode": "STATUS"}
                if rng.random() < 0.3:
                    step["deviceId"] = rng.choice(DEVICES)
                if rng.random() < 0.4:
                    step["continueOnError"] = True
                steps.append(step)
            msg = command(ref, dev, "SEQUENCE", params={"steps": steps}, ctype="COMPLEX")
        return self._decorate(msg, n), msg["command"]["commandType"]

    def _invalid(self, ref: str) -> tuple[dict[str, Any], str]:
        rng = self.rng
        dev = rng.choice(DEVICES)
        good = {"operationType": "read", "parameters": {"points": ["mode"]}}
        bad = {"operationType": "read", "parameters": {"points": ["nope"]}}
        steps = [good, {"delayMs": 5}, bad]
        choices: list[tuple[dict[str, Any], str]] = [
            (command(ref, "zz-9", op="read", params={"points": ["mode"]}), "UNKNOWN_DEVICE"),
            (command(ref, dev, "SET_BRIGHTNESS", params={"brightness": 140}), "INVALID_PARAMETERS"),
            (command(ref, dev, op="write", params={"values": {"door_state": 1}}), "ACCESS_DENIED"),
            (
                # step 3 is wrong: steps 1 and 2 must never reach the device
                command(ref, dev, "SEQUENCE", params={"steps": steps}, ctype="COMPLEX"),
                "INVALID_PARAMETERS",
            ),
            (
                command(ref, dev, op="read", params={"targets": "zz-*"}, ctype="BATCH"),
                "UNKNOWN_DEVICE",
            ),
            (
                command(
                    ref,
                    dev,
                    op="write",
                    params={"targets": "a-*", "values": {"brightness": 101}},
                    ctype="BATCH",
                ),
                "INVALID_PARAMETERS",
            ),
            (command(ref, dev, "SELF_DESTRUCT"), "UNSUPPORTED_COMMAND"),
            (command(ref, dev, op="read", edge="edge-999"), "WRONG_EDGE"),
            ({**command(ref, dev, op="read"), "priority": "asap"}, "INVALID_COMMAND"),
            ({**command(ref, dev, op="read"), "timeout": -5}, "INVALID_COMMAND"),
        ]
        return rng.choice(choices)

    # ---------------------------------------------------------------- Gateway actions

    def _scan(self) -> None:
        frames = self.gateway.frames
        for frame in frames[self._scanned :]:
            ref = frame.get("requestRef")
            if isinstance(ref, str) and is_terminal(frame):
                self.done.add(ref)
        self._scanned = len(frames)

    def in_flight(self) -> list[str]:
        """Valid refs with no terminal seen at the Gateway yet."""
        self._scan()
        return [r for r in self.valid if r not in self.done]

    async def send_new(self, n: int) -> None:
        ref = f"s{self.seed}-{n}"
        if self.rng.random() < 0.15:
            frame, code = self._invalid(ref)
            self.sent[ref] = Sent(frame, frame["command"].get("commandType", "SIMPLE"), code)
        else:
            frame, ctype = self._valid(ref, n)
            self.sent[ref] = Sent(frame, ctype)
            self.valid.append(ref)
        await self.gateway.send(frame)

    async def pile_up(self, n: int) -> int:
        """A slow read on the slow link, then a write whose timeout expires behind it."""
        first = command(
            f"s{self.seed}-{n}", "c-1", op="read", params={"points": READABLE}, priority="urgent"
        )
        second = command(
            f"s{self.seed}-{n + 1}",
            "c-1",
            op="write",
            params={"values": {"mode": n}},
            priority="low",
            timeout=self.rng.randint(5, 30),
        )
        for frame in (first, second):
            self.sent[frame["requestRef"]] = Sent(frame, "SIMPLE")
            self.valid.append(frame["requestRef"])
            await self.gateway.send(frame)
        return n + 2

    async def resend(self) -> None:
        """The same COMMAND frame again, running or finished."""
        if not self.valid:
            return
        ref = self.rng.choice(self.valid[-30:])
        self.sent[ref].sends += 1
        await self.gateway.send(self.sent[ref].frame)

    async def cancel(self) -> None:
        """CANCEL a command that is probably still running (or a finished one: a no-op)."""
        pending = self.in_flight() or self.valid
        if not pending:
            return
        ref = self.rng.choice(pending)
        self.sent[ref].cancels += 1
        await self.gateway.send({"type": "CANCEL", "requestRef": ref, "version": "1.0"})

    async def settle(self) -> None:
        """Wait for one running command to end, so queues drain now and then."""
        pending = self.in_flight()
        if pending:
            await self.gateway.terminal(self.rng.choice(pending), timeout=15)

    async def barrier(self) -> None:
        """A QUERY answered means every frame sent before it was handled and answered."""
        self.probes += 1
        ref = f"probe-{self.seed}-{self.probes}"
        await self.gateway.send({"type": "QUERY", "requestRef": ref, "query": "devices"})
        try:
            await self.gateway.terminal(ref, timeout=15)
        except asyncio.TimeoutError:
            raise AssertionError(f"no answer to the QUERY {ref} in 15 s") from None
        self.last_probe = ref

    async def drop(self) -> None:
        """Kill the Gateway while results are being produced; bring it back on the same port."""
        await self.barrier()  # no COMMAND is left on the wire towards the edge
        before = len(self.recorder.emitted)
        self.recorder.gateway_down = True
        await self.gateway.stop()
        if self.daemon.engine.in_flight():
            # let some results pile up in the outbox
            await self.recorder.wait_emitted(before + self.rng.randint(1, 8), timeout=2.0)
        await self.gateway.start()
        self.connections += 1
        await self.gateway.wait(
            lambda f: f["type"] == "REGISTER", timeout=10, count=self.connections
        )
        self.recorder.gateway_down = False

    async def run(self, commands: int, drops: int) -> None:
        drop_at = sorted(self.rng.sample(range(10, commands), drops))
        n = 0
        while n < commands:
            if drop_at and n >= drop_at[0]:
                drop_at.pop(0)
                await self.drop()
                continue
            roll = self.rng.random()
            if roll < 0.59:
                await self.send_new(n)
                n += 1
            elif roll < 0.62:
                n = await self.pile_up(n)
            elif roll < 0.74:
                await self.resend()
            elif roll < 0.86:
                await self.cancel()
            else:
                await self.settle()

    async def finish(self) -> None:
        """Wait until every accepted ref has one terminal per send, then a last barrier."""
        await self.barrier()
        gw = self.gateway

        def all_answered() -> bool:
            counts: Counter[str] = Counter(
                f["requestRef"] for f in gw.frames if is_terminal(f) and "requestRef" in f
            )
            return all(counts[r] >= s.sends for r, s in self.sent.items() if not s.expect_error)

        try:
            async with gw._cond:
                await asyncio.wait_for(gw._cond.wait_for(all_answered), 15)
        except asyncio.TimeoutError:
            counts = Counter(f.get("requestRef") for f in gw.frames if is_terminal(f))
            missing = {
                r: (counts[r], s.sends)
                for r, s in self.sent.items()
                if not s.expect_error and counts[r] < s.sends
            }
            raise AssertionError(f"terminals (got, sends) missing after 15 s: {missing}") from None
        await self.barrier()


# ---------------------------------------------------------------- the checks


def check_storm(storm: Storm, recorder: Recorder, daemon: Daemon, gateway: Gateway) -> Counter[str]:
    """Every delivery invariant; returns the terminal statuses seen (for coverage)."""
    by_ref: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen: set[str] = set()
    for frame in gateway.frames:
        # a resend after a reconnect is the same message: the Gateway de-duplicates by
        # messageId. Replays share the original's messageId by design and are kept.
        if not frame.get("replay"):
            if frame["messageId"] in seen:
                continue
            seen.add(frame["messageId"])
        ref = frame.get("requestRef")
        if isinstance(ref, str):
            by_ref[ref].append(frame)
    links = [rt.link for rt in daemon.links.values()]
    assert all(isinstance(link, FlakyLink) for link in links)
    txs: dict[str | None, list[Transaction]] = defaultdict(list)
    for link in links:
        assert isinstance(link, FlakyLink)
        assert link.overlaps == 0, f"{link.name}: two transactions on the wire at once"
        assert link.closed_use == 0, f"{link.name}: a transaction on a link that was not open"
        for tx in link.transactions:
            txs[tx.ref].append(tx)
    unknown = {r for r in txs if r is not None} - set(storm.valid)
    assert not unknown, f"transactions for refs that were never accepted: {sorted(unknown)}"

    progress_times: dict[str, list[float]] = defaultdict(list)
    for at, msg in recorder.emitted:
        if msg["type"] == "progress_update":
            progress_times[msg["requestRef"]].append(at)

    statuses: Counter[str] = Counter()
    for ref, sent in storm.sent.items():
        frames = by_ref.get(ref, [])
        where = f"{ref} {sent.frame}\n-> {frames}"
        if sent.expect_error:
            assert len(frames) == 1, where
            assert frames[0]["type"] == "error", where
            assert frames[0]["code"] == sent.expect_error, where
            assert frames[0]["message"], where
            assert ref not in txs, f"a rejected command reached a device: {where}"
            statuses["error"] += 1
            continue

        acks = [f for f in frames if f["type"] == "ack"]
        terms = [f for f in frames if is_terminal(f)]
        assert frames and frames[0]["type"] == "ack", where
        assert [a["status"] for a in acks] == ["accepted"] + ["duplicate"] * (sent.sends - 1), where
        assert all(a["targets"] == acks[0]["targets"] for a in acks), where
        # exactly one terminal message; every repeat is that message itself (same
        # messageId), marked as a replay: at least one per duplicate send (a replay may be
        # resent after a reconnect, like any message)
        originals = [t for t in terms if not t.get("replay")]
        assert len(originals) == 1, where
        assert terms[0] is originals[0], where
        assert len(terms) - 1 >= sent.sends - 1, where
        assert all(t == {**terms[0], "replay": True} for t in terms[1:]), where
        term = terms[0]
        assert term["type"] == "command_response", where
        status = term["status"]
        statuses[status] += 1
        first = next(i for i, f in enumerate(frames) if is_terminal(f))
        # after the terminal: only duplicate acks and copies of the terminal
        for frame in frames[first + 1 :]:
            assert frame["type"] in ("ack", "command_response"), where
            assert frame["type"] == "command_response" or frame["status"] == "duplicate", where
        progress = [f["progress"] for f in frames if f["type"] == "progress_update"]
        assert progress == sorted(progress), f"progress went down: {where}"
        assert all(isinstance(p, int) and 0 <= p <= 100 for p in progress), where
        # at most one progress_update per 100 ms; only the last one, flushed right before
        # the terminal message ("the last one always sent"), may follow sooner
        times = progress_times.get(ref, [])
        gaps = [b - a for a, b in itertools.pairwise(times)][:-1]
        assert all(g >= PROGRESS_INTERVAL - 0.002 for g in gaps), f"not throttled: {gaps} {where}"
        if status == "completed" and sent.ctype in ("BATCH", "COMPLEX"):
            assert progress and progress[-1] == 100, where

        # the status follows what stopped it: the first of CANCEL and timeout, or nothing
        aborted = recorder.aborted.get(ref)
        if aborted is not None:
            assert status == ABORT_STATUS[aborted[1]], where
            assert aborted[1] != "cancelled" or sent.cancels, where
        else:
            assert status in ("completed", "partial", "failed"), where
        if status == "failed":
            assert term["error"]["code"] in FAILURE_CODES, where
            assert term["error"]["message"], where
        if status == "timeout":
            assert term["durationMs"] >= sent.frame.get("timeout", 5000) - 1, where
        if "callback" in sent.frame:
            assert term["callback"] == sent.frame["callback"], where
        else:
            assert "callback" not in term, where

        # nothing reached a device after the command's terminal message was queued,
        # nothing started after a CANCEL or timeout took effect, and only on its targets
        queued_at = recorder.first_terminal[ref]
        for tx in txs.get(ref, []):
            assert tx.end <= queued_at, f"{tx} ended after the terminal ({queued_at}): {where}"
            assert tx.device in acks[0]["targets"], f"{tx} is not a target: {where}"
            if aborted is not None:
                assert tx.start <= aborted[0], f"{tx} started after the abort {aborted}: {where}"
                if aborted[0] < tx.end:
                    statuses[f"{status} mid-transaction"] += 1
        if status == "timeout" and ref not in txs:
            statuses["timeout before any transaction"] += 1

    # every message the edge queued reached the Gateway, in the order it was queued; a
    # message resent after a reconnect keeps its messageId, so a Gateway that de-duplicates
    # by messageId (protocol.md, guarantee 2) sees each exactly once, in order
    probe_at = max(
        i for i, (_, m) in enumerate(recorder.emitted) if m.get("requestRef") == storm.last_probe
    )
    queued = list(dict.fromkeys(m["messageId"] for _, m in recorder.emitted[: probe_at + 1]))
    received = list(
        dict.fromkeys(
            f["messageId"] for f in gateway.frames if f["type"] not in ("REGISTER", "HEARTBEAT")
        )
    )
    assert received[: len(queued)] == queued
    assert not daemon.outbox.dropped
    assert set(recorder.queued_while_down) <= set(received)
    # each connection starts with REGISTER
    starts = [gateway.frame_conn.index(c) for c in sorted(set(gateway.frame_conn))]
    assert [gateway.frames[i]["type"] for i in starts] == ["REGISTER"] * storm.connections
    # no leaked bookkeeping
    assert daemon.engine.in_flight() == 0
    assert all(rt.reserved == 0 and rt.pending() == 0 for rt in daemon.links.values())
    return statuses


@pytest.mark.parametrize(("seed", "spooled"), [(1, False), (2, False), (3, True)])
async def test_storm_keeps_every_delivery_guarantee(
    seed: int, spooled: bool, gateway: Gateway, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tree = storm_tree(gateway.url, seed)
    spool = tmp_path / "spool.sqlite3"
    if spooled:
        tree["gateway"]["outbox"] = {"spool": str(spool)}
    daemon = Daemon(make_config(tree))
    recorder = Recorder()
    recorder.install(daemon, monkeypatch)
    await daemon.start()
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER")
        storm = Storm(seed, gateway, daemon, recorder)
        await storm.run(commands=130, drops=3)
        await storm.finish()
        statuses = check_storm(storm, recorder, daemon, gateway)
        if spooled:  # every terminal was confirmed: nothing waits in the spool any more
            await wait_for_spool(spool, lambda terms, accepted: not terms and not accepted)
    finally:
        await daemon.stop(grace=1.0)
    # the schedule did exercise what it is meant to
    assert statuses["completed"] and statuses["timeout"] and statuses["error"], statuses
    assert statuses["failed"] + statuses["partial"], statuses
    assert statuses["timeout mid-transaction"] + statuses["cancelled mid-transaction"], statuses
    assert statuses["timeout before any transaction"], statuses
    assert any(s.sends > 1 for s in storm.sent.values())
    assert recorder.queued_while_down, "no message was queued while the Gateway was down"
    assert storm.connections == 4
    print(f"seed {seed}: {dict(statuses)}; {len(recorder.queued_while_down)} queued while down")


# ---------------------------------------------------------------- what the storm found, one by one


async def test_failed_batch_has_an_error(gateway: Gateway) -> None:
    tree = base_tree(gateway.url)
    for dev_id in ("pillar-901", "pillar-902"):
        tree["devices"].append(
            {
                "id": dev_id,
                "type": "pillar",
                "profile": "pillar",
                "link": {"driver": "simulated"},
                "enabled": False,
            }
        )
    daemon = Daemon(make_config(tree))
    await daemon.start()
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER")
        params = {"targets": ["pillar-901", "pillar-902"], "points": ["mode"]}
        await gateway.send(command("fb", op="read", params=params, ctype="BATCH"))
        term = await gateway.terminal("fb")
    finally:
        await daemon.stop(grace=1.0)
    assert term["status"] == "failed"
    assert term["result"]["summary"] == {"total": 2, "succeeded": 0, "failed": 2}
    # protocol.md: a failed command_response carries error = {code, message, details}
    assert term["error"]["code"] == "DEVICE_OFFLINE"
    assert term["error"]["message"]


async def test_delivered_ref_is_still_a_duplicate_after_a_restart(
    gateway: Gateway, tmp_path: Path
) -> None:
    tree = base_tree(gateway.url)
    tree["gateway"]["outbox"] = {"spool": str(tmp_path / "spool.sqlite3")}
    config = make_config(tree)
    msg = command("once", op="write", params={"values": {"mode": 7}})
    first = Daemon(config)
    await first.start()
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER")
        await gateway.send(msg)
        delivered = await gateway.terminal("once")
    finally:
        await first.stop(grace=1.0)
    second = Daemon(config)
    await second.start()
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER", count=2)
        await gateway.send(msg)  # seconds later, well inside dedup_window (10 min)
        await gateway.send({"type": "QUERY", "requestRef": "probe", "query": "devices"})
        await gateway.terminal("probe")
        adapter = second.devices["pillar-001"].adapter
        assert isinstance(adapter, SimulatedDevice)
        mode = adapter.values["mode"]
    finally:
        await second.stop(grace=1.0)
    frames = gateway.of("once")
    assert delivered["status"] == "completed"
    assert [f["status"] for f in frames if f["type"] == "ack"] == ["accepted", "duplicate"]
    terms = [f for f in frames if is_terminal(f)]
    assert {t["messageId"] for t in terms} == {delivered["messageId"]}
    assert mode == 0  # the restarted edge did not write the device again


# ---------------------------------------------------------------- SIGKILL with an on-disk spool


def read_spool(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(unsent terminals as (ref, body) in spool order, accepted-unfinished refs), read-only."""
    import json

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)) as db:
        terms = [
            (str(ref), json.loads(body))
            for ref, body in db.execute(
                "SELECT ref, body FROM terminals WHERE delivered IS NULL ORDER BY id"
            )
        ]
        accepted = [str(r) for (r,) in db.execute("SELECT ref FROM accepted ORDER BY rowid")]
    return terms, accepted


async def wait_for_spool(
    path: Path,
    pred: Callable[[list[tuple[str, dict[str, Any]]], list[str]], bool],
    timeout: float = 10.0,
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Poll the spool file until ``pred(terminals, accepted)`` holds."""
    deadline = time.monotonic() + timeout
    last: tuple[list[tuple[str, dict[str, Any]]], list[str]] = ([], [])
    while True:
        with contextlib.suppress(sqlite3.Error):
            last = read_spool(path)
            if pred(*last):
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"spool never reached the expected state; last: {last}")
        await asyncio.sleep(0.02)  # polling a file another process writes


def start_edge(cfg: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        edge_cmd("run", "--config", str(cfg)),
        stdout=log,
        stderr=log,
        env={**os.environ},
    )


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    return await asyncio.get_running_loop().run_in_executor(None, proc.wait, timeout)


async def test_sigkill_with_spool_delivers_each_terminal_once(
    gateway: Gateway, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.sqlite3"
    tree = base_tree(gateway.url)
    tree["links"]["slow"]["latency"] = "400ms"
    tree["gateway"]["outbox"] = {"spool": str(spool)}
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    refs = [f"k{i}" for i in range(6)]
    callbacks: dict[str, Any] = {"k3": {"tag": ["x", 1]}, "k4": "cb-k4"}
    frames = {
        ref: command(
            ref,
            "pillar-slow",
            op="write",
            params={"values": {"mode": i + 1}},
            timeout=30000,
            **({"callback": callbacks[ref]} if ref in callbacks else {}),
        )
        for i, ref in enumerate(refs)
    }
    log_path = tmp_path / "edge.log"
    procs: list[subprocess.Popen[bytes]] = []
    with log_path.open("wb") as log:
        try:
            first = start_edge(cfg, log)
            procs.append(first)
            await gateway.wait(lambda f: f["type"] == "REGISTER", timeout=20)
            for ref in refs:  # the slow link runs them one after another, 400 ms each
                await gateway.send(frames[ref])
            await gateway.wait(lambda f: f["type"] == "ack", count=len(refs))
            await gateway.terminal("k0")
            await gateway.stop()  # the results from now on cannot be delivered
            await wait_for_spool(spool, lambda t, _a: len(t) >= 2)
            first.send_signal(signal.SIGKILL)
            assert await wait_exit(first) == -signal.SIGKILL

            seen_before = {
                f["requestRef"]: f for f in gateway.frames if f["type"] == "command_response"
            }
            delivered_before = list(seen_before)
            spooled, unfinished = read_spool(spool)
            spooled_refs = [r for r, _ in spooled]
            assert delivered_before and spooled_refs and unfinished, (spooled, unfinished)
            # every command is delivered, waiting in the spool, or known unfinished; a terminal
            # the Gateway got before its pong came back is both delivered and still spooled
            # (sent means received: the edge cannot know), and then it is that same message
            assert sorted({*delivered_before, *spooled_refs, *unfinished}) == refs
            assert not set(unfinished) & (set(delivered_before) | set(spooled_refs))
            for ref, body in spooled:
                if ref in seen_before:
                    assert body == seen_before[ref], ref
            assert all(body["status"] == "completed" for _, body in spooled)

            second = start_edge(cfg, log)
            procs.append(second)
            # the restarted edge fails what was unfinished, in the spool, before it can send
            recovered, _ = await wait_for_spool(
                spool, lambda t, a: not a and len(t) == len(spooled) + len(unfinished)
            )
            assert [r for r, _ in recovered] == spooled_refs + unfinished
            await gateway.start()
            await gateway.wait(lambda f: f["type"] == "REGISTER", timeout=20, count=2)
            for ref in refs:
                await gateway.terminal(ref, timeout=10)
            await gateway.send({"type": "QUERY", "requestRef": "probe", "query": "devices"})
            await gateway.terminal("probe")

            terminals = [f for f in gateway.frames if f["type"] == "command_response"]
            terminals = [t for t in terminals if t["requestRef"] != "probe"]
            # each once, in order, for a Gateway that de-duplicates by messageId
            by_id: dict[str, dict[str, Any]] = {}
            for term in terminals:
                by_id.setdefault(term["messageId"], term)  # first arrival of each message
            assert len({t["requestRef"] for t in by_id.values()}) == len(by_id)
            terminals = list(by_id.values())
            assert [t["requestRef"] for t in terminals] == refs
            conn_of = {id(f): c for f, c in zip(gateway.frames, gateway.frame_conn, strict=True)}
            second_conn = [
                f for f, c in zip(gateway.frames, gateway.frame_conn, strict=True) if c == 2
            ]
            assert second_conn[0]["type"] == "REGISTER"
            first_prefix = gateway.frames[0]["messageId"].rsplit("-", 1)[0]
            second_prefix = second_conn[0]["messageId"].rsplit("-", 1)[0]
            assert first_prefix != second_prefix
            for term in terminals:
                ref = term["requestRef"]
                if ref in delivered_before:
                    assert conn_of[id(term)] == 1
                    assert term["status"] == "completed"
                elif ref in spooled_refs:
                    # the very message the first process produced, from the spool
                    assert conn_of[id(term)] == 2
                    assert term == dict(spooled)[ref]
                    assert term["messageId"].startswith(first_prefix + "-")
                    assert term["status"] == "completed"
                else:
                    assert conn_of[id(term)] == 2
                    assert term["status"] == "failed", term
                    assert term["error"]["code"] == "INTERNAL_ERROR"
                    assert term["error"]["message"] == "edge restarted"
                    assert term["messageId"].startswith(second_prefix + "-")
                if ref in callbacks:
                    assert term["callback"] == callbacks[ref]
                else:
                    assert "callback" not in term

            # a spooled ref re-sent after the restart is answered from the spool, not run
            again = [spooled_refs[0], unfinished[0]]
            for ref in again:
                await gateway.send(frames[ref])
            await gateway.send({"type": "QUERY", "requestRef": "probe-2", "query": "devices"})
            await gateway.terminal("probe-2")
            for ref in again:
                mine = gateway.of(ref)
                assert [f["status"] for f in mine if f["type"] == "ack"] == [
                    "accepted",
                    "duplicate",
                ]
                copies = [f for f in mine if f["type"] == "command_response"]
                originals = list(
                    {f["messageId"]: f for f in copies if not f.get("replay")}.values()
                )
                replays = [f for f in copies if f.get("replay")]
                assert len(originals) == 1 and replays == [{**originals[0], "replay": True}]
            # sent terminals leave the spool
            await wait_for_spool(spool, lambda t, a: not t and not a)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        await wait_exit(proc, 10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            print(log_path.read_text(errors="replace"))  # shown when the test fails
    assert b"Traceback" not in log_path.read_bytes()
