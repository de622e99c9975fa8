"""Start, reload and shutdown under pressure; the CLI's control clients when the daemon is stuck.

* A reload that disables a device says so (``device_status`` ``disabled``); enabling it again
  says ``connecting``.
* Reloads are serialized: ten at once (or ten SIGHUPs) while commands run raise nothing and
  every command gets exactly one terminal. A new config is swapped in only once all its devices
  are built: a failure keeps the old config running, untouched.
* Shutdown drains within ``commands.shutdown_grace`` and leaves no task behind, also with a
  control client connected; the process exits 0 within the grace and a margin.
* ``edge-proxy status`` / ``call`` give up after ``--timeout`` on a daemon that does not answer.
* ``edge-proxy run`` never ends in a traceback: broken configs exit 2 like ``check``; a spool
  that cannot be opened and TLS files that cannot be loaded exit 2 naming their key; a control
  socket that cannot be created is logged and the daemon runs on without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from edge_proxy.config import Config
from edge_proxy.drivers import registry
from edge_proxy.ops.daemon import Daemon, ReloadRefused
from tests.builders import base_tree, command, is_terminal, make_config
from tests.configs import BROKEN_CASES, BROKEN_DIR, has_error
from tests.integration.support import Gateway, acli, edge_cmd

EdgeFactory = Callable[[Config], Awaitable[Daemon]]
TESTS_DIR = Path(__file__).resolve().parents[1]


def terminals(gateway: Gateway, ref: str) -> list[dict[str, Any]]:
    return [f for f in gateway.of(ref) if is_terminal(f)]


def statuses(gateway: Gateway, device: str) -> list[tuple[str, str | None]]:
    return [
        (f["status"], f.get("previous"))
        for f in gateway.frames
        if f["type"] == "device_status" and f["deviceId"] == device
    ]


async def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> tuple[int, str]:
    """SIGTERM, wait, return (exit code, stderr)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    try:
        _, err = await loop.run_in_executor(None, lambda: proc.communicate(timeout=timeout))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode()


def _run_tree(tmp_path: Path, tree: dict[str, Any]) -> Path:
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    return cfg


@dataclass
class EdgeRun:
    """An ``edge-proxy run`` subprocess; ``code`` and ``err`` (its stderr) once it has stopped."""

    proc: subprocess.Popen[bytes]
    config: Path
    code: int | None = None
    err: str = ""


@contextlib.asynccontextmanager
async def running_edge(
    gateway: Gateway, tmp_path: Path, tree: dict[str, Any]
) -> AsyncIterator[EdgeRun]:
    """``edge-proxy run`` on ``tree`` (written to tmp_path/edge.yaml), once it has registered.

    It is stopped with SIGTERM when the block ends, however it ends.
    """
    config = _run_tree(tmp_path, tree)
    proc = subprocess.Popen(edge_cmd("run", "--config", str(config)), stderr=subprocess.PIPE)
    run = EdgeRun(proc, config)
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER", timeout=20)
        yield run
    finally:
        run.code, run.err = await stop_process(proc)


def own_tasks(before: set[asyncio.Task[Any]]) -> list[str]:
    """Tasks that are still pending and were not there before (the Gateway's left out)."""
    return [
        t.get_name() + " " + repr(t.get_coro())
        for t in asyncio.all_tasks() - before
        if not t.done() and t is not asyncio.current_task() and "websockets" not in repr(t)
    ]


# ---------------------------------------------------------------- reload: disabled devices


