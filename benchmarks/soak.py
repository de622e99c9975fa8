"""Soak: delivery guarantees under link faults, over 100,000 SIMPLE commands.

Run: ``.venv/bin/python benchmarks/soak.py [--commands 100000] [--window 100] [--smoke]``

Three parts, all on loopback:

* the edge daemon as its own process (``python -m edge_proxy run --config FILE --log-level
  debug``, its log in a file of the run's temp dir) with simulated devices (driver
  ``simulated``, no hardware) on several links;
* a :class:`~tests.integration.faults.parts.FaultProxy` between the edge and the Gateway; it
  drops every connection every ``--drop-every`` seconds (10) and black-holes the link for
  ``--blackhole-for`` seconds (3) every ``--blackhole-every`` seconds (60): bytes in both
  directions are read and thrown away, TCP stays open, and at the end every connection is closed
  so that the edge reconnects. The edge's ``ping_interval``/``ping_timeout`` are short (1 s /
  1.5 s) so that it sees a black hole as a dead link before the proxy closes it;
* this driver, the Gateway (a websockets server): it keeps ``--window`` SIMPLE reads and writes
  outstanding. A command with no ``ack`` yet when its connection went away (or after
  ``RETRY_AFTER`` seconds) is sent again with the *same* requestRef as soon as the edge is back
  (its REGISTER), as a real Gateway retries; the edge must de-duplicate the ones it had.
  Commands that have their ack are never sent again, so a terminal the edge loses cannot be
  hidden by a replay.

What the Gateway saw is checked against the protocol's delivery guarantees: every acked
requestRef has a terminal (none lost), and no requestRef has terminals of two different
``messageId`` s (none duplicated: a resend or a replay of the same message keeps its
messageId, which is guarantee 2 working). Edge RSS comes from ``/proc/<pid>/status``.

It stops by itself: when every command has its terminal, or at ``--time-limit`` (15 minutes).
``--smoke`` runs 2,000 commands with one drop and one short black hole, both placed by
progress rather than by the clock (for CI). A requestRef that breaks a guarantee is written to
``evidence.txt`` beside the edge's log (the run's temp dir is then kept): its frames as the
Gateway saw them and the edge's log lines about it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(common.HERE.parent))  # the repository root: tests is a package

from tests.integration.faults.parts import FaultProxy

EDGE_ID = "soak"
LINKS = 8
DEVICES_PER_LINK = 4
RETRY_AFTER = 10.0  # seconds without an ack on a live connection before a command is resent
SETTLE = 3.0  # seconds to wait after the last terminal, for anything late (a duplicate)
RSS_TARGET_MB = 40.0

PROFILE: dict[str, Any] = {
    "points": {
        "brightness": {"table": "holding", "address": 101, "access": "rw", "max": 100},
        "mode": {"table": "holding", "address": 104, "access": "rw"},
    },
    "commands": {},
}


def edge_tree(url: str, dedup_window: str | None = None) -> dict[str, Any]:
    """The edge's config: simulated devices, short pings so that a black hole is noticed."""
    return {
        "edge": {"id": EDGE_ID, "name": "soak edge"},
        "gateway": {
            "url": url,
            "heartbeat_interval": "5s",
            "ping_interval": "1s",
            "ping_timeout": "1.5s",
            "open_timeout": "2s",
            "reconnect": {"initial": "100ms", "max": "1s", "jitter": 0.2},
        },
        "links": {
            f"sim-{k}": {"driver": "simulated", "latency": "1ms", "health_interval": "30s"}
            for k in range(LINKS)
        },
        "profiles": {"soak": PROFILE},
        "devices": [
            {"id": f"dev-{k}-{u}", "type": "pillar", "profile": "soak", "link": f"sim-{k}"}
            for k in range(LINKS)
            for u in range(DEVICES_PER_LINK)
        ],
        "commands": {
            "shutdown_grace": "2s",
            **({"dedup_window": dedup_window} if dedup_window else {}),
        },
        "control": {"enabled": False},
    }


