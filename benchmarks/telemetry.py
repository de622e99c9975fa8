"""Telemetry: 500 Modbus TCP devices x 30 points every second, edge-proxy beside a bare poller.

Run: ``.venv/bin/python benchmarks/telemetry.py [--devices 500] [--points 30] [--seconds 60]``
(and ``--profile``, ``--smoke``; ``--devices 5000`` prints the figures without targets)

Processes, all on loopback:

* the **devices** (this file with ``--serve``): pymodbus ``ModbusTcpServer`` s on several ports
  (``--units-per-port`` units each, ``SimDevice``/``SimData``), with a task that increments
  every polled register of every unit every half interval, in slices of 10 ms. Half the poll
  interval, so that two reads of a device one interval apart always see new values whatever
  the phase between the server's updates and the poller's ticks: every value changes every
  cycle;
* the **edge** (``python -m edge_proxy run``): one modbus-tcp link per port, one device per
  unit, a profile with one poll group of every point (``report: change``) at ``--interval``;
* the **bare poller** (this file with ``--bare``): one ``AsyncModbusTcpClient`` per port, each
  unit read at fixed-rate ticks spread across the interval as the edge spreads them (one read
  of up to 125 registers at a time, one transaction at a time per port), a tick more than an
  interval late skipped and counted, and each reply sent as one JSON message over a WebSocket;
* this driver, the **Gateway** for both: it counts the telemetry values received and keeps
  each message's ``sampledAt``.

The sides run one after the other against the same device process: first the edge with
``telemetry: false`` on every device (the command latency without telemetry), then the edge
polling, then the bare poller. A side is measured over ``--seconds`` once every device has
reported once, and the Gateway waits 2 s more for values sampled in the window:

* CPU % of one core and peak RSS (VmHWM) of the side's own process (``/proc/<pid>``);
* values delivered: values sampled for the ticks in the window (each sample counts for the
  nearest tick of its device's fixed grid), per second, and as a percentage of those expected:
  points x the ticks in the window, which is devices x points x seconds;
* jitter: the edge does not publish when its cycles start (QUERY and metrics give cycles,
  failures and skipped ticks, not start times), so for both sides it is taken from the
  ``sampledAt`` spacing per device: ``|t[k+1] - t[k] - interval|``, which holds the cycle's
  start jitter and the change of its read time (the edge's ``sampledAt`` has millisecond
  resolution, so its figures are whole milliseconds). The bare poller's own tick-start
  lateness is printed beside it;
* skipped ticks: the edge's from QUERY ``devices`` (each device's ``telemetry`` groups'
  ``skipped``, over the window), the bare poller's from its own count;
* command latency: SIMPLE reads of a point outside the poll group, 20 a second to random polled
  devices, open loop, during the edge's window; and the same without telemetry.

Targets (the issue's, printed for up to 500 devices): edge-proxy <= 20 % of one core and
<= 2x the bare poller's CPU, peak RSS <= 100 MB, >= 99.9 % of values delivered, jitter
p99 <= 50 ms, no skipped ticks, command p99 within 10 ms of the p99 without telemetry.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import math
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import common
import console_clients

SETTLE = 2.0  # seconds after every device's first value before a window starts
LATE = 2.0  # seconds waited after a window for values sampled in it
SLICE = 0.01  # the device process updates its units in slices this far apart
MAX_READ = 125  # registers per Modbus read
COMMAND_POINT_ADDRESS = common.ADDRESS  # the commands' point, outside the poll group

CPU_PCT_MAX = 20.0
CPU_RATIO_MAX = 2.0
RSS_MB_MAX = 100.0
DELIVERED_PCT_MIN = 99.9
JITTER_P99_MS_MAX = 50.0
LATENCY_DELTA_MS_MAX = 10.0
TARGET_DEVICES = 500  # targets are printed up to this many devices


def point_names(points: int) -> list[str]:
    """The polled points: holding registers 0 .. points-1."""
    return [f"v{j}" for j in range(points)]


def profile(points: int, interval: float) -> dict[str, Any]:
    """The devices' profile: the polled points, the commands' point, one poll group."""
    table: dict[str, Any] = {
        n: {"table": "holding", "address": j} for j, n in enumerate(point_names(points))
    }
    table[common.POINT] = common.PROFILE["points"][common.POINT]
    group = {"name": "all", "interval": interval, "points": point_names(points)}
    return {"points": table, "commands": {}, "telemetry": [group]}


def layout(devices: int, per_port: int) -> list[int]:
    """Units per port: full ports of ``per_port`` units, the rest on a last one."""
    per_port = max(1, min(per_port, 247))
    full, rest = divmod(devices, per_port)
    return [per_port] * full + ([rest] if rest else [])


def device_id(port_index: int, unit: int) -> str:
    """The id of unit ``unit`` of port ``port_index`` (the same for edge and bare)."""
    return f"t-{port_index}-{unit}"


async def sleep_until(when: float) -> None:
    """Sleep until the loop time ``when`` (at once if it has passed)."""
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU of the machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


def parse_time(value: Any) -> float:
    """sampledAt as epoch seconds: an ISO string (the edge's) or a number (the bare poller's)."""
    if isinstance(value, (int, float)):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- what the Gateway received


@dataclass
class Tally:
    """The telemetry one side delivered: per device, (sampledAt, values, lag) of each message."""

    samples: dict[str, list[tuple[float, int, float]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    seq_gaps: int = 0  # telemetry messages missing from the edge's per-device seq
    last_seq: dict[str, int] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    wanted: int = 0

    def add(self, msg: dict[str, Any]) -> None:
        """One telemetry message."""
        now = time.time()
        dev = str(msg["deviceId"])
        sampled = parse_time(msg["sampledAt"])
        self.samples[dev].append((sampled, len(msg.get("values", {})), now - sampled))
        seq = msg.get("seq")
        if isinstance(seq, int):
            last = self.last_seq.get(dev)
            if last is not None and seq != last + 1:
                self.seq_gaps += abs(seq - last - 1)
            self.last_seq[dev] = seq
        if len(self.samples) >= self.wanted:
            self.arrived.set()

    def window(
        self, start: float, end: float, interval: float
    ) -> tuple[int, int, list[float], list[float]]:
        """Values and ticks of [start, end), spacing jitter (ms) and delivery lag (ms) in it.

        Each device's ticks are its own fixed grid, ``anchor + k * interval`` (the anchor is
        the median phase of its samples), and a sample counts for the tick it is nearest to:
        a value sampled a little late at the window's end is still counted for its tick, and
        a device's expected ticks are exactly those of its grid in the window.
        """
        values = 0
        ticks = (self.wanted - len(self.samples)) * round((end - start) / interval)
        jitter: list[float] = []
        lags: list[float] = []
        for series in self.samples.values():
            ref = series[0][0]
            anchor = ref + statistics.median(
                (s[0] - ref + interval / 2) % interval - interval / 2 for s in series
            )
            ticks += math.ceil((end - anchor) / interval) - math.ceil((start - anchor) / interval)
            grid = [anchor + round((s[0] - anchor) / interval) * interval for s in series]
            inside = sorted(s for s, at in zip(series, grid, strict=True) if start <= at < end)
            values += sum(s[1] for s in inside)
            lags += [s[2] * 1000 for s in inside]
            jitter += [abs(b[0] - a[0] - interval) * 1000 for a, b in itertools.pairwise(inside)]
        return values, ticks, jitter, lags


@dataclass
class Counters:
    """Cycle figures of one side, as the side itself counts them."""

    cycles: int = 0
    failures: int = 0
    skipped: int = 0
    online: int = 0

    def since(self, before: Counters) -> Counters:
        """The difference over a window (online as it is now)."""
        return Counters(
            self.cycles - before.cycles,
            self.failures - before.failures,
            self.skipped - before.skipped,
            self.online,
        )


@dataclass
class Side:
    """One side's figures over its window."""

    name: str
    run: common.Run
    rss_mb: float
    values: int
    expected: int
    jitter: list[float]
    lags: list[float]
    counters: Counters
    devices_seen: int
    seq_gaps: int = 0
    failed_commands: int = 0
    machine_busy_pct: float = math.nan  # every CPU of the machine, anyone's work
    note: str = ""

    @property
    def delivered_pct(self) -> float:
        """Values received as a percentage of those expected."""
        return 100 * self.values / self.expected if self.expected else math.nan

    @property
    def rate(self) -> float:
        """Values delivered per second of the window."""
        return self.values / self.run.wall if self.run.wall else math.nan


