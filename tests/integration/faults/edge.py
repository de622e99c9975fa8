"""The edge as a separate process, its config file, and what the Gateway saw of it.

* :func:`write_config` validates a config tree with the real driver registry (a typo fails in
  the test, not in the child) and writes it as YAML.
* :class:`EdgeProcess` runs ``python -m edge_proxy run --config FILE``; its output goes through a
  pipe into a log file (a pipe is not subject to the child's RLIMIT_FSIZE) and into memory.
  It can be SIGKILLed, SIGSTOPped, restarted (a new :class:`EdgeProcess` on the same files),
  asked for its RSS, and have its file sizes capped.
* :func:`run_cli` runs another ``edge-proxy`` command with a hard bound.
* :func:`terminal_ids` and :func:`exactly_once_problems` read guarantee 1 off the Gateway's frames,
  counting terminals by ``messageId``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import resource
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge_proxy.config import ConfigError
from tests.builders import PILLAR_PROFILE, is_terminal, make_config
from tests.integration.support import Gateway

EDGE_ID = "edge-001"
#: lines of the text log format at these levels (``<ts> LEVEL   logger ...``)
PROBLEM_LINE = re.compile(r"^\S+ (ERROR|WARNING|CRITICAL)\s", re.MULTILINE)


def pillar_profile(extra_points: int = 0) -> dict[str, Any]:
    """The test pillar profile, with ``extra_points`` more holding registers (``p0``...)."""
    profile = copy.deepcopy(PILLAR_PROFILE)
    for i in range(extra_points):
        profile["points"][f"p{i}"] = {"table": "holding", "address": 120 + i, "access": "rw"}
    return profile


def edge_tree(url: str, control_socket: str | None = None, **gateway: Any) -> dict[str, Any]:
    """A config tree with no devices yet; short reconnect backoff and shutdown grace."""
    gw: dict[str, Any] = {
        "url": url,
        "heartbeat_interval": "30s",
        "reconnect": {"initial": "50ms", "max": "300ms", "jitter": 0.1},
    }
    gw.update(gateway)
    return {
        "edge": {"id": EDGE_ID, "name": "fault test edge"},
        "gateway": gw,
        "links": {},
        "profiles": {"pillar": pillar_profile()},
        "devices": [],
        "commands": {"shutdown_grace": "1s"},
        "control": (
            {"enabled": True, "socket": control_socket} if control_socket else {"enabled": False}
        ),
    }


def add_device(
    tree: dict[str, Any],
    dev_id: str,
    link: str,
    link_config: dict[str, Any] | None = None,
    *,
    profile: str = "pillar",
    unit: int = 1,
) -> None:
    """Add a device (and its link, when ``link_config`` is given) to a tree."""
    if link_config is not None:
        tree["links"][link] = link_config
    tree["devices"].append(
        {"id": dev_id, "type": "pillar", "profile": profile, "link": link, "unit": unit}
    )


def set_if_known(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> bool:
    """Set a config key that only newer builds know; leave it out where the model refuses it."""
    trial = copy.deepcopy(tree)
    node = trial
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    try:
        make_config(trial)
    except ConfigError:
        return False
    tree.clear()
    tree.update(trial)
    return True


def add_telemetry(tree: dict[str, Any], profile: str, interval: str, points: list[str]) -> str:
    """A poll group on a profile, reported every cycle; returns the key used.

    ``telemetry:`` is the contract (config.md); a build that does not have it yet still reads
    the older ``poll:``.
    """
    group = {"name": "flood", "interval": interval, "points": points, "report": "always"}
    if set_if_known(tree, ("profiles", profile, "telemetry"), [group]):
        return "telemetry"
    tree["profiles"][profile]["poll"] = {"interval": interval, "points": points}
    make_config(tree)
    return "poll"


def write_config(tree: dict[str, Any], path: Path) -> Path:
    """Validate ``tree`` as the daemon will, then write it as YAML."""
    make_config(tree)
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    return path


class EdgeProcess:
    """``python -m edge_proxy run`` on a config file, output kept in ``log_path`` and memory."""

    def __init__(self, config: Path, log_path: Path, *, file_size_limit: int | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.file_size_limit = file_size_limit
        self.proc: asyncio.subprocess.Process | None = None
        self.output = bytearray()
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        """The child's pid."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        """Whether the child has not exited."""
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> EdgeProcess:
        """Start the child."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge_proxy",
            "run",
            "--config",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._drain = asyncio.create_task(self._copy_output(), name=f"edge-output-{self.pid}")
        return self

    async def _copy_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.log_path.open("ab") as log:
            log.write(f"---- edge pid {self.proc.pid}\n".encode())
            while chunk := await self.proc.stdout.read(65536):
                self.output += chunk
                log.write(chunk)
                log.flush()

    def log_text(self) -> str:
        """Everything the child printed so far."""
        return self.output.decode("utf-8", errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal to the child."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the child to exit and its output to be read; its return code."""
        assert self.proc is not None
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._drain is not None:
            await asyncio.wait_for(self._drain, timeout)
        return code

    async def kill(self) -> int:
        """SIGKILL, and wait for the exit."""
        self.signal(signal.SIGKILL)
        return await self.wait_exit()

    async def stop(self) -> None:
        """SIGTERM (after SIGCONT, in case it is stopped), then SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drain, 5)
            if not self._drain.done():
                self._drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._drain

    def limit_file_size(self, limit: int) -> None:
        """From now on no file of the child may grow past ``limit`` bytes (RLIMIT_FSIZE).

        Only the soft limit, so that it can be lifted again without CAP_SYS_RESOURCE. Python
        ignores SIGXFSZ, so a write past it fails with EFBIG instead of killing the child; its
        output is a pipe, which the limit does not cover.
        """
        _, hard = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (limit, hard))

    def rss_kib(self) -> int:
        """VmRSS of the child, in KiB."""
        text = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS in /proc/{self.pid}/status")


@dataclass
class CliResult:
    """What one ``edge-proxy`` command did."""

    code: int | None  # None: killed after the bound
    stdout: str
    stderr: str
    elapsed: float


async def run_cli(args: Iterable[str], bound: float) -> CliResult:
    """Run ``python -m edge_proxy ARGS``; kill it if it has not returned within ``bound`` s."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_proxy",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), bound)
        code: int | None = proc.returncode
    except asyncio.TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        code = None
    return CliResult(
        code, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - started
    )