def command(i: int) -> tuple[str, str]:
    """The i-th COMMAND: (requestRef, frame text); reads and writes, round the devices."""
    ref = f"soak-{i:06d}"
    dev = f"dev-{i % LINKS}-{(i // LINKS) % DEVICES_PER_LINK}"
    if i % 2:
        params: dict[str, Any] = {"values": {"brightness": i % 101, "mode": i % 7}}
        op = "write"
    else:
        params = {"points": ["brightness", "mode"]}
        op = "read"
    frame = {
        "type": "COMMAND",
        "requestRef": ref,
        "targetClientId": f"{EDGE_ID}:{dev}",
        "command": {"commandType": "SIMPLE", "operationType": op, "parameters": params},
        "timeout": 10000,
        "version": "1.0",
    }
    return ref, json.dumps(frame)


def stamp(at: float) -> str:
    """A wall-clock time as the edge's log writes it (UTC, milliseconds)."""
    ms = int(at * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{ms:03d}Z"


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process ``pid`` in KiB, from /proc/<pid>/status."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


# ---------------------------------------------------------------- what the Gateway saw


@dataclass
class Ref:
    """One requestRef: when and on which connection it was sent, and what came back."""

    text: str
    sends: list[tuple[float, int]] = field(default_factory=list)  # (wall time, connection)
    frames: list[tuple[float, int, str]] = field(default_factory=list)  # (wall, conn, raw)
    acked: bool = False
    accepted: bool = False  # an ack with status "accepted" (not only "duplicate")
    terminal: bool = False
    original: bool = False  # a terminal without "replay": true
    ids: set[str] = field(default_factory=set)  # messageIds of non-replay terminals
    replay_ids: set[str] = field(default_factory=set)  # messageIds of replays
    status: str = ""
    terminal_frames: int = 0
    replay_frames: int = 0


class SoakGateway:
    """The Gateway: sends commands in a window, retries un-acked ones, records every frame."""

    def __init__(self, total: int, window: int) -> None:
        self.total = total
        self.window = window
        self.refs: dict[str, Ref] = {}
        self.unacked: dict[str, Ref] = {}  # sent, neither ack nor terminal yet
        self.next = 0
        self.outstanding = 0  # sent, no terminal yet
        self.conn_no = 0  # the edge's connections (REGISTERs) so far
        self.ws: ServerConnection | None = None
        self.registered_at = 0.0
        self.frames_sent = 0
        self.retries = 0
        self.duplicate_acks = 0  # the edge saw a retried requestRef again
        self.kinds: Counter[str] = Counter()
        self.unknown_refs: Counter[str] = Counter()
        self.messages_by_id: dict[str, str] = {}  # terminal messageId -> requestRef
        self.shared_ids: set[str] = set()  # one messageId on terminals of two requestRefs
        self.changed = asyncio.Event()
        self.reconnected_at: list[float] = []  # wall times of the REGISTERs
        self._milestones: list[tuple[int, asyncio.Event]] = []

    async def reach(self, count: int) -> None:
        """Wait until ``count`` commands have been sent."""
        event = asyncio.Event()
        self._milestones.append((count, event))
        self._check_milestones()
        await event.wait()

    def _check_milestones(self) -> None:
        for count, event in self._milestones:
            if self.next >= count:
                event.set()

    async def handler(self, ws: ServerConnection) -> None:
        """One edge connection: its first frame must be REGISTER."""
        number = 0
        try:
            async for frame in ws:
                text = frame if isinstance(frame, str) else frame.decode()
                msg = json.loads(text)
                if number == 0:
                    if msg.get("type") != "REGISTER":
                        continue
                    self.conn_no += 1
                    number = self.conn_no
                    self.ws = ws
                    self.registered_at = time.monotonic()
                    self.reconnected_at.append(time.time())
                    self.changed.set()
                    # retry before reading on: the retries cross the acks the edge resends
                    # after REGISTER, so the edge has some of these commands already
                    await self.retry()
                    continue
                self.on_frame(number, text, msg)
        except ConnectionClosed:
            pass
        finally:
            if self.ws is ws:
                self.ws = None

    def on_frame(self, number: int, text: str, msg: dict[str, Any]) -> None:
        """Record an ack or a terminal against its requestRef."""
        kind = str(msg.get("type"))
        self.kinds[kind] += 1
        if kind not in ("ack", *common.TERMINALS):
            return
        ref = str(msg.get("requestRef"))
        rec = self.refs.get(ref)
        if rec is None:
            self.unknown_refs[ref] += 1
            return
        rec.frames.append((time.time(), number, text))
        self.unacked.pop(ref, None)
        if kind == "ack":
            rec.acked = True
            rec.accepted |= msg.get("status") == "accepted"
            self.duplicate_acks += msg.get("status") == "duplicate"
            return
        mid = str(msg.get("messageId"))
        rec.terminal_frames += 1
        owner = self.messages_by_id.setdefault(mid, ref)
        if owner != ref:
            self.shared_ids.add(mid)
        if msg.get("replay") is True:
            rec.replay_frames += 1
            rec.replay_ids.add(mid)
        else:
            rec.original = True
            rec.ids.add(mid)
        if not rec.terminal:
            rec.terminal = True
            rec.status = str(msg.get("status", msg.get("code", "")))
            self.outstanding -= 1
            self.changed.set()

    async def _send(self, ref: str, rec: Ref) -> None:
        ws = self.ws
        if ws is None:
            return
        rec.sends.append((time.time(), self.conn_no))
        self.frames_sent += 1
        with contextlib.suppress(ConnectionClosed):
            await ws.send(rec.text)

    async def sender(self, stop_at: float) -> None:
        """Keep ``window`` commands outstanding until all are sent (or the deadline)."""
        while self.next < self.total and time.monotonic() < stop_at:
            if self.ws is None or self.outstanding >= self.window:
                self.changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), 0.5)
                continue
            ref, text = command(self.next)
            self.next += 1
            rec = self.refs[ref] = self.unacked[ref] = Ref(text)
            self.outstanding += 1
            await self._send(ref, rec)
            self._check_milestones()

    async def retry(self) -> None:
        """Resend (same requestRef) what has no ack and was sent on a gone connection."""
        current, now = self.conn_no, time.time()
        for ref, rec in list(self.unacked.items()):
            if rec.acked or rec.terminal or not rec.sends:
                continue
            at, conn = rec.sends[-1]
            if conn != current or now - at > RETRY_AFTER:
                self.retries += 1
                await self._send(ref, rec)
                if self.ws is None:
                    break

    async def retrier(self) -> None:
        """Retry what has waited too long for its ack on a live connection."""
        while True:
            await asyncio.sleep(1.0)
            if self.ws is not None:
                await self.retry()