# ---------------------------------------------------------------- the driver


async def edge_counters(bench: common.Bench) -> Counters:
    """Sum of every device's poll group figures, from QUERY devices (every page)."""
    total = Counters()
    offset: int | None = 0
    while offset is not None:
        query = {"type": "QUERY", "query": "devices", "offset": offset, "version": "1.0"}
        _, terminal = await bench.gateway.request("edge", query, timeout=60)
        result = terminal["result"]
        for dev in result["devices"]:
            total.online += dev.get("status") == "online"
            for group in dev.get("telemetry", []):
                total.cycles += group["cycles"]
                total.failures += group["failures"]
                total.skipped += group["skipped"]
        offset = result.get("next")
    return total


async def commands_at(
    bench: common.Bench, devices: list[str], rate: float, seconds: float
) -> tuple[list[float], int]:
    """SIMPLE reads at ``rate`` a second to random devices for ``seconds``, open loop.

    Returns the latencies (seconds) and how many failed (not completed, or no terminal).
    """
    pick = random.Random(1)
    failed = 0

    async def one(i: int) -> float | None:
        nonlocal failed
        try:
            latency, _ = await bench.gateway.request(
                "edge", common.simple(pick.choice(devices), "read", i), timeout=30
            )
        except (RuntimeError, asyncio.TimeoutError):
            failed += 1
            return None
        return latency

    start = asyncio.get_running_loop().time()
    tasks = []
    for i in range(int(rate * seconds)):
        await sleep_until(start + i / rate)
        tasks.append(asyncio.create_task(one(i)))
    results = await asyncio.gather(*tasks)
    return [r for r in results if r is not None], failed


