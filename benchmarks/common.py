"""What the benchmarks share: processes, a Gateway, CPU per process, percentiles, tables.

Every benchmark runs each side in a process of its own, on loopback only:

* the **edge** is the real daemon, ``python -m edge_proxy run --config FILE`` (under
  ``python -m cProfile`` with ``--profile``; ``--profile-clock cpu`` profiles process CPU time
  instead of wall time, through ``common.py cpu-profile``), its log in a file of the run's temp
  dir;
* the **Gateway** is the benchmark driver itself (:class:`Gateway`, a websockets server); it
  sends every COMMAND and times it from just before the send to the arrival of the terminal,
  for the edge and for the baseline alike;
* **helpers** (:class:`Helper`) are the Modbus servers and the baselines: a Python process that
  prints one JSON line when it is ready, answers each JSON line on its stdin with one on its
  stdout, and exits when its stdin closes. This file is also their entry point::

      python benchmarks/common.py modbus-server --links 10 --units 100
      python benchmarks/common.py responder --url ws://127.0.0.1:PORT [--modbus-port PORT]

CPU is counted per process from ``/proc/<pid>/stat`` (user + system time of every thread, in
clock ticks), read by the driver before and after each measured stretch, so a side is charged
only for its own work and never for the Modbus server's or the driver's. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import pstats
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from websockets.asyncio.server import Server, ServerConnection, serve

if TYPE_CHECKING:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import SimDevice

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
HOST = "127.0.0.1"
EDGE_ID = "bench"
TERMINALS = ("command_response", "error")
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

#: The one point every benchmark reads and writes (holding register 101 of each unit).
POINT = "brightness"
ADDRESS = 101
PROFILE: dict[str, Any] = {
    "points": {POINT: {"table": "holding", "address": ADDRESS, "access": "rw", "max": 100}},
    "commands": {},
}

# ---------------------------------------------------------------- numbers


def percentile(samples: Sequence[float], pct: float) -> float:
    """The pct-th percentile, linear between the closest ranks (numpy's default)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        # the command name (field 2) is in parentheses and may hold spaces
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def peak_rss_mb(pid: int) -> float:
    """The peak resident set size of process ``pid`` so far (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


@dataclass
class Run:
    """Latencies (seconds) and the wall time of one measured stretch, with one process's CPU."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    driver_cpu: float = 0.0  # this driver's own process (the Gateway side) meanwhile
    server_cpu: float = 0.0  # the Modbus server process meanwhile, if there is one

    def add(self, other: Run) -> None:
        """Fold another stretch of the same side into this one."""
        self.latencies += other.latencies
        self.wall += other.wall
        self.cpu += other.cpu
        self.driver_cpu += other.driver_cpu
        self.server_cpu += other.server_cpu

    @property
    def count(self) -> int:
        """Commands measured."""
        return len(self.latencies)

    def ms(self, pct: float) -> float:
        """A latency percentile in milliseconds."""
        return percentile(self.latencies, pct) * 1000

    @property
    def cpu_per_command_ms(self) -> float:
        """The process's CPU milliseconds per command."""
        return self.cpu / max(1, self.count) * 1000

    @property
    def rate(self) -> float:
        """Commands per second of wall time."""
        return self.count / self.wall if self.wall else math.nan

    @property
    def core_pct(self) -> float:
        """The process's CPU as a percentage of one core over the wall time."""
        return 100 * self.cpu / self.wall if self.wall else math.nan


async def measured(pid: int, stretch: Awaitable[Run], server: int | None = None) -> Run:
    """Run ``stretch`` and charge the CPU that process ``pid`` used meanwhile to its result.

    The driver's own CPU and the ``server`` process's (the Modbus servers) are noted beside it.
    """
    pids = [pid, os.getpid(), server or pid]
    before = [cpu_seconds(p) for p in pids]
    run = await stretch
    used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    run.cpu, run.driver_cpu, server_cpu = used
    run.server_cpu = server_cpu if server is not None else 0.0
    return run


def ratio(edge: float, base: float) -> str:
    """edge / base as ``1.23x``."""
    return f"{edge / base:.2f}x" if base else "n/a"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain text table, numbers right-aligned."""

    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in pairs)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print(line(headers))
    for row in text:
        print(line(row))


def side_by_side(
    title: str, baseline: str, rows: Sequence[tuple[str, float, float]], digits: int = 3
) -> None:
    """A table of (metric, edge-proxy, baseline) with the ratio edge/baseline."""
    print_table(
        title,
        ["metric", "edge-proxy", baseline, f"edge/{baseline}"],
        [(name, f"{e:.{digits}f}", f"{b:.{digits}f}", ratio(e, b)) for name, e, b in rows],
    )


def server_note(per: str, edge_ms: float, baseline: str, base_ms: float) -> str:
    """The Modbus servers' CPU beside each side: for reference, charged to neither."""
    return (
        f"Modbus server process CPU per {per}: {edge_ms:.3f} ms beside the edge, "
        f"{base_ms:.3f} ms beside {baseline}"
    )


# ---------------------------------------------------------------- frames


def simple(device: str, op: str, i: int) -> dict[str, Any]:
    """A SIMPLE read or write of the benchmark point (no requestRef yet)."""
    params: dict[str, Any] = {"points": [POINT]} if op == "read" else {"values": {POINT: i % 101}}
    return {
        "type": "COMMAND",
        "targetClientId": f"{EDGE_ID}:{device}",
        "command": {"commandType": "SIMPLE", "operationType": op, "parameters": params},
        "timeout": 10000,
        "version": "1.0",
    }


def edge_tree(links: dict[str, dict[str, Any]], devices: dict[str, list[str]]) -> dict[str, Any]:
    """A config tree: the given links, and per link the ids of its devices (unit 1, 2, ...)."""
    return {
        "edge": {"id": EDGE_ID},
        "gateway": {"url": "ws://127.0.0.1:9", "max_message_size": "16MiB"},
        "links": links,
        "profiles": {"bench": PROFILE},
        "devices": [
            {"id": dev, "type": "pillar", "profile": "bench", "link": link, "unit": unit}
            for link, ids in devices.items()
            for unit, dev in enumerate(ids, start=1)
        ],
        "control": {"enabled": False},
    }


def modbus_links(ports: Sequence[int]) -> dict[str, dict[str, Any]]:
    """One modbus-tcp link per port of the Modbus server helper."""
    return {
        f"plc-{i}": {
            "driver": "modbus-tcp",
            "host": HOST,
            "port": port,
            "timeout": "2s",
            "health_interval": "1h",
        }
        for i, port in enumerate(ports)
    }


# ---------------------------------------------------------------- the Gateway


class Gateway:
    """The benchmark's Gateway: a websockets server the edge and the baselines connect to.

    A connection is named by its first frame: the edge's REGISTER makes it ``edge``, a baseline
    says ``{"type": "HELLO", "role": ...}``. :meth:`request` sends a COMMAND to one of them and
    returns the time to its terminal.
    """

    def __init__(self) -> None:
        self.server: Server | None = None
        self.url = ""
        self.peers: dict[str, ServerConnection] = {}
        self._joined = asyncio.Condition()
        self._pending: dict[str, asyncio.Future[tuple[float, dict[str, Any]]]] = {}
        self._refs = itertools.count()
        #: called with (role, message) for every frame received, when set
        self.on_message: Callable[[str, dict[str, Any]], None] | None = None

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self.server = await serve(self._handler, HOST, 0, max_size=None)
        port = next(iter(self.server.sockets)).getsockname()[1]
        self.url = f"ws://{HOST}:{port}"

    async def stop(self) -> None:
        """Close the server and every connection."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handler(self, ws: ServerConnection) -> None:
        role = None
        with contextlib.suppress(Exception):
            async for frame in ws:
                now = time.perf_counter()
                msg = json.loads(frame)
                if role is None:
                    role = "edge" if msg.get("type") == "REGISTER" else str(msg.get("role"))
                    async with self._joined:
                        self.peers[role] = ws
                        self._joined.notify_all()
                if self.on_message is not None:
                    self.on_message(role, msg)
                if msg.get("type") in TERMINALS:
                    fut = self._pending.pop(msg.get("requestRef", ""), None)
                    if fut is not None and not fut.done():
                        fut.set_result((now, msg))

    async def wait_peer(self, role: str, timeout: float = 30.0) -> None:
        """Wait until ``role`` has connected and said who it is."""
        async with self._joined:
            await asyncio.wait_for(self._joined.wait_for(lambda: role in self.peers), timeout)

    async def request(
        self, role: str, frame: dict[str, Any], timeout: float = 30.0
    ) -> tuple[float, dict[str, Any]]:
        """Send a COMMAND (with a fresh requestRef); seconds to its terminal, and the terminal."""
        ref = f"r{next(self._refs)}"
        fut = asyncio.get_running_loop().create_future()
        self._pending[ref] = fut
        text = json.dumps({**frame, "requestRef": ref})
        start = time.perf_counter()
        await self.peers[role].send(text)
        end, msg = await asyncio.wait_for(fut, timeout)
        if msg.get("status") != "completed":
            raise RuntimeError(f"{role}: command not completed: {json.dumps(msg)[:500]}")
        return end - start, msg

    async def closed_loop(
        self,
        role: str,
        make: Callable[[int], dict[str, Any]],
        count: int,
        in_flight: int = 1,
        time_limit: float = 60.0,
    ) -> Run:
        """``count`` commands with ``in_flight`` outstanding (a new one as each ends).

        Stops early at ``time_limit`` seconds; the Run says how many were measured.
        """
        run = Run()
        numbers = iter(range(count))
        deadline = time.perf_counter() + time_limit

        async def one_slot() -> None:
            for i in numbers:
                latency, _ = await self.request(role, make(i))
                run.latencies.append(latency)
                if time.perf_counter() > deadline:
                    break

        start = time.perf_counter()
        await asyncio.gather(*(one_slot() for _ in range(in_flight)))
        run.wall = time.perf_counter() - start
        return run


# ---------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM it when the driver dies, so nothing is left running."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class Helper:
    """A helper process (see the module doc): ready line, then one JSON line per request."""

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.ready = ready

    @property
    def pid(self) -> int:
        """The process id, for :func:`cpu_seconds`."""
        return self.proc.pid

    @classmethod
    async def start(cls, *argv: str, timeout: float = 60.0) -> Helper:
        """Start ``python argv...`` and wait for its ready line."""
        proc = await asyncio.create_subprocess_exec(
            PYTHON,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        helper = cls(proc, {})
        helper.ready = await helper._line(timeout)
        return helper

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"helper {self.pid} exited (code {await self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def call(self, request: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
        """Send one request line and wait for the answer line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._line(timeout)

    async def close(self, timeout: float = 10.0) -> None:
        """Close its stdin (its signal to exit) and wait; kill it if it does not go."""
        if self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def serve_helper(
    ready: dict[str, Any],
    handle: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
) -> None:
    """The helper's side: print ``ready``, answer each stdin line with ``handle``, until EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps(ready), flush=True)
    while line := await reader.readline():
        reply = await handle(json.loads(line)) if handle is not None else {}
        print(json.dumps(reply), flush=True)


class Edge:
    """The edge-proxy daemon in a process of its own."""

    def __init__(
        self, workdir: Path, tree: dict[str, Any], profile: str | None, loop: str = "auto"
    ) -> None:
        self.loop = loop  # edge-proxy run --loop
        self.config = workdir / "edge.yaml"
        self.log = workdir / "edge.log"
        self.clock = profile  # None, "wall" or "cpu"
        self.stats = workdir / "edge.pstats" if profile else None
        #: where to keep the raw profile as well (``--profile-save``)
        self.save_to: str | None = None
        self.config.write_text(yaml.safe_dump(tree))
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        """The daemon's process id (the profiler runs in the same process)."""
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        """Start the daemon (under cProfile when profiling)."""
        run = ["edge_proxy", "run", "--config", str(self.config), "--loop", self.loop]
        if self.clock == "wall":
            argv = ["-m", "cProfile", "-o", str(self.stats), "-m", *run]
        elif self.clock == "cpu":
            argv = [str(HERE / "common.py"), "cpu-profile", str(self.stats), *run[1:]]
        else:
            argv = ["-m", *run]
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                PYTHON,
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent,
            )

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a clean stop, which also writes the profile) and wait; SIGKILL if stuck."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def event_loop(self) -> str:
        """The event loop the daemon says it runs on (a line of its log at start-up)."""
        if self.log.exists():
            for line in self.log.read_text(errors="replace").splitlines():
                if "event loop: " in line:
                    return line.split("event loop: ", 1)[1].strip()
        return "not in its log"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the daemon's log."""
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def print_profile(self, top: int = 25) -> None:
        """The profile's top entries by cumulative and by own time."""
        if self.stats is None:
            return
        if not self.stats.exists():
            print("\nno profile was written (the daemon did not exit cleanly)")
            return
        if self.save_to:
            shutil.copyfile(self.stats, self.save_to)
            print(f"\nraw profile kept in {self.save_to} (python -m pstats {self.save_to})")
        for key in ("cumulative", "tottime"):
            print(f"\n=== edge-proxy process profile ({self.clock} clock): top {top} by {key} ===")
            if self.clock == "wall":
                print("(wall time: the epoll 'poll' is the loop waiting, idle)")
            else:
                print("(CPU time; each call's clock read inflates functions called very often)")
            stats = pstats.Stats(str(self.stats), stream=sys.stdout)
            stats.strip_dirs().sort_stats(key).print_stats(top)