# ---------------------------------------------------------------- faults


@dataclass
class Faults:
    """The proxy's schedule, and what it did."""

    proxy: FaultProxy
    drop_every: float
    blackhole_every: float
    blackhole_for: float
    by_progress: tuple[int, int] | None = None  # --smoke: (drop at, black hole at) commands sent
    drops: int = 0
    blackholes: int = 0
    log: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        """Log a fault with its wall-clock time."""
        self.log.append(f"{stamp(time.time())} {what}")

    async def blackhole(self) -> None:
        """Swallow everything for a while, then close every connection."""
        self.blackholes += 1
        self.note(f"black hole {self.blackhole_for:g}s")
        self.proxy.set_mode("blackhole")
        await asyncio.sleep(self.blackhole_for)
        await self.proxy.restore()
        self.note("black hole ends: connections closed")

    async def drop(self) -> None:
        """Close every open connection."""
        self.drops += 1
        self.note("drop")
        await self.proxy.close_all()

    async def run(self, gateway: SoakGateway) -> None:
        """Apply the schedule until cancelled."""
        if self.by_progress is not None:
            drop_at, hole_at = self.by_progress
            # a little after a burst of sends, when some of it has reached the edge
            await gateway.reach(drop_at)
            await asyncio.sleep(0.02)
            await self.drop()
            await gateway.reach(hole_at)
            await asyncio.sleep(0.02)
            await self.blackhole()
            return
        started = time.monotonic()
        next_drop = self.drop_every
        # between two drops (35 s with the defaults), then once per blackhole_every
        next_hole = (self.blackhole_every + self.drop_every) / 2
        while True:
            if next_hole <= next_drop:
                await asyncio.sleep(max(0.0, started + next_hole - time.monotonic()))
                await self.blackhole()
                next_hole += self.blackhole_every
                while started + next_drop <= time.monotonic():  # none during a black hole
                    next_drop += self.drop_every
            else:
                await asyncio.sleep(max(0.0, started + next_drop - time.monotonic()))
                await self.drop()
                next_drop += self.drop_every


# ---------------------------------------------------------------- the edge process


