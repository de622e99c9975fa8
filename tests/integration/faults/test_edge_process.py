"""Faults of the edge process itself: SIGKILL with a spool, a full spool disk, SIGSTOP.

protocol.md, delivery guarantees 1 (exactly one terminal per accepted requestRef, also across
edge restarts; counted by messageId: a resend keeps its messageId) and 2 (a terminal is kept,
on disk too, until the Gateway is known to have it), and the issue's demand that a stopped
daemon never hangs `edge-proxy status`.
"""

from __future__ import annotations

import errno
import re
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.builders import command
from tests.integration.faults.conftest import EdgeFactory, ProxyFactory
from tests.integration.faults.edge import (
    PROBLEM_LINE,
    acked,
    add_device,
    all_answered,
    barrier,
    edge_tree,
    exactly_once_problems,
    pillar_profile,
    run_cli,
    terminal_ids,
    write_config,
)
from tests.integration.faults.parts import poll_until
from tests.integration.support import Gateway

pytestmark = pytest.mark.faults

TERMINAL_TYPES = ("command_response", "error")
WIDE_POINTS = 100  # a terminal of about 2.5 KB
FULL_COMMANDS = 150  # about 400 KB of terminals to spool: more than any slack in its files


def _register_count(gw: Gateway) -> int:
    return sum(1 for f in gw.frames if f.get("type") == "REGISTER")


# ---------------------------------------------------------------- SIGKILL with a spool


@pytest.mark.parametrize("link", ["open", "black-hole"])
async def test_sigkill_with_spool_answers_each_acked_command_once(
    link: str, gw: Gateway, proxies: ProxyFactory, edges: EdgeFactory, tmp_path: Path
) -> None:
    """Killed with commands in flight (and, with "black-hole", terminals sent into a dead link)."""
    proxy = await proxies(gw, tap=True)
    tree = edge_tree(
        proxy.url,
        ping_interval="300ms",
        ping_timeout="1s",
        open_timeout="1s",
        outbox={"spool": str(tmp_path / "spool.sqlite3")},
    )
    add_device(tree, "slow-1", "slow", {"driver": "simulated", "latency": "200ms"})
    cfg = write_config(tree, tmp_path / "edge.yaml")
    first = await edges(cfg)
    await gw.wait(lambda f: f["type"] == "REGISTER", timeout=20)

    refs = [f"k{i}" for i in range(10)]
    for i, ref in enumerate(refs):
        params = {"values": {"mode": i + 1}}
        await gw.send(command(ref, "slow-1", op="write", params=params, timeout=60000))
    await gw.wait(lambda f: f["type"] == "ack" and f["requestRef"] in refs, count=len(refs))
    await poll_until(lambda: len(terminal_ids(gw)) >= 2, 10, "the first terminals")

    def tapped_terminals() -> list[dict[str, Any]]:
        return [
            m
            for _, m in proxy.edge_messages()
            if m.get("type") in TERMINAL_TYPES and m.get("requestRef") in refs
        ]

    if link == "black-hole":
        proxy.set_mode("blackhole")
        sent = len(tapped_terminals())
        await poll_until(
            lambda: len(tapped_terminals()) >= sent + 2, 10, "terminals sent into the black hole"
        )
    assert await first.kill() == -signal.SIGKILL
    received_before = {f.get("messageId") for f in gw.frames}
    registers = _register_count(gw)
    faulty_conns = proxy.accepted
    await proxy.restore()

    second = await edges(cfg)
    await gw.wait(lambda f: f["type"] == "REGISTER", timeout=20, count=registers + 1)
    await poll_until(all_answered(gw, refs), 15, "a terminal for every acked command")
    await barrier(gw, "probe")

    assert acked(gw, refs) == refs
    problems = exactly_once_problems(gw, refs)
    assert not problems, f"requestRef -> terminal messageIds received: {problems}"
    lost = [
        (m.get("requestRef"), m.get("messageId"))
        for number, m in proxy.edge_messages()
        if number <= faulty_conns
        and m.get("type") in TERMINAL_TYPES
        and m.get("requestRef") in refs
        and m.get("messageId") not in received_before
    ]
    if link == "black-hole":
        assert lost, "setup: no terminal was sent into the black hole before the kill"
    received_ids = {f.get("messageId") for f in gw.frames}
    missing = [item for item in lost if item[1] not in received_ids]
    assert not missing, f"unconfirmed before the kill and never sent again: {missing}"
    assert second.running


# ---------------------------------------------------------------- a full disk under the spool


@pytest.fixture(params=["tmpfs", "rlimit"])
def tiny_disk(request: pytest.FixtureRequest, short_dir: Path) -> Iterator[Path | None]:
    """A 256 KiB tmpfs; None for the fallback (a file size limit on the edge process)."""
    if request.param == "rlimit":
        yield None
        return
    disk = short_dir / "disk"
    disk.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        why = getattr(exc, "stderr", None) or exc
        pytest.skip(f"cannot mount a tmpfs here ({why!r}); the rlimit case covers a full disk")
    try:
        yield disk
    finally:
        done = subprocess.run(["umount", str(disk)], capture_output=True, timeout=10, check=False)
        if done.returncode != 0:  # something still has a file open there: detach it anyway
            subprocess.run(
                ["umount", "-l", str(disk)], capture_output=True, timeout=10, check=False
            )