async def test_a_reload_that_disables_a_device_sends_its_device_status_disabled(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = base_tree(gateway.url)
    daemon = await edge_factory(make_config(tree))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    await gateway.send(command("r1", "pillar-002", op="read", params={"points": ["mode"]}))
    assert (await gateway.terminal("r1"))["status"] == "completed"
    assert daemon.devices["pillar-002"].state == "online"
    seen = len(statuses(gateway, "pillar-002"))

    tree["devices"][1]["enabled"] = False
    summary = await daemon.reload(make_config(tree))
    assert summary["changed"] == ["pillar-002"]
    frame = (
        await gateway.wait(
            lambda f: (
                f["type"] == "device_status"
                and f["deviceId"] == "pillar-002"
                and f["status"] == "disabled"
            )
        )
    )[0]
    assert frame["previous"] == "online"
    assert "reload" in frame["reason"]
    await gateway.send(command("r2", "pillar-002", op="read", params={"points": ["mode"]}))
    assert (await gateway.terminal("r2"))["status"] == "failed"

    tree["devices"][1]["enabled"] = True
    await daemon.reload(make_config(tree))
    await gateway.send(command("r3", "pillar-002", op="read", params={"points": ["mode"]}))
    assert (await gateway.terminal("r3"))["status"] == "completed"
    await gateway.wait(
        lambda f: f["type"] == "device_status" and f["deviceId"] == "pillar-002", count=seen + 3
    )
    assert statuses(gateway, "pillar-002")[seen:] == [
        ("disabled", "online"),
        ("connecting", "disabled"),
        ("online", "connecting"),
    ]


async def test_a_reload_that_restarts_an_online_device_tells_the_gateway(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = base_tree(gateway.url)
    tree["links"]["fresh"] = {"driver": "simulated"}
    daemon = await edge_factory(make_config(tree))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    await gateway.send(command("r1", "pillar-002", op="read", params={"points": ["mode"]}))
    assert (await gateway.terminal("r1"))["status"] == "completed"
    seen = len(statuses(gateway, "pillar-002"))
    tree["devices"][1]["link"] = "fresh"
    await daemon.reload(make_config(tree))
    # the new runtime starts over: the Gateway hears it, not a silent "online" -> "online"
    await gateway.wait(
        lambda f: f["type"] == "device_status" and f["deviceId"] == "pillar-002", count=seen + 2
    )
    assert statuses(gateway, "pillar-002")[seen:] == [
        ("connecting", "online"),
        ("online", "connecting"),
    ]


# ---------------------------------------------------------------- reload: serialized


def _variant(url: str, i: int) -> Config:
    """Configs that differ in pillar-002 (link, enabled) and in the presence of pillar-x."""
    tree = base_tree(url)
    tree["links"]["fresh"] = {"driver": "simulated"}
    tree["links"]["slow"]["latency"] = "50ms"
    dev2 = tree["devices"][1]
    dev2["link"] = "fresh" if i % 2 else "sim"
    dev2["enabled"] = i % 3 != 2
    if i % 4 == 1:
        tree["devices"].append(
            {"id": "pillar-x", "type": "pillar", "profile": "pillar", "link": "fresh"}
        )
    return make_config(tree)


async def test_ten_reloads_at_once_while_commands_run_give_each_command_one_terminal(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    daemon = await edge_factory(_variant(gateway.url, 0))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    refs = []
    for i in range(12):
        for dev in ("pillar-001", "pillar-slow", "pillar-002"):
            ref = f"c{i}-{dev}"
            refs.append(ref)
            await gateway.send(
                command(ref, dev, op="write", params={"values": {"mode": i}}, timeout=20000)
            )
    results = await asyncio.gather(
        *(daemon.reload(_variant(gateway.url, i)) for i in range(1, 11)), return_exceptions=True
    )
    assert [r for r in results if isinstance(r, BaseException)] == []
    for ref in refs:
        await gateway.terminal(ref, timeout=20)
    await asyncio.sleep(0.3)  # a second terminal would have come by now
    for ref in refs:
        assert len(terminals(gateway, ref)) == 1, gateway.of(ref)
        if "pillar-002" not in ref:  # untouched devices: every command ran
            assert terminals(gateway, ref)[0]["status"] == "completed", gateway.of(ref)
    # the last config is the one running, exactly
    assert daemon.config == _variant(gateway.url, 10)
    assert set(daemon.devices) == {d.id for d in daemon.config.devices}
    assert daemon.engine.devices == daemon.devices
    linked = {i for link in daemon.links.values() for i in link.devices}
    assert linked == {d.id for d in daemon.config.devices if d.enabled}
    await gateway.send(command("after", "pillar-001", op="read", params={"points": ["mode"]}))
    assert (await gateway.terminal("after"))["status"] == "completed"


async def test_ten_sighups_in_a_row_while_commands_run(gateway: Gateway, tmp_path: Path) -> None:
    tree = base_tree(gateway.url)
    tree["links"]["slow"]["latency"] = "100ms"
    tree["links"]["fresh"] = {"driver": "simulated"}
    async with running_edge(gateway, tmp_path, tree) as edge:
        refs = []
        for i in range(10):
            for dev in ("pillar-001", "pillar-slow"):
                refs.append(f"h{i}-{dev}")
                await gateway.send(
                    command(
                        refs[-1], dev, op="write", params={"values": {"mode": i}}, timeout=20000
                    )
                )
        for i in range(10):
            tree["devices"][1]["link"] = "fresh" if i % 2 else "sim"
            edge.config.write_text(yaml.safe_dump(tree))
            edge.proc.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.001)
        for ref in refs:
            assert (await gateway.terminal(ref, timeout=20))["status"] == "completed"
        await asyncio.sleep(0.3)
        assert all(len(terminals(gateway, ref)) == 1 for ref in refs)
        await gateway.send(command("last", "pillar-002", op="read", params={"points": ["mode"]}))
        assert (await gateway.terminal("last"))["status"] == "completed"
    assert "Traceback" not in edge.err, edge.err
    assert edge.code == 0, edge.err
    assert edge.err.count("configuration reloaded") >= 1


# ---------------------------------------------------------------- reload: build first, then swap


class _FailingRegistry:
    """The real registry, but the simulated driver cannot build a device named pillar-bad."""

    def __init__(self) -> None:
        base: Any = registry.get("simulated")

        class BadDevice(base.device_class):  # type: ignore[misc]
            def __init__(self, link: Any, config: Any, profile: Any) -> None:
                if config.id == "pillar-bad":
                    raise RuntimeError("no such port for pillar-bad")
                super().__init__(link, config, profile)

        class Driver(base):  # type: ignore[misc]
            device_class: ClassVar[Any] = BadDevice

        self.driver = Driver

    def get(self, name: str) -> Any:
        return self.driver if name == "simulated" else registry.get(name)


async def test_a_reload_whose_devices_cannot_be_built_keeps_the_old_config_running(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = base_tree(gateway.url)
    tree["links"]["fresh"] = {"driver": "simulated"}
    old = make_config(tree)
    daemon = await edge_factory(old)
    daemon.drivers = _FailingRegistry()  # type: ignore[assignment]
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    for ref, dev in (("w1", "pillar-002"), ("w2", "pillar-slow")):
        await gateway.send(command(ref, dev, op="read", params={"points": ["mode"]}))
        await gateway.terminal(ref)
    seen = sum(f["type"] == "device_status" for f in gateway.frames)
    devices_before = dict(daemon.devices)
    links_before = dict(daemon.links)
    link_002 = daemon.devices["pillar-002"].link

    # pillar-002 moves, pillar-slow goes, pillar-bad cannot be built
    tree["devices"][1]["link"] = "fresh"
    tree["devices"] = [d for d in tree["devices"] if d["id"] != "pillar-slow"]
    tree["devices"].append(
        {"id": "pillar-bad", "type": "pillar", "profile": "pillar", "link": "fresh"}
    )
    with pytest.raises(ReloadRefused, match="pillar-bad"):
        await daemon.reload(make_config(tree))
    assert daemon.config is old
    assert daemon.devices == devices_before
    assert daemon.links == links_before
    assert daemon.engine.devices == devices_before
    assert daemon.devices["pillar-002"].link is link_002
    assert link_002 is not None and "pillar-002" in link_002.devices
    for ref, dev in (("k1", "pillar-slow"), ("k2", "pillar-002")):
        await gateway.send(command(ref, dev, op="read", params={"points": ["mode"]}))
        assert (await gateway.terminal(ref))["status"] == "completed"
    assert sum(f["type"] == "device_status" for f in gateway.frames) == seen


async def test_a_sighup_whose_devices_cannot_be_built_is_logged_and_the_daemon_runs_on(
    gateway: Gateway, tmp_path: Path
) -> None:
    """A line profile whose terminator the encoding cannot write used to fail while building."""
    tree = base_tree(gateway.url)
    async with running_edge(gateway, tmp_path, tree) as edge:
        tree["profiles"]["line"] = {
            "line": {"terminator": "\u00b6", "encoding": "ascii"},
            "commands": {"PING": {"request": "PING"}},
        }
        tree["devices"].append(
            {
                "id": "pillar-line",
                "profile": "line",
                "link": {"driver": "line-tcp", "host": "127.0.0.1", "port": 9},
            }
        )
        edge.config.write_text(yaml.safe_dump(tree))
        edge.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        await gateway.send(command("k1", "pillar-001", op="read", params={"points": ["mode"]}))
        assert (await gateway.terminal("k1"))["status"] == "completed"
    assert edge.code == 0 and "Traceback" not in edge.err, edge.err
    assert "reload rejected" in edge.err and "profiles.line.line.terminator" in edge.err


# ---------------------------------------------------------------- shutdown


@pytest.fixture
async def control_path(tmp_path: Path) -> AsyncIterator[str]:
    # a short path: a Unix socket path has a length limit (about 100 bytes)
    path = f"/tmp/ep-{os.getpid()}-{id(tmp_path) % 100000}.sock"
    yield path
    if os.path.exists(path):
        os.unlink(path)


async def test_stop_drains_within_the_grace_and_leaves_no_task_behind(
    gateway: Gateway, control_path: str
) -> None:
    before = asyncio.all_tasks()
    tree = base_tree(gateway.url)
    tree["links"]["slow"]["latency"] = "5s"
    tree["commands"] = {"shutdown_grace": "500ms"}
    tree["control"] = {"socket": control_path}
    daemon = Daemon(make_config(tree))
    await daemon.start()
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    await gateway.send(command("long", "pillar-slow", op="read", timeout=30000))
    await gateway.send(command("short", "pillar-001", op="read", timeout=30000))
    await gateway.wait(lambda f: f.get("requestRef") == "long" and f["type"] == "ack")
    # an idle control client and one waiting for a long local command
    _, idle = await asyncio.open_unix_connection(control_path)
    reader, caller = await asyncio.open_unix_connection(control_path)
    frame = command("x", "pillar-slow", op="read", timeout=30000)
    caller.write(json.dumps({"op": "call", "frame": frame}).encode() + b"\n")
    await caller.drain()
    assert json.loads(await reader.readline())["status"] == "accepted"

    started = time.monotonic()
    await daemon.stop()
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 2.0, elapsed
    assert own_tasks(before) == []
    # each command got its one terminal; the local caller got its own and then EOF
    assert terminals(gateway, "short")[0]["status"] == "completed"
    assert len(terminals(gateway, "long")) == 1
    lines = [json.loads(line) for line in (await reader.read()).splitlines()]
    assert [m["type"] for m in lines if is_terminal(m)] == ["command_response"]
    assert not os.path.exists(control_path)
    idle.close()
    caller.close()


async def test_stop_with_an_idle_control_client_is_not_delayed(
    gateway: Gateway, control_path: str
) -> None:
    before = asyncio.all_tasks()
    tree = base_tree(gateway.url)
    tree["control"] = {"socket": control_path}
    daemon = Daemon(make_config(tree))
    await daemon.start()
    clients = [await asyncio.open_unix_connection(control_path) for _ in range(3)]
    clients[0][1].write(b'{"op": "sta')  # half a request, never finished
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await daemon.stop(grace=1.0)
    assert time.monotonic() - started < 1.0
    assert own_tasks(before) == []
    for reader, writer in clients:
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the daemon
        writer.close()


async def test_sigterm_exits_0_within_the_grace_with_a_command_on_the_wire(
    gateway: Gateway, tmp_path: Path
) -> None:
    cfg = tmp_path / "edge.yaml"
    tree = base_tree(gateway.url)
    tree["links"]["slow"]["latency"] = "20s"
    tree["commands"] = {"shutdown_grace": "1s"}
    cfg.write_text(yaml.safe_dump(tree))
    proc = subprocess.Popen(edge_cmd("run", "--config", str(cfg)), stderr=subprocess.PIPE)
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER", timeout=20)
        await gateway.send(command("long", "pillar-slow", op="read", timeout=60000))
        await gateway.wait(lambda f: f.get("requestRef") == "long" and f["type"] == "ack")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code, err = await stop_process(proc, timeout=1 + 5)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, err
    assert elapsed < 1 + 4, elapsed
    assert "Traceback" not in err
    assert len(terminals(gateway, "long")) == 1


# ---------------------------------------------------------------- status / call time out


@pytest.fixture
def silent_socket() -> Iterator[str]:
    """A Unix socket that accepts connections and never answers."""
    path = f"/tmp/ep-silent-{os.getpid()}.sock"
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    done.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()
    os.unlink(path)


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--timeout", "1"],
        ["status", "--json", "--timeout", "1"],
        ["call", "--timeout", "1", "--edge", "edge-001", "pillar-001", "read"],
        ["call", "--timeout", "1", "pillar-001", "read"],  # asks the edge id first
    ],
    ids=["status", "status-json", "call", "call-asking-the-edge-id"],
)
async def test_status_and_call_give_up_on_a_socket_that_never_answers(
    silent_socket: str, args: list[str]
) -> None:
    started = time.monotonic()
    out = await acli(*args[:1], "--socket", silent_socket, *args[1:], timeout=30)
    elapsed = time.monotonic() - started
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr
    assert f"edge-proxy at {silent_socket} did not answer within" in out.stderr
    # the command's own timeout plus the margin for its terminal, plus Python's start-up
    assert elapsed < (1 + 5 if args[0] == "call" else 1) + 5, elapsed


async def test_status_gives_up_on_a_stopped_daemon(gateway: Gateway, tmp_path: Path) -> None:
    sock = str(tmp_path / "c.sock")
    tree = base_tree(gateway.url)
    tree["control"] = {"socket": sock}
    async with running_edge(gateway, tmp_path, tree) as edge:
        cfg = str(edge.config)
        try:
            assert (await acli("status", "--config", cfg)).returncode == 0
            edge.proc.send_signal(signal.SIGSTOP)
            started = time.monotonic()
            out = await acli("status", "--config", cfg, "--timeout", "1", timeout=30)
            assert time.monotonic() - started < 1 + 5
            assert out.returncode == 1 and "did not answer within 1s" in out.stderr
            assert "Traceback" not in out.stderr
            edge.proc.send_signal(signal.SIGCONT)
            assert (await acli("status", "--config", cfg)).returncode == 0
        finally:
            edge.proc.send_signal(signal.SIGCONT)
    assert edge.code == 0 and "Traceback" not in edge.err, edge.err


# ---------------------------------------------------------------- run: no traceback, ever


def test_run_on_every_broken_config_exits_2_without_a_traceback() -> None:
    env = {**os.environ, "EDGE_TOKEN": ""}
    env.pop("EDGE_PROXY_TEST_UNSET_TOKEN", None)
    procs = {
        name: subprocess.Popen(
            edge_cmd("run", "--config", str(BROKEN_DIR / name)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=TESTS_DIR,
        )
        for name, _, _ in BROKEN_CASES
    }
    for name, path, message in BROKEN_CASES:
        out, err = procs[name].communicate(timeout=60)
        assert "Traceback" not in out + err, (name, err)
        assert procs[name].returncode == 2, (name, err)
        assert has_error(err.splitlines(), path, message), (name, err)


async def test_run_with_a_spool_that_cannot_be_opened_exits_2_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool's directory should be")
    tree = base_tree()
    tree["gateway"]["outbox"] = {"spool": str(blocker / "spool.sqlite3")}
    out = await acli("run", "--config", str(_run_tree(tmp_path, tree)), timeout=30)
    assert "Traceback" not in out.stderr
    assert out.returncode == 2, out.stderr
    assert "gateway.outbox.spool" in out.stderr and str(blocker / "spool.sqlite3") in out.stderr


async def test_run_with_a_spool_in_a_missing_directory_creates_it(
    gateway: Gateway, tmp_path: Path
) -> None:
    spool = tmp_path / "new" / "dirs" / "spool.sqlite3"
    tree = base_tree(gateway.url)
    tree["gateway"]["outbox"] = {"spool": str(spool)}
    async with running_edge(gateway, tmp_path, tree) as edge:
        pass
    assert edge.code == 0 and "Traceback" not in edge.err, edge.err
    assert spool.exists()


async def test_run_with_tls_files_that_are_not_pem_exits_2_naming_gateway_tls(
    tmp_path: Path,
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("this is not a certificate\n")
    tree = base_tree("wss://127.0.0.1:9")
    tree["gateway"]["tls"] = {"ca_file": str(ca)}
    out = await acli("run", "--config", str(_run_tree(tmp_path, tree)), timeout=30)
    assert "Traceback" not in out.stderr
    assert out.returncode == 2, out.stderr
    assert "gateway.tls" in out.stderr


@pytest.mark.parametrize("where", ["under-a-file", "too-long"])
async def test_run_with_a_control_socket_that_cannot_be_created_logs_it_and_runs_on(
    gateway: Gateway, tmp_path: Path, where: str
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    path = blocker / "c.sock" if where == "under-a-file" else tmp_path / ("x" * 120) / "c.sock"
    tree = base_tree(gateway.url)
    tree["control"] = {"socket": str(path)}
    async with running_edge(gateway, tmp_path, tree) as edge:
        await gateway.send(command("k1", "pillar-001", op="read", params={"points": ["mode"]}))
        assert (await gateway.terminal("k1"))["status"] == "completed"
    assert edge.code == 0 and "Traceback" not in edge.err, edge.err
    assert "control socket" in edge.err and str(path) in edge.err


async def test_a_control_socket_path_that_is_a_regular_file_is_left_alone(
    gateway: Gateway, tmp_path: Path
) -> None:
    precious = tmp_path / "edge.yaml.bak"
    precious.write_text("an operator's file")
    tree = base_tree(gateway.url)
    tree["control"] = {"socket": str(precious)}
    async with running_edge(gateway, tmp_path, tree) as edge:
        pass
    assert edge.code == 0 and "Traceback" not in edge.err, edge.err
    assert precious.read_text() == "an operator's file"
    assert "is not a socket" in edge.err