class DebugEdge(common.Edge):
    """The daemon of common.py, run with ``--log-level debug`` (its log is the evidence)."""

    async def start(self) -> None:
        """Start ``python -m edge_proxy run --config FILE --log-level debug``."""
        argv = ["-m", "edge_proxy", "run", "--config", str(self.config), "--log-level", "debug"]
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                common.PYTHON,
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=common._die_with_parent,
            )


# ---------------------------------------------------------------- the run


@dataclass
class Memory:
    """Edge RSS samples, KiB."""

    start: int = 0
    peak: int = 0
    end: int = 0
    trace: list[tuple[int, int]] = field(default_factory=list)  # (commands sent, RSS)

    def sample(self, pid: int) -> int:
        """Read RSS now; the peak is the kernel's high-water mark (VmHWM)."""
        rss, hwm = rss_kb(pid)
        self.peak = max(self.peak, hwm, rss)
        return rss


async def sample_memory(pid: int, memory: Memory, gw: SoakGateway) -> None:
    """Keep the peak fresh while the edge lives; note RSS at every tenth of the commands."""
    step = max(1, gw.total // 10)
    while True:
        rss = memory.sample(pid)
        if gw.next >= step * (len(memory.trace) + 1):
            memory.trace.append((gw.next, rss))
        await asyncio.sleep(0.5)


def problems(gw: SoakGateway) -> dict[str, list[str]]:
    """requestRefs that break a guarantee, by kind."""
    out: dict[str, list[str]] = {
        "lost": [],
        "duplicated": [],
        "replay_id": [],
        "replay_only": [],
        "no_accept": [],
    }
    for ref, rec in gw.refs.items():
        if rec.acked and not rec.terminal:
            out["lost"].append(ref)
        if len(rec.ids) > 1:
            out["duplicated"].append(ref)
        if rec.replay_ids - rec.ids and rec.ids:
            out["replay_id"].append(ref)
        if rec.terminal and not rec.original:
            out["replay_only"].append(ref)
        if rec.acked and not rec.accepted:
            out["no_accept"].append(ref)
    return out


def evidence(
    gw: SoakGateway, faults: Faults, refs: list[str], log: Path, out: Path, limit: int = 50
) -> None:
    """Write each bad requestRef's frames (both ways) and the edge's log lines about it."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    with out.open("w") as f:
        f.write("faults:\n" + "".join(f"  {x}\n" for x in faults.log))
        f.write("REGISTERs (connection numbers c1, c2, ...):\n")
        f.write("".join(f"  c{n} {stamp(at)}\n" for n, at in enumerate(gw.reconnected_at, 1)))
        f.write("\n")
        for ref in refs[:limit]:
            rec = gw.refs[ref]
            f.write(f"=== {ref} ===\nGateway -> edge (wall time, connection):\n")
            for at, conn in rec.sends:
                f.write(f"  {stamp(at)} c{conn} {rec.text}\n")
            f.write("edge -> Gateway (wall time, connection):\n")
            for at, conn, text in rec.frames:
                f.write(f"  {stamp(at)} c{conn} {text}\n")
            ids = {json.loads(t).get("messageId") for _, _, t in rec.frames}
            keys = [ref, *(i for i in ids if i)]
            f.write("edge log (lines naming it or its messageIds, 3 lines around):\n")
            shown: set[int] = set()
            for n, line in enumerate(lines):
                if any(k in line for k in keys):
                    for m in range(max(0, n - 3), min(len(lines), n + 4)):
                        if m not in shown:
                            shown.add(m)
                            f.write(f"  {m + 1}: {lines[m]}\n")
            f.write("\n")


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


async def body(args: argparse.Namespace) -> int:
    total = 2000 if args.smoke and args.commands is None else (args.commands or 100_000)
    workdir = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    gw = SoakGateway(total, args.window)
    server = await serve(gw.handler, common.HOST, 0, max_size=None, compression=None)
    port = next(iter(server.sockets)).getsockname()[1]
    proxy = FaultProxy((common.HOST, port))
    await proxy.start()
    faults = Faults(
        proxy,
        args.drop_every,
        args.blackhole_every,
        args.blackhole_for,
        by_progress=(total // 4, total * 11 // 20) if args.smoke else None,
    )
    if args.smoke:
        faults.blackhole_for = min(args.blackhole_for, 2.0)
    edge = DebugEdge(workdir, edge_tree(proxy.url, args.dedup_window), profile=False)
    await edge.start()
    memory = Memory()
    tasks: list[asyncio.Task[Any]] = []
    keep = args.keep
    try:
        deadline = time.monotonic() + args.time_limit
        while gw.ws is None:
            if edge.proc is not None and edge.proc.returncode is not None:
                raise RuntimeError(f"the edge exited:\n{edge.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the edge never registered:\n{edge.log_tail()}")
            await asyncio.sleep(0.05)
        memory.start = memory.sample(edge.pid)
        started = time.monotonic()
        tasks = [
            asyncio.create_task(gw.retrier()),
            asyncio.create_task(faults.run(gw)),
            asyncio.create_task(sample_memory(edge.pid, memory, gw)),
        ]
        sender = asyncio.create_task(gw.sender(deadline))
        timed_out = False
        while True:
            await asyncio.sleep(0.1)
            if edge.proc is not None and edge.proc.returncode is not None:
                raise RuntimeError(f"the edge exited:\n{edge.log_tail()}")
            if sender.done() and gw.outstanding == 0:
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
        wall = time.monotonic() - started
        for task in tasks[:2]:  # no more retries or faults; the link stays up
            task.cancel()
        if proxy.mode != "pass":
            await proxy.restore()
        sender.cancel()
        await asyncio.sleep(SETTLE)  # anything late: a duplicate terminal
        memory.end = memory.sample(edge.pid)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await edge.stop()
        await proxy.stop()
        server.close()
        await server.wait_closed()

    bad = problems(gw)
    sent = len(gw.refs)
    acked = sum(r.acked for r in gw.refs.values())
    terminals = sum(r.terminal for r in gw.refs.values())
    statuses = Counter(r.status for r in gw.refs.values() if r.terminal)
    sizes = [
        len(text)
        for r in gw.refs.values()
        for _, _, text in r.frames
        if json.loads(text).get("type") in common.TERMINALS
    ]
    retried = sum(len(r.sends) > 1 for r in gw.refs.values())
    terminal_frames = sum(r.terminal_frames for r in gw.refs.values())
    replays = sum(r.replay_frames for r in gw.refs.values())
    resends = terminal_frames - replays - sum(len(r.ids) for r in gw.refs.values())
    never_acked = sum(not r.acked and not r.terminal for r in gw.refs.values())
    growth = (memory.end - memory.start) / 1024
    mb = 1024
    rows: list[tuple[object, ...]] = [
        ("commands sent (distinct requestRefs)", sent, f"{total}", verdict(sent == total)),
        ("COMMAND frames sent (with retries)", gw.frames_sent, "", ""),
        ("  retries (same requestRef)", gw.retries, "", ""),
        ("  requestRefs sent more than once", retried, "", ""),
        ("acked (distinct requestRefs)", acked, "", ""),
        ("  acks 'duplicate' (a retry de-duplicated)", gw.duplicate_acks, "", ""),
        ("terminals received (distinct requestRefs)", terminals, f"{sent}", ""),
        ("  of them completed", statuses.get("completed", 0), "", ""),
        ("terminal frames received", terminal_frames, "", ""),
        ("  resends of the same messageId", resends, "", ""),
        ("  replays (replay: true)", replays, "", ""),
        ("terminals lost (acked, no terminal)", len(bad["lost"]), "0", ""),
        ("duplicated terminals (2 messageIds)", len(bad["duplicated"]), "0", ""),
        ("replays with another messageId", len(bad["replay_id"]), "0", ""),
        ("messageIds on two requestRefs", len(gw.shared_ids), "0", ""),
        ("terminal only as a replay (original lost)", len(bad["replay_only"]), "0", ""),
        ("acked only as duplicate (accepted ack lost)", len(bad["no_accept"]), "0", ""),
        ("sent, never acked nor answered", never_acked, "0", ""),
        ("frames for unknown requestRefs", sum(gw.unknown_refs.values()), "0", ""),
        ("reconnects (REGISTERs after the first)", max(0, gw.conn_no - 1), "", ""),
        ("connection drops (proxy)", faults.drops, "", ""),
        ("black holes (proxy)", faults.blackholes, "", ""),
        ("wall time s", f"{wall:.1f}", "", "deadline hit" if timed_out else ""),
        ("commands/s", f"{terminals / wall:.1f}" if wall else "n/a", "", ""),
        ("edge RSS at start MB", f"{memory.start / mb:.1f}", "", ""),
        ("edge RSS peak MB", f"{memory.peak / mb:.1f}", "", ""),
        ("edge RSS at end MB", f"{memory.end / mb:.1f}", "", ""),
        ("edge RSS growth MB (end - start)", f"{growth:.1f}", f"< {RSS_TARGET_MB:g}", ""),
    ]
    checks = {
        "terminals lost": not bad["lost"],
        "duplicated terminals": not bad["duplicated"],
        "replays with another": not bad["replay_id"],
        "messageIds on two": not gw.shared_ids,
        "terminal only as a replay": not bad["replay_only"],
        "acked only as duplicate": not bad["no_accept"],
        "sent, never acked": never_acked == 0,
        "terminals received": terminals == sent,
        "frames for unknown": not gw.unknown_refs,
        "edge RSS growth": growth < RSS_TARGET_MB,
    }
    table = []
    for row in rows:
        name, value, target, note = row
        for key, ok in checks.items():
            if str(name).startswith(key):
                note = verdict(ok)
        table.append((name, value, target, note))
    print(f"machine: {common.machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(
        f"window {args.window} outstanding, {LINKS * DEVICES_PER_LINK} simulated devices on "
        f"{LINKS} links; faults: "
        + (
            "one drop, one black hole (by progress)"
            if args.smoke
            else f"drop every {args.drop_every:g}s, black hole {faults.blackhole_for:g}s "
            f"every {args.blackhole_every:g}s"
        )
    )
    common.print_table(
        "Soak: delivery under link faults", ["metric", "value", "target", "verdict"], table
    )
    trace = ", ".join(f"{n:,}: {kb / 1024:.1f}" for n, kb in memory.trace)
    print(f"\nedge RSS MB by commands sent: start {memory.start / 1024:.1f}, {trace}")
    if sizes:
        print(f"terminal frame: {sum(sizes) / len(sizes):.0f} bytes on average (encoded)")
    if args.dedup_window:
        print(f"edge commands.dedup_window: {args.dedup_window}")
    if statuses.keys() - {"completed"}:
        print(f"\nterminal statuses: {dict(statuses)}")
    print(f"\nfaults: {faults.drops} drops, {faults.blackholes} black holes")
    print("frames from the edge: " + ", ".join(f"{k} {v}" for k, v in gw.kinds.most_common()))
    failed = [k for k, ok in checks.items() if not ok]
    guarantee_refs = sorted(
        {r for kind, refs in bad.items() for r in refs}
        | {gw.messages_by_id[m] for m in gw.shared_ids}
    )
    if guarantee_refs:
        keep = True
        out = workdir / "evidence.txt"
        evidence(gw, faults, guarantee_refs, edge.log, out)
        print(f"\n{len(guarantee_refs)} requestRef(s) break a guarantee; evidence: {out}")
        for kind, refs in bad.items():
            if refs:
                print(f"  {kind}: {', '.join(refs[:20])}{' ...' if len(refs) > 20 else ''}")
    if keep:
        print(f"edge log: {edge.log}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nRESULT: {'PASS' if not failed else 'FAIL (' + ', '.join(failed) + ')'}")
    return 0 if not failed else 1


def main() -> None:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--commands", type=int, default=None, help="commands (default 100000)")
    p.add_argument("--window", type=int, default=100, help="commands outstanding at once")
    p.add_argument("--smoke", action="store_true", help="2000 commands, one drop, one black hole")
    p.add_argument("--drop-every", type=float, default=10.0, help="seconds between drops")
    p.add_argument("--blackhole-every", type=float, default=60.0, help="seconds between holes")
    p.add_argument("--blackhole-for", type=float, default=3.0, help="seconds a hole lasts")
    p.add_argument("--time-limit", type=float, default=900.0, help="hard deadline, seconds")
    p.add_argument(
        "--dedup-window", help="the edge's commands.dedup_window (default: the edge's own)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir with the edge log")
    args = p.parse_args()
    if args.smoke and args.time_limit == 900.0:
        args.time_limit = 150.0
    # the body stops itself at the deadline; this bound is for a hang in the teardown
    code = asyncio.run(asyncio.wait_for(body(args), args.time_limit + 120))
    sys.exit(code)


if __name__ == "__main__":
    main()
