"""The console's HTTP side without a browser: auth, bounds, the tester's endpoint, live streams,
and what the rest of the daemon sees of console commands (logs, metrics, the Gateway)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any

import aiohttp
import pytest

from edge_proxy.ops.daemon import Daemon
from tests.integration.console.conftest import ConsoleFactory
from tests.integration.faults.parts import poll_until
from tests.integration.support import Gateway

TOKEN = "tok-9f8e7d6c5b4a"


def url(daemon: Daemon, path: str) -> str:
    return f"http://127.0.0.1:{daemon.console_port}{path}"


async def fetch(
    daemon: Daemon, path: str, method: str = "GET", **kwargs: Any
) -> tuple[int, str, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url(daemon, path), **kwargs) as response,
    ):
        return response.status, await response.text(), dict(response.headers)


async def test_a_wrong_or_missing_token_answers_401_and_the_right_one_lets_in(
    console_edge: ConsoleFactory,
) -> None:
    daemon = await console_edge(token=TOKEN)
    for path in ("/api/overview", "/api/devices", "/api/devices/sim-01", "/api/events?topics=logs"):
        status, _, headers = await fetch(daemon, path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = await fetch(daemon, path, headers={"Authorization": "Bearer nope"})
        assert status == 401, path
    status, body, _ = await fetch(daemon, "/devices")
    assert status == 401 and 'name="token"' in body  # the login page, with status 401
    status, body, _ = await fetch(
        daemon, "/api/overview", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200 and '"edge-042"' in body
    status, _, _ = await fetch(daemon, "/api/command", "POST", json={})
    assert status == 401
    # the login form trades the token for a session cookie that is not the token
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(
            url(daemon, "/login"), data={"token": "wrong"}, allow_redirects=False
        ) as r:
            assert r.status == 401
        async with session.post(
            url(daemon, "/login"), data={"token": TOKEN, "next": "/devices"}, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/devices"
            cookie = r.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        async with session.get(url(daemon, "/api/overview")) as r:
            assert r.status == 200
        async with session.post(url(daemon, "/logout"), allow_redirects=False) as r:
            assert r.status == 303
        async with session.get(url(daemon, "/api/overview")) as r:
            assert r.status == 401


async def test_the_token_is_never_shown_and_never_logged(
    console_edge: ConsoleFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    daemon = await console_edge(token=TOKEN, allow_commands=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    await fetch(daemon, "/login", "POST", data={"token": TOKEN + "x"})
    seen = []
    for path in ("/", "/devices", "/device/sim-01", "/logs", "/config", "/login"):
        seen.append((await fetch(daemon, path, headers=auth))[1])
    for path in ("/api/overview", "/api/devices", "/api/devices/sim-01", "/api/logs"):
        seen.append((await fetch(daemon, path, headers=auth))[1])
    for name in ("app.js", "device.js", "login.js", "style.css"):
        seen.append((await fetch(daemon, f"/static/{name}"))[1])
    status, config, _ = await fetch(daemon, "/api/config", headers=auth)
    assert status == 200 and '"token":"**********"' in config
    seen.append(config)
    assert not [s for s in seen if TOKEN in s]
    assert TOKEN not in caplog.text
    assert "a login with a wrong token" in caplog.text


async def test_the_tester_answers_403_without_allow_commands(
    console_edge: ConsoleFactory,
) -> None:
    daemon = await console_edge()
    body = {"device": "sim-01", "kind": "read", "points": ["level"]}
    status, text, _ = await fetch(daemon, "/api/command", "POST", json=body)
    assert status == 403 and "allow_commands" in text
    status, text, _ = await fetch(daemon, "/api/devices/sim-01")
    assert status == 200 and '"form"' not in text and '"allowCommands":false' in text


async def test_console_commands_run_in_the_engine_are_tagged_and_stay_local(
    console_edge: ConsoleFactory, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    daemon = await console_edge(allow_commands=True)
    await poll_until(lambda: daemon.devices["sim-01"].state == "online", 5, "online")
    write = {"device": "sim-01", "kind": "write", "values": {"setpoint": 12}}
    status, text, _ = await fetch(daemon, "/api/command", "POST", json=write)
    assert status == 200 and '"status":"completed"' in text, text
    status, text, _ = await fetch(
        daemon,
        "/api/command",
        "POST",
        json={"device": "sim-01", "kind": "read", "points": ["setpoint"]},
    )
    assert '"values":{"setpoint":12}' in text
    # the engine's own checks answer, as for a Gateway command
    status, text, _ = await fetch(
        daemon,
        "/api/command",
        "POST",
        json={"device": "sim-01", "code": "SET_SPEED", "params": {"speed": 5000}},
    )
    assert status == 200 and '"status":"INVALID_PARAMETERS"' in text
    status, text, _ = await fetch(
        daemon, "/api/command", "POST", json={"device": "sim-01", "kind": "x"}
    )
    assert status == 400
    refs = [str(getattr(r, "request_ref", "")) for r in caplog.records]
    refs = [ref for ref in refs if ref]
    assert refs and all(ref.startswith("console:") for ref in refs)
    assert "console command SIMPLE write on sim-01 from 127.0.0.1" in caplog.text
    # never sent to the Gateway, nor queued for it
    await asyncio.sleep(0.2)
    assert not [f for f in gateway.frames if str(f.get("requestRef", "")).startswith("console:")]
    # the device page lists them with their messages
    status, text, _ = await fetch(daemon, "/api/devices/sim-01")
    assert text.count('"source":"console"') == 3 and '"type":"ack"' in text


async def test_console_commands_are_counted_by_source_in_metrics(
    gateway: Gateway, modbus: Any
) -> None:
    from tests.builders import make_config
    from tests.integration.console.conftest import console_tree

    tree = console_tree(gateway, modbus.port, allow_commands=True)
    tree["metrics"] = {"listen": "127.0.0.1:0"}
    daemon = Daemon(make_config(tree))
    await daemon.start()
    try:
        await poll_until(lambda: daemon.devices["sim-01"].state == "online", 5, "online")
        body = {"device": "sim-01", "kind": "read", "points": ["level"]}
        assert (await fetch(daemon, "/api/command", "POST", json=body))[0] == 200
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{daemon.metrics_port}/metrics") as r,
        ):
            text = await r.text()
        line = 'edge_commands_total{command_type="SIMPLE",source="console",status="completed"} 1.0'
        assert line in text or (
            'edge_commands_total{command_type="SIMPLE",status="completed",source="console"} 1.0'
            in text
        ), [x for x in text.splitlines() if x.startswith("edge_commands_total")]
    finally:
        await daemon.stop(grace=1.0)


async def test_requests_are_bounded(console_edge: ConsoleFactory) -> None:
    daemon = await console_edge(allow_commands=True, max_clients=2)
    big = {"device": "sim-01", "kind": "write", "values": {"setpoint": "x" * 70_000}}
    status, _, _ = await fetch(daemon, "/api/command", "POST", json=big)
    assert status == 413
    status, _, _ = await fetch(
        daemon, "/api/command", "POST", json={}, headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    status, _, _ = await fetch(daemon, "/api/command", "POST", data="x")
    assert status == 415
    status, _, _ = await fetch(daemon, "/api/events?topics=everything")
    assert status == 400
    status, _, headers = await fetch(daemon, "/api/overview")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    # at most max_clients live streams
    async with aiohttp.ClientSession() as session:
        streams = [await session.get(url(daemon, "/api/events?topics=logs")) for _ in range(2)]
        async with session.get(url(daemon, "/api/events?topics=logs")) as third:
            assert third.status == 503
        for s in streams:
            assert s.status == 200
            s.close()


async def test_a_stuck_browser_is_dropped_and_slows_nobody(console_edge: ConsoleFactory) -> None:
    daemon = await console_edge()
    console = daemon.console
    assert console is not None
    port = daemon.console_port
    assert port is not None
    # a client that asks for a stream and then never reads (a small receive buffer)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(stuck, ("127.0.0.1", port))
    await loop.sock_sendall(stuck, b"GET /api/events?topics=devices HTTP/1.1\r\nHost: x\r\n\r\n")
    await poll_until(lambda: len(console.streams.clients) == 1, 3, "the stuck stream")
    async with (
        aiohttp.ClientSession() as session,
        session.get(url(daemon, "/api/events?topics=devices")) as good,
    ):
        await poll_until(lambda: len(console.streams.clients) == 2, 3, "the good stream")
        seen = [0]

        async def read() -> None:
            async for line in good.content:
                if line.startswith(b"event: devices"):
                    seen[0] += 1

        reader = asyncio.create_task(read())
        payload = '"' + "x" * 60_000 + '"'
        slowest = 0.0
        for _ in range(150):
            started = time.monotonic()
            console.streams.publish("devices", "devices", payload)
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.004)
        await poll_until(lambda: console.streams.dropped >= 1, 3, "the stuck one dropped")
        assert slowest < 0.05, slowest  # publishing never waits for a browser
        await poll_until(lambda: seen[0] >= 150, 5, "every event to the good stream")
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    stuck.close()
    assert console.streams.dropped == 1