async def window(
    bench: common.Bench,
    args: argparse.Namespace,
    name: str,
    pid: int,
    tally: Tally,
    counters: Any,
    devices: list[str] | None,
) -> Side:
    """Wait for every device's first value, then measure one side over ``args.seconds``."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(tally.arrived.wait(), max(60.0, args.devices / 20))
    await asyncio.sleep(SETTLE)
    before: Counters = await counters()
    failed = 0

    async def stretch() -> common.Run:
        nonlocal failed
        run = common.Run()
        began = time.perf_counter()
        if devices is None:
            await asyncio.sleep(args.seconds)
        else:
            run.latencies, failed = await commands_at(
                bench, devices, args.command_rate, args.seconds
            )
        run.wall = time.perf_counter() - began
        return run

    start = time.time()
    busy, total = machine_ticks()
    run = await common.measured(pid, stretch(), bench.server_pid)
    busy_after, total_after = machine_ticks()
    rss = common.peak_rss_mb(pid)
    after: Counters = await counters()
    await asyncio.sleep(LATE)
    values, ticks, jitter, lags = tally.window(start, start + run.wall, args.interval)
    return Side(
        name,
        run,
        rss,
        values,
        ticks * args.points,
        jitter,
        lags,
        after.since(before),
        len(tally.samples),
        tally.seq_gaps,
        failed,
        100 * (busy_after - busy) / max(1, total_after - total),
    )


def log_problems(edge: common.Edge) -> list[str]:
    """The WARNING and ERROR lines of the daemon's log."""
    text = edge.log.read_text(errors="replace") if edge.log.exists() else ""
    return [ln for ln in text.splitlines() if " WARNING " in ln or " ERROR " in ln]


async def latency_without_telemetry(
    bench: common.Bench, args: argparse.Namespace, tree: dict[str, Any], devices: list[str]
) -> tuple[list[float], int]:
    """The edge with ``telemetry: false`` on every device: the same commands' latencies."""
    quiet = json.loads(json.dumps(tree))
    for dev in quiet["devices"]:
        dev["telemetry"] = False
    edge = await bench.start_edge(quiet)
    await bench.gateway.closed_loop(  # warm-up: every link connected
        "edge", lambda i: common.simple(devices[i % len(devices)], "read", i), len(devices), 10
    )
    latencies, failed = await commands_at(bench, devices, args.command_rate, args.latency_seconds)
    await edge.stop()
    bench.gateway.peers.pop("edge", None)  # the next edge's REGISTER names it again
    return latencies, failed