async def status_report(config: Path, bound: float = 10.0) -> dict[str, Any]:
    """``edge-proxy status --json`` of a running daemon."""
    result = await run_cli(["status", "--json", "--config", str(config)], bound)
    assert result.code == 0, f"edge-proxy status failed: {result}"
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    return report


async def control_status(socket_path: str, timeout: float = 5.0) -> dict[str, Any]:
    """The daemon's status report, read straight off its control socket (one JSON line)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_unix_connection(socket_path, limit=2**24), timeout
    )
    try:
        writer.write(b'{"op": "status"}\n')
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    report = json.loads(line)
    assert isinstance(report, dict), report
    return report


# ---------------------------------------------------------------- the Gateway's view


def terminal_ids(gateway: Gateway) -> dict[str, list[str]]:
    """requestRef -> the messageId of every terminal the Gateway received for it, in order."""
    out: dict[str, list[str]] = defaultdict(list)
    for frame in gateway.frames:
        ref = frame.get("requestRef")
        if isinstance(ref, str) and is_terminal(frame):
            out[ref].append(str(frame.get("messageId")))
    return out


def acked(gateway: Gateway, refs: Iterable[str] | None = None) -> list[str]:
    """The refs the Gateway got an ``accepted`` ack for (all of them, or those of ``refs``)."""
    wanted = set(refs) if refs is not None else None
    seen: dict[str, None] = {}
    for frame in gateway.frames:
        ref = frame.get("requestRef")
        if (
            frame.get("type") == "ack"
            and frame.get("status") == "accepted"
            and isinstance(ref, str)
            and (wanted is None or ref in wanted)
        ):
            seen[ref] = None
    return list(seen)


def exactly_once_problems(gateway: Gateway, refs: Iterable[str]) -> dict[str, list[str]]:
    """Refs whose terminal did not arrive exactly once (one messageId), with what did arrive."""
    ids = terminal_ids(gateway)
    return {ref: ids.get(ref, []) for ref in refs if len(set(ids.get(ref, []))) != 1}


def all_answered(gateway: Gateway, refs: Iterable[str]) -> Callable[[], bool]:
    """A predicate: every ref has at least one terminal at the Gateway."""
    wanted = list(refs)

    def check() -> bool:
        ids = terminal_ids(gateway)
        return all(ids.get(ref) for ref in wanted)

    return check


async def barrier(gateway: Gateway, name: str, timeout: float = 10.0) -> None:
    """A QUERY answered: every message the edge queued before it has been delivered.

    A QUERY's answer may itself be dropped by a full outbox (that is allowed), so an
    unanswered one is asked again under a new requestRef, until ``timeout``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    attempt = 0
    while True:
        ref = name if attempt == 0 else f"{name}.{attempt}"
        await gateway.send(
            {"type": "QUERY", "requestRef": ref, "query": "devices", "version": "1.0"}
        )
        wait = min(3.0, max(0.1, deadline - loop.time()))
        try:
            await gateway.terminal(ref, wait)
            return
        except asyncio.TimeoutError:
            if loop.time() >= deadline:
                raise AssertionError(
                    f"no answer to the QUERY {name} ({attempt + 1} tries) within {timeout:g} s"
                ) from None
        attempt += 1


def pid_alive(pid: int) -> bool:
    """Whether a process exists (and is not a zombie we already reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