class Bench:
    """One benchmark run: a temp dir, the Gateway, the processes; all stopped at the end."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="edge-bench-"))
        self.gateway = Gateway()
        self.helpers: list[Helper] = []
        self.edge: Edge | None = None
        self.server_pid: int | None = None  # the Modbus servers' process, once started

    async def __aenter__(self) -> Bench:
        await self.gateway.start()
        return self

    async def helper(self, *argv: str) -> Helper:
        """Start a helper process (stopped with the bench)."""
        helper = await Helper.start(*argv)
        self.helpers.append(helper)
        return helper

    async def modbus_servers(self, links: int, units: int) -> list[int]:
        """A process serving ``links`` pymodbus TCP servers of ``units`` units; their ports."""
        argv = ("modbus-server", "--links", str(links), "--units", str(units))
        helper = await self.helper(str(HERE / "common.py"), *argv)
        self.server_pid = helper.pid
        return [int(p) for p in helper.ready["ports"]]

    async def responder(self, *options: str) -> Helper:
        """The baseline that answers COMMANDs over its own WebSocket (see :func:`responder`)."""
        helper = await self.helper(
            str(HERE / "common.py"), "responder", "--url", self.gateway.url, *options
        )
        await self.gateway.wait_peer("floor")
        return helper

    async def start_edge(self, tree: dict[str, Any]) -> Edge:
        """Start the daemon on ``tree`` (pointed at this Gateway) and wait for its REGISTER."""
        tree["gateway"]["url"] = self.gateway.url
        clock = self.args.profile_clock if self.args.profile else None
        self.edge = Edge(self.workdir, tree, profile=clock, loop=self.args.edge_loop)
        self.edge.save_to = getattr(self.args, "profile_save", None)
        await self.edge.start()
        assert self.edge.proc is not None
        joined = asyncio.ensure_future(self.gateway.wait_peer("edge", timeout=60))
        exited = asyncio.ensure_future(self.edge.proc.wait())
        await asyncio.wait({joined, exited}, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if not joined.done() or joined.exception() is not None:
            joined.cancel()
            raise RuntimeError(f"the edge never registered:\n{self.edge.log_tail()}")
        return self.edge

    async def take_turns(
        self,
        pids: dict[str, int],
        make: Callable[[int], dict[str, Any]],
        count: int,
        *,
        blocks: int,
        warm: int,
        in_flight: int = 1,
        seconds: float = 60.0,
    ) -> dict[str, Run]:
        """Warm each side up, then ``count`` commands per side in ``blocks`` turns, measured.

        ``pids`` maps each side (a Gateway peer) to its process. Each block is a closed loop
        of ``in_flight`` outstanding commands, cut at ``seconds``.
        """
        for side in pids:
            await self.gateway.closed_loop(side, make, max(warm, in_flight), in_flight)
        runs = {side: Run() for side in pids}
        for _ in range(blocks):
            for side, pid in pids.items():
                stretch = self.gateway.closed_loop(side, make, count // blocks, in_flight, seconds)
                runs[side].add(await measured(pid, stretch, self.server_pid))
        return runs

    def header(self) -> None:
        """The machine, and a warning when the numbers come from a profiled edge."""
        print(f"machine: {machine()}")
        loop = self.edge.event_loop() if self.edge is not None else "not started"
        print(f"edge event loop: {loop} (--loop {self.args.edge_loop})")
        if self.args.profile:
            print("(the edge ran under cProfile: its numbers are slowed down by it)")

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            for helper in reversed(self.helpers):
                await helper.close()
            if self.edge is not None:
                await self.edge.stop()
                if exc is not None:
                    print(f"--- edge log (end) ---\n{self.edge.log_tail()}", file=sys.stderr)
            await self.gateway.stop()
            if self.edge is not None and exc is None:
                self.edge.print_profile()
        finally:  # also when printing fails (a closed pipe)
            shutil.rmtree(self.workdir, ignore_errors=True)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark has."""
    p = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--profile", action="store_true", help="cProfile the edge process")
    p.add_argument(
        "--profile-clock",
        choices=["wall", "cpu"],
        default="wall",
        help="what --profile counts: wall time (python -m cProfile) or the process's CPU time",
    )
    p.add_argument(
        "--profile-save", metavar="FILE", help="also keep the raw profile (pstats) in FILE"
    )
    p.add_argument(
        "--edge-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="the edge's event loop (edge-proxy run --loop; auto: uvloop when installed)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny counts, a few seconds (for CI)")
    p.add_argument("--time-limit", type=float, default=600.0, help="give up after seconds")
    return p


def run_main(
    body: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace
) -> None:
    """Run a benchmark's body within its time limit."""
    asyncio.run(asyncio.wait_for(body(args), args.time_limit))


def machine() -> str:
    """One line about where this ran."""
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    version = sys.version.split()[0]
    return f"{os.cpu_count()} CPUs ({model}), Python {version}, load average {load}"


# ---------------------------------------------------------------- helper processes


async def modbus_server(links: int, units: int) -> None:
    """Serve ``links`` pymodbus TCP servers (one unit per device, the benchmark profile)."""
    from edge_proxy.config import ProfileConfig
    from edge_proxy_drivers.modbus.simulator import modbus_device

    profile = ProfileConfig.model_validate(PROFILE)
    servers: list[ModbusTcpServer] = []
    ports: list[int] = []
    for _ in range(links):
        server, port = await modbus_tcp_server(
            [modbus_device(u, profile) for u in range(1, units + 1)]
        )
        servers.append(server)
        ports.append(port)
    await serve_helper({"ports": ports})
    for server in servers:
        await server.shutdown()  # type: ignore[no-untyped-call]


async def modbus_tcp_server(devices: list[SimDevice]) -> tuple[ModbusTcpServer, int]:
    """A pymodbus TCP server of these units on a free loopback port, started; and its port."""
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusTcpServer

    server = ModbusTcpServer(devices, framer=FramerType.SOCKET, address=(HOST, 0))
    await server.serve_forever(background=True)
    listener = server.transport
    assert isinstance(listener, asyncio.Server)
    return server, int(listener.sockets[0].getsockname()[1])


async def responder(url: str, modbus_port: int | None, unit: int) -> None:
    """The floor: answer each COMMAND with one terminal, after one bare pymodbus call if asked.

    A websockets client (defaults, as the edge's) that says HELLO, then for each frame: parse
    the JSON, do the read or the write with a bare ``AsyncModbusTcpClient`` (or, without a
    Modbus port, with a dict, as the ``simulated`` driver does), send a ``command_response``.
    No validation, queue, state, log or ack: the libraries' cost and nothing else.
    """
    from pymodbus.client import AsyncModbusTcpClient
    from websockets.asyncio.client import connect

    client = None
    if modbus_port is not None:
        client = AsyncModbusTcpClient(HOST, port=modbus_port, timeout=2, retries=0)
        if not await client.connect():
            raise RuntimeError(f"no Modbus server on port {modbus_port}")
    memory: dict[str, Any] = {POINT: 0}

    async def answer(cmd: dict[str, Any]) -> dict[str, Any]:
        params = cmd["parameters"]
        if cmd["operationType"] == "write":
            value = params["values"][POINT]
            if client is not None:
                rsp = await client.write_register(ADDRESS, value, device_id=unit)
                if rsp.isError():
                    raise RuntimeError(f"Modbus write: {rsp}")
            memory[POINT] = value
            return {}
        if client is not None:
            rsp = await client.read_holding_registers(ADDRESS, count=1, device_id=unit)
            if rsp.isError():
                raise RuntimeError(f"Modbus read: {rsp}")
            memory[POINT] = rsp.registers[0]
        return {POINT: memory[POINT]}

    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "HELLO", "role": "floor"}))

        async def serve_frames() -> None:
            async for frame in ws:
                msg = json.loads(frame)
                result = await answer(msg["command"])
                reply = {
                    "type": "command_response",
                    "requestRef": msg["requestRef"],
                    "status": "completed",
                    "result": result,
                }
                await ws.send(json.dumps(reply))

        # whichever ends first: stdin closed (the driver is done) or the frames (an error)
        tasks = {asyncio.create_task(serve_frames()), asyncio.create_task(serve_helper({}))}
        done, rest = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in rest:
            task.cancel()
        for task in done:
            task.result()
    if client is not None:
        client.close()


