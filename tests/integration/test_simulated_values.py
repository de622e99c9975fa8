"""Points with a ``simulate:`` rule move, seen where an operator sees them: in telemetry over a
real Gateway (from `edge-proxy simulate`'s Modbus and line simulators and from the
``simulated`` driver), and in `edge-proxy status` (last sample age, overruns)."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_proxy.cli.simulate import Simulator
from edge_proxy.config import Config
from edge_proxy.ops.daemon import Daemon
from tests.builders import make_config
from tests.integration.support import Gateway, acli

EdgeFactory = Callable[[Config], Awaitable[Daemon]]

#: level climbs 500 per second: 0 to 1000 in 2 s, then again from 0
RAMP_RATE = 500.0
METER: dict[str, Any] = {
    "points": {
        "level": {
            "table": "holding",
            "address": 10,
            "simulate": {"ramp": {"min": 0, "max": 1000, "period": "2s"}},
        },
        "temp": {
            "table": "input",
            "address": 3,
            "type": "int16",
            "scale": 0.1,
            "simulate": {"noise": {"around": 20, "amplitude": 1, "every": "100ms"}},
        },
        "open": {"table": "coil", "address": 2, "simulate": {"toggle": {"period": "300ms"}}},
        "alarm": {
            "table": "holding",
            "address": 11,
            "bit": 2,
            "simulate": {"toggle": {"period": "300ms"}},
        },
        "still": {"table": "holding", "address": 12},
    },
    "telemetry": [{"name": "fast", "interval": "100ms", "points": "*"}],
}
PANEL: dict[str, Any] = {
    "line": {"terminator": "\r\n"},
    # only the simulator reads these: the reply field of the same name follows the rule
    "points": {"door_state": {"simulate": {"toggle": {"period": "300ms"}}}},
    "commands": {
        "STATUS": {"request": "STS?", "expect": "^STS (?P<door_state>\\d) (?P<brightness>\\d+)$"},
        "health": {"request": "STS?"},
    },
    "telemetry": [{"name": "status", "interval": "100ms", "command": "STATUS"}],
}


def tree(url: str, links: dict[str, Any], devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "edge": {"id": "edge-001"},
        "gateway": {"url": url, "reconnect": {"initial": "50ms", "max": "200ms"}},
        "links": links,
        "profiles": {"meter": METER, "panel": PANEL},
        "devices": [{"type": "meter", **d} for d in devices],
        "control": {"enabled": False},
    }


def when(msg: dict[str, Any]) -> float:
    return datetime.fromisoformat(msg["sampledAt"].replace("Z", "+00:00")).timestamp()


def telemetry_of(gateway: Gateway, dev: str) -> list[dict[str, Any]]:
    return [f for f in gateway.frames if f["type"] == "telemetry" and f["deviceId"] == dev]


def series(msgs: list[dict[str, Any]], point: str) -> list[tuple[float, Any]]:
    return [(when(m), m["values"][point]) for m in msgs if point in m["values"]]


def assert_ramp(points: list[tuple[float, Any]]) -> None:
    """Rising at RAMP_RATE between reports, falling back to 0 once a period, never outside."""
    assert all(0 <= v <= 1000 for _, v in points), points
    rises = [(t1 - t0, v1 - v0) for (t0, v0), (t1, v1) in itertools.pairwise(points) if v1 > v0]
    assert len(rises) >= 10, points
    rates = sorted(dv / dt for dt, dv in rises if dt > 0.05)
    median = rates[len(rates) // 2]
    assert RAMP_RATE * 0.8 < median < RAMP_RATE * 1.2, rates
    assert any(v1 < v0 for (_, v0), (_, v1) in itertools.pairwise(points)), "no wrap seen"


@pytest.fixture
async def simulator() -> AsyncIterator[list[Simulator]]:
    sims: list[Simulator] = []
    yield sims
    for sim in sims:
        await sim.stop()


@pytest.mark.timeout(60)
async def test_simulated_modbus_line_and_in_memory_devices_move_in_telemetry(
    gateway: Gateway, edge_factory: EdgeFactory, simulator: list[Simulator]
) -> None:
    links = {
        "plc": {"driver": "modbus-tcp", "host": "127.0.0.1", "port": 15020, "timeout": "500ms"},
        "panel": {"driver": "line-tcp", "host": "127.0.0.1", "port": 15021, "timeout": "500ms"},
        "mem": {"driver": "simulated"},
    }
    devices: list[dict[str, Any]] = [
        {"id": "m1", "profile": "meter", "link": "plc", "unit": 1},
        {"id": "m2", "profile": "meter", "link": "plc", "unit": 2},
        {"id": "t1", "profile": "panel", "link": "panel"},
        {"id": "s1", "profile": "meter", "link": "mem"},
    ]
    sim = Simulator(make_config(tree(gateway.url, links, devices)), relocate=True)
    simulator.append(sim)
    await sim.start()
    await edge_factory(sim.rewrite())  # the config pointed at the simulators' free ports
    await gateway.wait(
        lambda f: f["type"] == "telemetry" and f["deviceId"] == "m1" and f["seq"] >= 30,
        timeout=15,
    )
    for dev in ("m1", "m2", "s1"):
        msgs = telemetry_of(gateway, dev)
        assert not [m for m in msgs if m.get("quality")], msgs  # every point read fine
        assert msgs[0]["snapshot"] is True and msgs[0]["values"]["still"] == 0
        assert not [m for m in msgs[1:] if "still" in m["values"]]  # no rule: never moves
        assert_ramp(series(msgs, "level"))
        temps = [v for _, v in series(msgs, "temp")]
        assert all(19.0 <= v <= 21.0 for v in temps) and len(set(temps)) > 3, temps
        # whole raw values of scale 0.1, as a real register holds them
        assert all(abs(v * 10 - round(v * 10)) < 1e-6 for v in temps)
        for bit in ("open", "alarm"):
            assert {v for _, v in series(msgs, bit)} == {False, True}, (dev, bit)
    # the two units of one server do not share their noise
    m1, m2 = (dict(series(telemetry_of(gateway, d), "temp")) for d in ("m1", "m2"))
    assert [v for _, v in sorted(m1.items())][:5] != [v for _, v in sorted(m2.items())][:5]
    # the line simulator's reply field follows the panel's toggle rule
    doors = [v for _, v in series(telemetry_of(gateway, "t1"), "door_state")]
    assert set(doors) == {0, 1} and len(doors) >= 3, doors


# ---------------------------------------------------------------- edge-proxy status


@pytest.mark.timeout(60)
async def test_status_shows_the_last_sample_age_and_overruns(
    gateway: Gateway, edge_factory: EdgeFactory, tmp_path: Path
) -> None:
    links = {"mem": {"driver": "simulated"}, "slow": {"driver": "simulated", "latency": "250ms"}}
    devices: list[dict[str, Any]] = [
        {"id": "quick", "profile": "meter", "link": "mem"},
        {"id": "behind", "profile": "meter", "link": "slow"},  # a 250 ms cycle, ticks of 100
        {"id": "quiet", "profile": "meter", "link": "mem", "telemetry": False},
    ]
    config_tree = tree(gateway.url, links, devices)
    config_tree["control"] = {"socket": str(tmp_path / "control.sock")}
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config_tree))
    daemon = await edge_factory(make_config(config_tree))
    await gateway.wait(lambda f: f["type"] == "telemetry" and f["deviceId"] == "behind", timeout=5)
    await asyncio.sleep(0.8)  # a few ticks of "behind" come while its cycle still runs
    out = await acli("status", "--config", str(path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.startswith("device"))
    assert "last sample" in header and "overruns" in header
    cols = header.index("last sample"), header.index("overruns"), header.index("last error")
    rows = {line.split()[0]: line for line in lines[lines.index(header) + 2 :] if line}

    def cells(dev: str) -> tuple[str, str]:
        row = rows[dev]
        return row[cols[0] : cols[1]].strip(), row[cols[1] : cols[2]].strip()

    age, overruns = cells("quick")
    assert re.fullmatch(r"0\.\ds", age), age  # polled every 100 ms
    assert overruns == "0"
    age, overruns = cells("behind")
    assert re.fullmatch(r"0\.\ds", age), age
    assert int(overruns) >= 2
    assert cells("quiet") == ("-", "-")  # no telemetry
    skipped = sum(g["skipped"] for g in daemon.telemetry.status("behind") or ())
    assert skipped >= int(overruns)
