"""The drivers' simulators as `edge-proxy simulate` runs them: serial lines on ptys, fallbacks."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edge_proxy.cli.probe import probe
from edge_proxy.cli.simulate import Simulator
from edge_proxy.config import Config, validate_tree
from edge_proxy.drivers import SerialAddress, TcpAddress, registry
from edge_proxy.ops.daemon import Daemon
from edge_proxy_drivers.line import LineSerialDriver
from tests.builders import line_profile
from tests.integration.support import Gateway, free_port

MODBUS_PROFILE: dict[str, Any] = {
    "points": {
        "brightness": {"table": "holding", "address": 101, "access": "rw", "max": 100},
        "temperature": {"table": "input", "address": 0, "type": "int16", "scale": 0.1},
        "relay": {"table": "coil", "address": 0, "access": "rw"},
    }
}
# health: what the daemon asks on its own; without it a line device stays "connecting"
LINE_PROFILE = line_profile({"request": "STS?"})


def make(
    links: dict[str, Any], devices: list[dict[str, Any]], url: str = "ws://127.0.0.1:9"
) -> Config:
    tree = {
        "edge": {"id": "edge-sim"},
        "gateway": {"url": url, "reconnect": {"initial": "50ms", "max": "200ms"}},
        "links": links,
        "profiles": {"mb": MODBUS_PROFILE, "txt": LINE_PROFILE},
        "devices": [{"type": "pillar", **d} for d in devices],
        "control": {"enabled": False},
    }
    return validate_tree(tree, registry.check_link)


def serial_config(folder: Path, url: str = "ws://127.0.0.1:9") -> Config:
    """An RS-485 Modbus RTU line with two units, an ASCII line and a text line, all serial."""
    links = {
        "rs485": {"driver": "modbus-rtu", "port": str(folder / "ttyRS485"), "timeout": "1s"},
        "ascii": {"driver": "modbus-ascii", "port": str(folder / "ttyASCII"), "timeout": "1s"},
        "text": {"driver": "line-serial", "port": str(folder / "ttyTEXT"), "timeout": "1s"},
    }
    devices: list[dict[str, Any]] = [
        {"id": "rtu-1", "profile": "mb", "link": "rs485", "unit": 1},
        {"id": "rtu-2", "profile": "mb", "link": "rs485", "unit": 2},
        {"id": "asc-7", "profile": "mb", "link": "ascii", "unit": 7},
        {"id": "txt-1", "profile": "txt", "link": "text"},
        {"id": "mem-1", "profile": "mb", "link": {"driver": "simulated"}},
    ]
    return make(links, devices, url)


@pytest.fixture
async def started() -> AsyncIterator[list[Simulator]]:
    """Simulators a test started; all stopped at teardown."""
    sims: list[Simulator] = []
    yield sims
    for sim in sims:
        await sim.stop()


async def start(sims: list[Simulator], config: Config, **kwargs: Any) -> Simulator:
    sim = Simulator(config, **kwargs)
    sims.append(sim)
    await sim.start()
    return sim


async def test_serial_links_are_served_on_their_configured_paths(
    tmp_path: Path, gateway: Gateway, started: list[Simulator]
) -> None:
    config = serial_config(tmp_path, gateway.url)
    sim = await start(started, config)
    assert set(sim.served) == {"rtu-1", "rtu-2", "asc-7", "txt-1"}  # `simulated` needs none
    assert sim.notes == []
    for name in ("ttyRS485", "ttyASCII", "ttyTEXT"):
        path = tmp_path / name
        assert path.is_symlink() and os.readlink(path).startswith("/dev/pts/"), path
    assert sim.served["rtu-1"].address == SerialAddress(str(tmp_path / "ttyRS485"))
    assert sim.rewrite() == config  # nothing to point elsewhere

    # the daemon, on the unedited config, brings every device online through the ptys
    daemon = Daemon(config)
    await daemon.start()
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER")

        def online(frame: dict[str, Any]) -> bool:
            return bool(frame["type"] == "device_status" and frame["status"] == "online")

        everyone = {"rtu-1", "rtu-2", "asc-7", "txt-1", "mem-1"}
        await gateway.wait(online, count=len(everyone))
        assert {f["deviceId"] for f in gateway.frames if online(f)} == everyone
    finally:
        await daemon.stop(grace=1.0)

    lines: list[str] = []
    assert await probe(config, "rtu-2", lines.append) == 0, lines
    assert await probe(config, "asc-7", lines.append) == 0, lines

    # the line simulator remembers what it was sent and answers by the profile's expect
    link = LineSerialDriver.link_class("text", config.links["text"])
    await link.open()
    try:
        device = LineSerialDriver.device_class(link, config.devices[3], config.profiles["txt"])
        assert await device.execute("SET_BRIGHTNESS", {"brightness": 42}) == {"reply": "OK"}
        assert await device.execute("STATUS", {}) == {"door_state": 0, "brightness": 42}
    finally:
        await link.close()

    await sim.stop()
    assert not any(p.name.startswith("tty") for p in tmp_path.iterdir())  # symlinks removed


async def test_an_existing_file_is_never_replaced(tmp_path: Path, started: list[Simulator]) -> None:
    config = serial_config(tmp_path)
    real = tmp_path / "ttyRS485"
    real.write_text("not a pty")  # stands in for a real device node
    dangling = tmp_path / "ttyASCII"
    dangling.symlink_to(tmp_path / "gone")  # left by a simulator that was killed
    live = tmp_path / "ttyTEXT"
    live.symlink_to(real)  # someone else's: alive

    sim = await start(started, config)
    assert real.read_text() == "not a pty"
    assert os.readlink(live) == str(real)
    served = sim.served["rtu-1"].address
    assert isinstance(served, SerialAddress) and served.path is not None
    assert served.path.startswith("/dev/pts/")
    assert os.readlink(dangling).startswith("/dev/pts/")  # a dangling symlink is taken over
    assert len(sim.notes) == 2 and all("it is not replaced" in n for n in sim.notes), sim.notes

    pointed = sim.rewrite()
    assert pointed.links["rs485"].port == served.path
    assert pointed.links["ascii"].port == str(dangling)
    lines: list[str] = []
    assert await probe(pointed, "rtu-1", lines.append) == 0, lines
    assert await probe(pointed, "txt-1", lines.append) == 0, lines
    await sim.stop()
    assert not dangling.exists() and not dangling.is_symlink()
    assert real.read_text() == "not a pty" and live.is_symlink()


def tcp_config(host: str, port: int) -> Config:
    links = {"plc": {"driver": "modbus-rtu-over-tcp", "host": host, "port": port}}
    devices: list[dict[str, Any]] = [
        {"id": "plc-1", "profile": "mb", "link": "plc", "unit": 1},
        {
            "id": "txt-9",
            "profile": "txt",
            "link": {"driver": "line-tcp", "host": host, "port": port + 1},
        },
    ]
    return make(links, devices)


async def test_tcp_devices_elsewhere_are_served_on_free_local_ports(
    started: list[Simulator],
) -> None:
    config = tcp_config("192.0.2.10", 502)  # TEST-NET: never this machine
    sim = await start(started, config)
    for dev in ("plc-1", "txt-9"):
        served = sim.served[dev].address
        assert isinstance(served, TcpAddress) and served.host == "127.0.0.1" and served.port
    assert len(sim.notes) == 2 and "is not on this machine" in sim.notes[0]
    pointed = sim.rewrite()
    assert pointed.links["plc"].host == "127.0.0.1"
    assert pointed.links["plc"].driver == "modbus-rtu-over-tcp"
    lines: list[str] = []
    assert await probe(pointed, "plc-1", lines.append) == 0, lines
    assert await probe(pointed, "txt-9", lines.append) == 0, lines


async def test_a_busy_local_port_falls_back_and_relocate_moves_everything(
    started: list[Simulator],
) -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        sim = await start(started, tcp_config("127.0.0.1", port))
        moved = sim.served["plc-1"].address
        assert isinstance(moved, TcpAddress) and moved.port != port
        assert "cannot serve on" in sim.notes[0]
        assert sim.served["txt-9"].address == TcpAddress("127.0.0.1", port + 1)
    await sim.stop()

    relocated = await start(started, tcp_config("127.0.0.1", port), relocate=True)
    assert relocated.notes == []
    assert all(s.moved for s in relocated.served.values())