def cpu_profile(stats: str, argv: list[str]) -> None:
    """Run ``edge_proxy argv`` under cProfile on the process CPU clock; write ``stats``."""
    import cProfile
    import runpy

    sys.argv = ["edge_proxy", *argv]
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    try:
        runpy.run_module("edge_proxy", run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        prof.disable()
        prof.dump_stats(stats)


def helper_main() -> None:
    """Entry point of the helper processes of this file."""
    p = argparse.ArgumentParser(description="benchmark helper process")
    sub = p.add_subparsers(dest="role", required=True)
    srv = sub.add_parser("modbus-server")
    srv.add_argument("--links", type=int, default=1)
    srv.add_argument("--units", type=int, default=1)
    rsp = sub.add_parser("responder")
    rsp.add_argument("--url", required=True)
    rsp.add_argument("--modbus-port", type=int)
    rsp.add_argument("--unit", type=int, default=1)
    prof = sub.add_parser("cpu-profile")
    prof.add_argument("stats")
    prof.add_argument("argv", nargs=argparse.REMAINDER)
    args = p.parse_args()
    if args.role == "cpu-profile":
        cpu_profile(args.stats, args.argv)
    elif args.role == "modbus-server":
        asyncio.run(modbus_server(args.links, args.units))
    else:
        asyncio.run(responder(args.url, args.modbus_port, args.unit))


if __name__ == "__main__":
    helper_main()
