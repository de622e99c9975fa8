"""The console in a real browser: headless Chromium (Debian's) driven by Playwright.

Each test runs an edge with two Modbus TCP devices (a real pymodbus server) and simulated
ones, opens console pages, and checks what an operator would see. Screenshots of every page
are taken (``EDGE_CONSOLE_SCREENSHOTS=docs/console`` refreshes the README's).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edge_proxy.ops.daemon import Daemon
from tests.integration.console.conftest import ConsoleFactory, shots_dir
from tests.integration.faults.parts import poll_until
from tests.integration.modbus_servers import ModbusServer

VIEWPORT = {"width": 1360, "height": 860}


def base(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.console_port}"


async def page_of(browser: Any) -> Any:
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    return page


async def online(daemon: Daemon, *ids: str) -> None:
    await poll_until(
        lambda: all(daemon.devices[i].state == "online" for i in ids), 5, f"{ids} online"
    )


async def test_every_page_loads_and_is_photographed(
    console_edge: ConsoleFactory, modbus: ModbusServer, browser: Any, tmp_path: Path
) -> None:
    secret = "photo-token-123"
    daemon = await console_edge(allow_commands=True, token=secret)
    await online(daemon, "meter-01", "meter-02", "sim-01")
    await modbus.set(1, "holding", 10, [250])
    await modbus.set(1, "input", 0, [215])
    for value in (40, 44, 47, 45, 52, 58, 55, 61):  # a few samples for the charts
        await modbus.set(1, "holding", 11, [value])
        await poll_until(lambda: level(daemon) == value, 3, "sample")  # noqa: B023
    shots = shots_dir(tmp_path)
    page = await page_of(browser)
    url = base(daemon)

    await page.goto(url + "/")
    await page.wait_for_selector("#token")
    await page.screenshot(path=str(shots / "login.png"))
    await page.fill("#token", secret)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#card-gateway .badge[data-badge=online]")
    assert await page.text_content("#card-edge .big") == "edge-042"
    assert "/ 6" in (await page.text_content("#card-devices .big") or "")

    await modbus.stop()  # meter-01 and meter-02 go offline: the broken ones come first
    await page.wait_for_selector("#changes tr[data-state=offline]")
    await page.wait_for_function("() => document.getElementById('online').textContent === '3'")
    await page.screenshot(path=str(shots / "overview.png"), full_page=True)

    await page.goto(url + "/devices")
    await page.wait_for_selector("#rows tr")
    ids = await page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.device)")
    states = await page.eval_on_selector_all("#rows tr", "rows => rows.map(r => r.dataset.state)")
    assert ids == ["meter-01", "meter-02", "sim-01", "sim-02", "sim-03", "spare-01"]
    assert states == ["offline", "offline", "online", "online", "online", "disabled"]
    await page.screenshot(path=str(shots / "devices.png"), full_page=True)
    await page.fill("#filter", "pump")
    await page.wait_for_function("() => document.querySelectorAll('#rows tr').length === 3")

    await modbus.start()
    await online(daemon, "meter-01")
    await page.goto(url + "/device/meter-01")
    await page.wait_for_selector("#points tr[data-point=level] svg.spark path")
    await page.click("#tester button[data-kind=write]")
    await page.select_option("#tester-point", "setpoint")
    await page.fill("#tester-value", "300")
    await page.click("#tester-send")
    await page.wait_for_selector("#tester-status[data-status=completed]")
    await page.wait_for_selector("#commands .cmd")
    await page.wait_for_selector("#points tr[data-point=level] .badge[data-badge=good]")
    await page.screenshot(path=str(shots / "device.png"), full_page=True)

    await page.goto(url + "/logs")
    await page.wait_for_selector("#lines tr[data-level]")
    await page.screenshot(path=str(shots / "logs.png"), full_page=True)

    await page.goto(url + "/config")
    await page.wait_for_selector("#config")
    shown = await page.text_content("#config") or ""
    assert '"allow_commands": true' in shown and '"token": "**********"' in shown
    assert secret not in shown
    await page.screenshot(path=str(shots / "config.png"), full_page=True)
    assert page.errors == []
    for name in ("overview", "devices", "device", "logs", "config"):
        assert (shots / f"{name}.png").stat().st_size > 10_000


def level(daemon: Daemon) -> Any:
    return daemon.telemetry.values("meter-01").get("values", {}).get("level")


async def test_a_stopped_modbus_server_turns_its_device_red_within_2_s(
    console_edge: ConsoleFactory, modbus: ModbusServer, browser: Any
) -> None:
    daemon = await console_edge()
    await online(daemon, "meter-01", "meter-02")
    page = await page_of(browser)
    await page.goto(base(daemon) + "/devices")
    await page.wait_for_selector("tr[data-device=meter-01][data-state=online]")
    await page.wait_for_selector("#live.on")
    started = time.monotonic()
    await modbus.stop()
    await page.wait_for_selector("tr[data-device=meter-01][data-state=offline]", timeout=2000)
    took = time.monotonic() - started
    assert took < 2.0, took
    # red, and first in the table, without a reload
    color = await page.eval_on_selector(
        "tr[data-device=meter-01] td", "td => getComputedStyle(td).backgroundColor"
    )
    assert color == "rgb(253, 234, 234)"
    first = await page.eval_on_selector("#rows tr", "r => r.dataset.state")
    assert first == "offline"
    assert page.errors == []


async def test_live_values_follow_the_registers(
    console_edge: ConsoleFactory, modbus: ModbusServer, browser: Any
) -> None:
    daemon = await console_edge()
    await online(daemon, "meter-01")
    page = await page_of(browser)
    await page.goto(base(daemon) + "/device/meter-01")
    await page.wait_for_selector("#live.on")
    for value in (123, 456):
        await modbus.set(1, "holding", 11, [value])
        await page.wait_for_selector(
            f"#points tr[data-point=level] td.value[data-value='{value}']", timeout=3000
        )
    await modbus.set(1, "input", 0, [-55 & 0xFFFF])
    await page.wait_for_selector(
        "#points tr[data-point=temperature] td.value[data-value='-5.5']", timeout=3000
    )
    quality = await page.text_content("#points tr[data-point=level] .badge")
    assert quality == "good"
    assert page.errors == []


async def test_the_tester_writes_through_the_engine_and_shows_the_result(
    console_edge: ConsoleFactory, modbus: ModbusServer, browser: Any
) -> None:
    daemon = await console_edge(allow_commands=True)
    await online(daemon, "meter-01")
    page = await page_of(browser)
    await page.goto(base(daemon) + "/device/meter-01")
    await page.click("#tester button[data-kind=write]")
    await page.select_option("#tester-point", "setpoint")
    await page.fill("#tester-value", "321")
    await page.click("#tester-send")
    await page.wait_for_selector("#tester-status[data-status=completed]", timeout=5000)
    assert await modbus.get(1, "holding", 10) == [321]
    # the command's messages, live on the page, and the read-back of the written value
    await page.wait_for_selector("#commands .cmd .badge[data-badge=completed]")
    await page.wait_for_selector(
        "#points tr[data-point=setpoint] td.value[data-value='321']", timeout=3000
    )
    # a profile command with a parameter; the form knows its range from the profile
    await page.click("#tester button[data-kind=command]")
    await page.select_option("#tester-code", "SET_SPEED")
    assert await page.get_attribute("#param-speed", "max") == "1000"
    await page.fill("#param-speed", "2000")
    await page.click("#tester-send")
    assert await page.query_selector("#param-speed:invalid") is not None  # not sent
    await page.fill("#param-speed", "77")
    await page.click("#tester-send")
    await page.wait_for_selector("#tester-status[data-status=completed]", timeout=5000)
    assert await modbus.get(1, "holding", 10) == [77]
    assert page.errors == []


async def test_without_allow_commands_there_is_no_tester(
    console_edge: ConsoleFactory, browser: Any
) -> None:
    daemon = await console_edge()
    await online(daemon, "sim-01")
    page = await page_of(browser)
    await page.goto(base(daemon) + "/device/sim-01")
    await page.wait_for_selector("#points tr")
    assert await page.query_selector("#tester") is None
    status = await page.evaluate(
        """async () => (await fetch('/api/command', {method: 'POST',
             headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({device: 'sim-01', kind: 'read', points: ['level']})})).status"""
    )
    assert status == 403


async def test_a_token_is_needed_and_the_login_page_lets_one_in(
    console_edge: ConsoleFactory, browser: Any
) -> None:
    secret = "s3cr3t-console-token"
    daemon = await console_edge(token=secret, allow_commands=True)
    page = await page_of(browser)
    response = await page.goto(base(daemon) + "/devices")
    assert response is not None and response.status == 401
    await page.fill("#token", "wrong")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#login-error:not([hidden])")
    await page.fill("#token", secret)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#rows tr")  # back on the page asked for, logged in
    assert page.url.endswith("/devices")
    cookies = await page.context.cookies()
    (cookie,) = [c for c in cookies if c["name"] == "edge_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and secret not in cookie["value"]
    for path in ("/", "/devices", "/device/sim-01", "/logs", "/config"):
        await page.goto(base(daemon) + path)
        await page.wait_for_function("() => !document.getElementById('loading')")
        assert secret not in await page.content()