async def body(args: argparse.Namespace) -> None:
    units = layout(args.devices, args.units_per_port)
    tallies = {"edge": Tally(wanted=args.devices), "bare": Tally(wanted=args.devices)}

    def on_message(role: str, msg: dict[str, Any]) -> None:
        if msg.get("type") == "telemetry" and role in tallies:
            tallies[role].add(msg)

    async with common.Bench(args) as bench:
        bench.gateway.on_message = on_message
        # the load's shape, as the device process and the bare poller are told it
        shape = ["--units", ",".join(map(str, units)), "--points", str(args.points)]
        shape += ["--interval", str(args.interval)]
        server = await bench.helper(__file__, "--serve", *shape)
        bench.server_pid = server.pid
        ports = [int(p) for p in server.ready["ports"]]
        per_link = {
            f"plc-{i}": [device_id(i, u) for u in range(1, n + 1)] for i, n in enumerate(units)
        }
        devices = [d for ids in per_link.values() for d in ids]
        tree = common.edge_tree(common.modbus_links(ports), per_link)
        tree["profiles"]["bench"] = profile(args.points, args.interval)

        quiet, quiet_failed = await latency_without_telemetry(bench, args, tree, devices)

        edge = await bench.start_edge(tree)

        async def counters() -> Counters:
            return await edge_counters(bench)

        edge_side = await window(
            bench, args, "edge-proxy", edge.pid, tallies["edge"], counters, devices
        )
        await edge.stop()  # before the bare poller starts: one side at a time
        problems = log_problems(edge)
        if args.console_clients:  # the same load again, the console open in N browser tabs
            bench.gateway.peers.pop("edge", None)  # the next edge's REGISTER names it again
            tallies["edge"] = Tally(wanted=args.devices)
            port = console_clients.free_port()
            edge = await bench.start_edge(console_clients.with_console(tree, port))
            async with console_clients.Tabs(port, args.console_clients, devices) as tabs:
                name = f"edge-proxy, console in {args.console_clients} tabs"
                with_tabs = await window(
                    bench, args, name, edge.pid, tallies["edge"], counters, devices
                )
            await edge.stop()
        bare = await bench.helper(
            __file__,
            "--bare",
            "--url",
            bench.gateway.url,
            "--ports",
            ",".join(map(str, ports)),
            *shape,
        )
        own_lateness: list[float] = []

        async def bare_counters() -> Counters:
            reply = await bare.call({})
            own_lateness[:] = reply["lateness"]
            return Counters(reply["cycles"], reply["failures"], reply["skipped"])

        bare_side = await window(
            bench, args, "bare poller", bare.pid, tallies["bare"], bare_counters, None
        )
        p50, p99 = own_lateness or [math.nan, math.nan]
        bare_side.note = f"its own tick-start lateness p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        bench.header()
        print(f"layout: {len(units)} ports x up to {max(units)} units, one link per port")
        report(args, edge_side, bare_side, (quiet, quiet_failed))
        if args.console_clients:
            console_clients.report(edge_side, with_tabs, tabs)
        print(f"\nedge log: {len(problems)} WARNING/ERROR lines" + ":" * bool(problems))
        for line in problems[:5]:
            print(f"  {line[:300]}")