def _fill(directory: Path) -> Path:
    """Write a file until the file system has no room left."""
    filler = directory / "filler"
    block = b"\0" * 4096
    with filler.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return filler


async def test_full_spool_disk_never_strands_a_command(
    gw: Gateway, edges: EdgeFactory, tmp_path: Path, tiny_disk: Path | None
) -> None:
    spool = (tiny_disk or tmp_path) / "spool.sqlite3"
    tree = edge_tree(gw.url, outbox={"spool": str(spool)})
    tree["profiles"]["wide"] = pillar_profile(WIDE_POINTS)
    add_device(tree, "w-1", "sim", {"driver": "simulated"}, profile="wide")
    points = [f"p{i}" for i in range(WIDE_POINTS)]
    edge = await edges(write_config(tree, tmp_path / "edge.yaml"))
    await gw.wait(lambda f: f["type"] == "REGISTER", timeout=20)

    def read_all(ref: str) -> dict[str, Any]:
        return command(ref, "w-1", op="read", params={"points": points})

    for ref in ("ok-0", "ok-1"):
        await gw.send(read_all(ref))
        assert (await gw.terminal(ref))["status"] == "completed"
    mark = len(edge.output)
    filler = None
    if tiny_disk is not None:
        filler = _fill(tiny_disk)
    else:  # the same failure without a tmpfs: no spool file may grow any more
        files = [p for p in spool.parent.iterdir() if p.name.startswith(spool.name)]
        edge.limit_file_size(max(p.stat().st_size for p in files))

    refs = [f"full-{i}" for i in range(FULL_COMMANDS)]  # far more than the files have room for
    for ref in refs:
        await gw.send(read_all(ref))
    await poll_until(all_answered(gw, refs), 15, "a terminal for every command on a full disk")
    await barrier(gw, "probe")
    assert edge.running, "the daemon died on a full disk"
    problems = exactly_once_problems(gw, refs)
    assert not problems, f"requestRef -> terminal messageIds received: {problems}"
    await poll_until(
        lambda: PROBLEM_LINE.search(edge.output[mark:].decode(errors="replace")) is not None,
        10,
        "setup: a failed spool write, logged",
    )

    # the daemon is fine: commands still run, and do again once there is room
    await gw.send(read_all("after-full"))
    assert (await gw.terminal("after-full"))["status"] == "completed"
    if filler is not None:
        filler.unlink()
    else:
        edge.limit_file_size(resource.RLIM_INFINITY)
    await gw.send(read_all("after-room"))
    assert (await gw.terminal("after-room"))["status"] == "completed"
    assert edge.running


# ---------------------------------------------------------------- SIGSTOP under `edge-proxy status`

STATUS_BOUND = 15.0  # the issue: status never hangs on a daemon that does not answer
GAVE_UP = re.compile(
    r"time[ds]? ?out|not (respond|answer)|no (answer|response|reply)|unresponsive|hung|stopped",
    re.IGNORECASE,
)


async def test_status_gives_up_on_a_stopped_daemon_which_then_recovers(
    gw: Gateway, edges: EdgeFactory, tmp_path: Path, short_dir: Path
) -> None:
    sock = short_dir / "ctl.sock"
    tree = edge_tree(gw.url, str(sock))
    add_device(tree, "sim-1", "sim", {"driver": "simulated"})
    cfg = write_config(tree, tmp_path / "edge.yaml")
    edge = await edges(cfg)
    await gw.wait(lambda f: f["type"] == "REGISTER", timeout=20)
    await poll_until(sock.exists, 10, "the control socket")
    assert (await run_cli(["status", "--config", str(cfg)], STATUS_BOUND)).code == 0

    usage = await run_cli(["status", "--help"], STATUS_BOUND)
    args = ["status", "--config", str(cfg)]
    bound = STATUS_BOUND
    if "--timeout" in usage.stdout:
        args += ["--timeout", "2"]
        bound = 2 + 5.0
    edge.signal(signal.SIGSTOP)
    try:
        stuck = await run_cli(args, bound)
    finally:
        edge.signal(signal.SIGCONT)
    assert stuck.code is not None, f"`edge-proxy {' '.join(args)}` still waiting after {bound:g} s"
    assert stuck.code != 0, stuck
    assert "Traceback" not in stuck.stderr, stuck.stderr
    assert GAVE_UP.search(stuck.stderr), f"no clear message on stderr: {stuck.stderr!r}"

    # SIGCONT: the daemon answers again and runs commands
    again = await run_cli(["status", "--json", "--config", str(cfg)], STATUS_BOUND)
    assert again.code == 0, again
    await gw.send(command("after-stop", "sim-1", op="write", params={"values": {"mode": 3}}))
    assert (await gw.terminal("after-stop", timeout=15))["status"] == "completed"
    assert edge.running
