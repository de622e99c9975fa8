"""Field operations: /metrics and /healthz, `edge-proxy status` / `call`, SIGHUP reload."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from edge_proxy.config import Config
from edge_proxy.ops.daemon import Daemon
from tests.builders import base_tree, command, make_config
from tests.integration.support import Gateway, acli, edge_cmd

EdgeFactory = Callable[[Config], Awaitable[Daemon]]


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as rsp:
            return int(rsp.status), rsp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


async def aget(url: str) -> tuple[int, str]:
    return await asyncio.get_running_loop().run_in_executor(None, http_get, url)


def metric(text: str, name: str, **labels: str) -> float:
    """The sample of ``name`` with exactly these labels, in whatever order they come (else 0)."""
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        sample_name, _, rest = sample.partition("{")
        if sample_name == name and dict(re.findall(r'(\w+)="([^"]*)"', rest)) == labels:
            return float(value)
    return 0.0


async def test_metrics_move_as_commands_run(gateway: Gateway, edge_factory: EdgeFactory) -> None:
    tree = base_tree(gateway.url)
    tree["metrics"] = {"listen": "127.0.0.1:0"}
    daemon = await edge_factory(make_config(tree))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    url = f"http://127.0.0.1:{daemon.metrics_port}"
    _, before = await aget(f"{url}/metrics")
    assert metric(before, "edge_gateway_up") == 1.0
    done_before = metric(
        before, "edge_commands_total", command_type="SIMPLE", status="completed", source="gateway"
    )
    for i in range(3):
        await gateway.send(command(f"m{i}", op="write", params={"values": {"mode": i}}))
        await gateway.terminal(f"m{i}")
    await gateway.send(command("bad", op="write", params={"values": {"door_state": 1}}))
    await gateway.terminal("bad")
    status, after = await aget(f"{url}/metrics")
    assert status == 200
    assert (
        metric(
            after,
            "edge_commands_total",
            command_type="SIMPLE",
            status="completed",
            source="gateway",
        )
        == done_before + 3
    )
    assert metric(after, "edge_commands_rejected_total", code="ACCESS_DENIED") == 1
    assert metric(after, "edge_device_transactions_total", device="pillar-001") >= 3
    assert metric(after, "edge_device_state", device="pillar-001", state="online") == 1
    assert metric(after, "edge_messages_received_total", type="COMMAND") >= 4
    assert metric(after, "edge_messages_sent_total", type="command_response") >= 3
    assert metric(after, "edge_command_duration_seconds_count", command_type="SIMPLE") >= 3
    assert "edge_device_transaction_seconds_bucket" in after
    assert "edge_outbox_messages" in after


async def test_healthz_flips_to_503_when_the_loop_is_blocked(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = base_tree(gateway.url)
    tree["metrics"] = {"listen": "127.0.0.1:0", "stall_after": "300ms"}
    daemon = await edge_factory(make_config(tree))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    url = f"http://127.0.0.1:{daemon.metrics_port}/healthz"
    assert (await aget(url))[0] == 200
    seen: list[int] = []
    probing = threading.Event()

    def probe_while_blocked() -> None:
        probing.set()
        time.sleep(0.8)  # the loop is blocked by now, for longer than stall_after
        seen.append(http_get(url)[0])

    thread = threading.Thread(target=probe_while_blocked)
    thread.start()
    probing.wait()
    time.sleep(1.6)  # block the event loop on purpose: this is the wedge being tested
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    assert seen == [503]
    for _ in range(50):  # once the loop runs again, health comes back
        if (await aget(url))[0] == 200:
            break
        await asyncio.sleep(0.05)
    assert (await aget(url))[0] == 200


async def test_healthz_during_backoff_is_200(edge_factory: EdgeFactory) -> None:
    tree = base_tree("ws://127.0.0.1:9")  # nothing listens there: the session backs off
    tree["metrics"] = {"listen": "127.0.0.1:0"}
    daemon = await edge_factory(make_config(tree))
    for _ in range(100):
        if daemon.session.failures:
            break
        await asyncio.sleep(0.02)
    status, body = await aget(f"http://127.0.0.1:{daemon.metrics_port}/healthz")
    assert status == 200 and "gateway" in body


async def test_status_and_call_against_a_running_daemon(
    gateway: Gateway, edge_factory: EdgeFactory, tmp_path: Path
) -> None:
    sock = str(tmp_path / "control.sock")
    tree = base_tree(gateway.url)
    tree["control"] = {"socket": sock}
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    daemon = await edge_factory(make_config(tree))
    await gateway.wait(lambda f: f["type"] == "REGISTER")

    out = await acli("status", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    assert f"gateway {gateway.url}: online" in out.stdout
    assert "pillar-slow" in out.stdout and "outbox 0 message(s)" in out.stdout

    out = await acli("call", "--socket", sock, "pillar-002", "SET_BRIGHTNESS", "brightness=33")
    assert out.returncode == 0, out.stderr
    assert "accepted" in out.stdout and "completed" in out.stdout
    adapter: Any = daemon.devices["pillar-002"].adapter
    assert adapter.values["brightness"] == 33

    out = await acli("call", "--socket", sock, "pillar-002", "read", "points=brightness")
    assert out.returncode == 0 and '"brightness":33' in out.stdout

    # the same validation as a Gateway command, and nothing reaches the Gateway
    out = await acli("call", "--socket", sock, "pillar-002", "SET_BRIGHTNESS", "brightness=333")
    assert out.returncode == 1
    assert "INVALID_PARAMETERS" in out.stdout
    assert adapter.values["brightness"] == 33
    assert not [f for f in gateway.frames if str(f.get("requestRef", "")).startswith("local:")]

    out = await acli("status", "--socket", sock, "--json")
    report = json.loads(out.stdout)
    assert report["gateway"]["state"] == "online"
    assert {d["deviceId"] for d in report["devices"]} == {"pillar-001", "pillar-002", "pillar-slow"}


async def test_status_without_a_daemon_says_so(tmp_path: Path) -> None:
    out = await acli("status", "--socket", str(tmp_path / "nobody.sock"))
    assert out.returncode == 1
    assert "is it running" in out.stderr


# ---------------------------------------------------------------- SIGHUP


async def test_sighup_reload(gateway: Gateway, tmp_path: Path) -> None:
    tree = base_tree(gateway.url)
    tree["links"]["slow"]["latency"] = "400ms"
    tree["links"]["sim2"] = {"driver": "simulated"}
    tree["links"]["fresh"] = {"driver": "simulated"}
    tree["devices"].append(
        {"id": "pillar-gone", "type": "pillar", "profile": "pillar", "link": "sim2"}
    )
    tree["control"] = {"socket": str(tmp_path / "c.sock")}
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(yaml.safe_dump(tree))
    proc = subprocess.Popen(
        edge_cmd("run", "--config", str(cfg), "--log-level", "info"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER", timeout=20)
        # queue commands on the untouched slow link, then reload while they wait
        for i in range(3):
            await gateway.send(
                command(
                    f"q{i}",
                    "pillar-slow",
                    op="write",
                    params={"values": {"mode": i + 1}},
                    timeout=10000,
                )
            )
        await gateway.wait(lambda f: f.get("requestRef") == "q2" and f["type"] == "ack")
        status = json.loads((await acli("status", "--config", str(cfg), "--json")).stdout)
        slow_before = next(d for d in status["devices"] if d["deviceId"] == "pillar-slow")

        # pillar-002 moves to another link, pillar-gone goes, pillar-new arrives
        tree["devices"] = [d for d in tree["devices"] if d["id"] != "pillar-gone"]
        next(d for d in tree["devices"] if d["id"] == "pillar-002")["link"] = "fresh"
        tree["devices"].append(
            {"id": "pillar-new", "type": "pillar", "profile": "pillar", "link": "sim"}
        )
        cfg.write_text(yaml.safe_dump(tree))
        proc.send_signal(signal.SIGHUP)
        gone = await gateway.wait(
            lambda f: (
                f["type"] == "device_status"
                and f["deviceId"] == "pillar-gone"
                and f["status"] == "disabled"
            )
        )
        assert gone[0]["reason"] == "removed from configuration"
        await gateway.wait(lambda f: f["type"] == "device_status" and f["deviceId"] == "pillar-new")
        # the queued commands of the untouched device all ran
        for i in range(3):
            assert (await gateway.terminal(f"q{i}", timeout=10))["status"] == "completed"
        status = json.loads((await acli("status", "--config", str(cfg), "--json")).stdout)
        devices = {d["deviceId"]: d for d in status["devices"]}
        assert set(devices) == {"pillar-001", "pillar-002", "pillar-slow", "pillar-new"}
        assert devices["pillar-002"]["link"] == "fresh"
        # the untouched device kept its link: no reconnect, its counters went on
        slow = devices["pillar-slow"]
        assert slow["counters"]["reconnects"] == slow_before["counters"]["reconnects"] == 0
        assert slow["counters"]["transactions"] >= slow_before["counters"]["transactions"] + 3
        await gateway.send(command("new-1", "pillar-new", op="read", params={"points": ["mode"]}))
        assert (await gateway.terminal("new-1"))["status"] == "completed"
        await gateway.send(command("gone-1", "pillar-gone", op="read"))
        assert (await gateway.terminal("gone-1"))["code"] == "UNKNOWN_DEVICE"

        # an invalid new config is rejected and the running one kept
        cfg.write_text("edge: {id: edge-001}\ngateway: {url: nope}\n")
        proc.send_signal(signal.SIGHUP)
        await gateway.send(
            command("after-bad", "pillar-new", op="read", params={"points": ["mode"]})
        )
        assert (await gateway.terminal("after-bad"))["status"] == "completed"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.get_running_loop().run_in_executor(
                None, lambda: proc.communicate(timeout=20)
            )
        finally:
            if proc.poll() is None:
                proc.kill()
    text = err.decode()
    assert "reload rejected" in text and "gateway.url" in text
    assert "Traceback" not in text


async def test_reload_in_process_keeps_the_same_link_object(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = base_tree(gateway.url)
    daemon = await edge_factory(make_config(tree))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    link_before = daemon.devices["pillar-001"].link
    assert link_before is not None
    connection_before = link_before.link
    tree["devices"] = [d for d in tree["devices"] if d["id"] != "pillar-002"]
    summary = await daemon.reload(make_config(tree))
    assert summary == {"added": [], "removed": ["pillar-002"], "changed": []}
    assert daemon.devices["pillar-001"].link is link_before
    assert link_before.link is connection_before
    assert "pillar-002" not in link_before.devices