def report(
    args: argparse.Namespace, edge: Side, bare: Side, quiet: tuple[list[float], int]
) -> None:
    """The side-by-side table, the command latencies and the targets."""
    sides = (edge, bare)

    def pct(samples: list[float], p: float) -> str:
        return f"{common.percentile(samples, p):.2f}"

    common.print_table(
        f"Telemetry: {args.devices} Modbus TCP devices x {args.points} points every "
        f"{args.interval:g} s, every value changing every cycle, {args.seconds:g} s per side",
        [
            "side",
            "CPU % of one core",
            "peak RSS MB",
            "values/s",
            "jitter p50 ms",
            "jitter p99 ms",
            "skipped ticks",
            "values delivered %",
        ],
        [
            (
                s.name,
                f"{s.run.core_pct:.1f}",
                f"{s.rss_mb:.1f}",
                f"{s.rate:.0f}",
                pct(s.jitter, 50),
                pct(s.jitter, 99),
                s.counters.skipped,
                f"{s.delivered_pct:.3f}",
            )
            for s in sides
        ],
    )
    print(
        "  jitter: |sampledAt spacing - interval| per device, from the Gateway's messages, for "
        "both\n  (the edge publishes no cycle start times; QUERY gives cycles/failures/skipped)"
    )
    for s in sides:
        print(
            f"  {s.name}: {s.values} of {s.expected} values, {s.devices_seen} devices seen, "
            f"{s.counters.cycles} cycles, {s.counters.failures} failed, delivery lag p99 "
            f"{pct(s.lags, 99)} ms, device process {100 * s.run.server_cpu / s.run.wall:.1f} %"
            f" CPU, Gateway (this driver) {100 * s.run.driver_cpu / s.run.wall:.1f} %, "
            f"the machine's {os.cpu_count()} CPUs {s.machine_busy_pct:.0f} % busy"
        )
    print(
        f"  edge-proxy: seq gaps {edge.seq_gaps}, {edge.counters.online} devices online at the "
        f"end; its CPU includes the {args.command_rate:g} commands/s"
    )
    print(f"  bare poller: {bare.note}")

    loaded, (calm, calm_failed) = edge.run.latencies, quiet
    ms = [x * 1000 for x in loaded], [x * 1000 for x in calm]
    common.print_table(
        f"SIMPLE reads, {args.command_rate:g}/s to random polled devices, open loop",
        ["commands", "count", "failed", "p50 ms", "p99 ms"],
        [
            (label, len(samples), failures, pct(samples, 50), pct(samples, 99))
            for label, samples, failures in (
                ("with telemetry", ms[0], edge.failed_commands),
                ("without telemetry", ms[1], calm_failed),
            )
        ],
    )
    delta = common.percentile(ms[0], 99) - common.percentile(ms[1], 99)
    if args.devices > TARGET_DEVICES:
        print(f"\n(no targets above {TARGET_DEVICES} devices; p99 with - without: {delta:.2f} ms)")
        return
    jitter99 = common.percentile(edge.jitter, 99)
    checks = [
        (
            f"edge CPU <= {CPU_PCT_MAX:g} % of one core",
            f"{edge.run.core_pct:.1f} %",
            edge.run.core_pct <= CPU_PCT_MAX,
        ),
        (
            f"edge CPU <= {CPU_RATIO_MAX:g}x the bare poller's",
            common.ratio(edge.run.cpu, bare.run.cpu),
            edge.run.cpu <= CPU_RATIO_MAX * bare.run.cpu,
        ),
        (f"edge peak RSS <= {RSS_MB_MAX:g} MB", f"{edge.rss_mb:.1f} MB", edge.rss_mb <= RSS_MB_MAX),
        (
            f"values delivered >= {DELIVERED_PCT_MIN:g} %",
            f"{edge.delivered_pct:.3f} %",
            edge.delivered_pct >= DELIVERED_PCT_MIN,
        ),
        (
            f"jitter p99 <= {JITTER_P99_MS_MAX:g} ms",
            f"{jitter99:.1f} ms",
            jitter99 <= JITTER_P99_MS_MAX,
        ),
        ("no skipped ticks", str(edge.counters.skipped), edge.counters.skipped == 0),
        (
            f"command p99 within {LATENCY_DELTA_MS_MAX:g} ms of no telemetry",
            f"{delta:+.2f} ms",
            delta <= LATENCY_DELTA_MS_MAX,
        ),
    ]
    common.print_table(
        "targets (edge-proxy)",
        ["target", "measured", "result"],
        [(t, m, "PASS" if ok else "FAIL") for t, m, ok in checks],
    )
    failed = [t for t, _, ok in checks if not ok]
    print(f"\noverall: {'PASS' if not failed else 'FAIL (' + '; '.join(failed) + ')'}")


# ---------------------------------------------------------------- the device process


async def serve(units: list[int], points: int, interval: float) -> None:
    """Serve the units on one port per entry of ``units``; change every polled register."""
    from edge_proxy.config import ProfileConfig
    from edge_proxy_drivers.modbus.simulator import modbus_device

    prof = ProfileConfig.model_validate(profile(points, interval))
    servers = []
    ports = []
    for count in units:
        server, port = await common.modbus_tcp_server(
            [modbus_device(u, prof) for u in range(1, count + 1)]
        )
        servers.append(server)
        ports.append(port)
    targets = [(s.context, u) for s, n in zip(servers, units, strict=True) for u in range(1, n + 1)]

    async def change() -> None:
        """Every half interval, every unit's registers + 1, a slice of the units each 10 ms."""
        loop = asyncio.get_running_loop()
        period = interval / 2
        slices = max(1, round(period / SLICE))
        start = loop.time()
        for k in range(1 << 62):
            await sleep_until(start + k * period / slices)
            step, part = divmod(k, slices)
            for context, unit in targets[part::slices]:
                values = [(step + unit + j) & 0xFFFF for j in range(points)]
                await context.async_setValues(unit, 3, 0, values)

    task = asyncio.create_task(change())
    await common.serve_helper({"ports": ports})
    task.cancel()
    for server in servers:
        await server.shutdown()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------- the bare poller


async def bare(url: str, ports: list[int], units: list[int], points: int, interval: float) -> None:
    """One client per port, fixed-rate ticks per unit, each reply as JSON over a WebSocket."""
    from pymodbus.client import AsyncModbusTcpClient
    from websockets.asyncio.client import connect

    names = point_names(points)
    figures = {"cycles": 0, "failures": 0, "skipped": 0}
    lateness: list[float] = []
    done = asyncio.Event()

    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "HELLO", "role": "bare"}))

        async def poll(index: int, port: int, count: int) -> None:
            client = AsyncModbusTcpClient(common.HOST, port=port, timeout=2, retries=0)
            if not await client.connect():
                raise RuntimeError(f"no Modbus server on port {port}")
            loop = asyncio.get_running_loop()
            start = loop.time()
            k = 0
            while not done.is_set():
                tick, slot = divmod(k, count)
                due = start + (tick + slot / count) * interval
                await sleep_until(due)
                if done.is_set():
                    break
                late = loop.time() - due
                if late >= interval:  # a whole interval behind: those ticks are skipped
                    rounds = int(late // interval)
                    figures["skipped"] += rounds * count
                    k += rounds * count
                    continue
                lateness.append(late)
                k += 1
                figures["cycles"] += 1
                registers: list[int] = []
                try:
                    for address in range(0, points, MAX_READ):
                        rsp = await client.read_holding_registers(
                            address, count=min(MAX_READ, points - address), device_id=slot + 1
                        )
                        if rsp.isError():
                            raise RuntimeError(str(rsp))
                        registers += rsp.registers
                except Exception:
                    figures["failures"] += 1
                    continue
                msg = {
                    "type": "telemetry",
                    "deviceId": device_id(index, slot + 1),
                    "sampledAt": time.time(),
                    "values": dict(zip(names, registers, strict=True)),
                }
                await ws.send(json.dumps(msg))
            client.close()

        async def answer(_request: dict[str, Any]) -> dict[str, Any]:
            late_ms = [x * 1000 for x in lateness]
            lateness.clear()
            pcts = [common.percentile(late_ms, 50), common.percentile(late_ms, 99)]
            return {**figures, "lateness": pcts}

        pollers = [
            asyncio.create_task(poll(i, p, n))
            for i, (p, n) in enumerate(zip(ports, units, strict=True))
        ]
        await common.serve_helper({}, answer)
        done.set()  # each poller ends at its next tick
        await asyncio.wait(pollers, timeout=5 + interval)


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--devices", type=int, default=500)
    p.add_argument("--points", type=int, default=30, help="polled registers per device")
    p.add_argument("--seconds", type=float, default=60.0, help="measured per side")
    p.add_argument("--interval", type=float, default=1.0, help="poll interval, seconds")
    p.add_argument("--units-per-port", type=int, default=50, help="Modbus units per TCP port")
    p.add_argument("--command-rate", type=float, default=20.0, help="SIMPLE reads per second")
    p.add_argument("--latency-seconds", type=float, default=20.0, help="commands without telemetry")
    p.add_argument(
        "--console-clients", type=int, default=0, help="then run again with N console tabs open"
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", default="", help=argparse.SUPPRESS)
    p.add_argument("--ports", default="", help=argparse.SUPPRESS)
    p.add_argument("--units", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve([int(x) for x in args.units.split(",")], args.points, args.interval))
    elif args.bare:
        asyncio.run(
            bare(
                args.url,
                [int(x) for x in args.ports.split(",")],
                [int(x) for x in args.units.split(",")],
                args.points,
                args.interval,
            )
        )
    else:
        if args.smoke:
            args.devices, args.points, args.seconds = 20, 5, 5.0
            args.units_per_port, args.latency_seconds = 10, 2.0
        common.run_main(body, args)


if __name__ == "__main__":
    main()
