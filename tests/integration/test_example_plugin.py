"""The example driver package (examples/stx_driver), installed as a user would install it.

It must pass its own tests, be found by name, run commands through a real edge to its
simulated device, and the config of its README must be what `edge-proxy check` accepts.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_proxy.cli.probe import probe
from edge_proxy.config import load_config_text
from edge_proxy.drivers import registry
from edge_proxy.ops.daemon import Daemon
from tests.builders import base_tree, command, make_config
from tests.integration.support import Gateway, cli, installed_package

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "stx_driver"
_YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def _readme_config() -> str:
    """The README's config file: its yaml block that names the stx-tcp driver."""
    text = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    blocks: list[str] = [b for b in _YAML_BLOCK.findall(text) if "driver: stx-tcp" in b]
    assert len(blocks) == 1, "the README should show one config using driver: stx-tcp"
    return blocks[0]


def _env(*paths: Path) -> dict[str, str]:
    """os.environ with the given directories in front of PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in paths] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return env


@pytest.fixture(scope="module")
def stx_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip-install the example package into a directory put on sys.path; yield the directory."""
    with installed_package(EXAMPLE, tmp_path_factory.mktemp("stx-site"), "edge_proxy_stx") as site:
        yield site


def _simulator() -> Any:
    """The example's boiler controller (imported from the installed package)."""
    module = importlib.import_module("edge_proxy_stx.simulator")
    return module.StxSimulator(module.DEMO_REGISTERS, read_only=module.DEMO_READ_ONLY)


def test_found_by_name(stx_site: Path) -> None:
    """Both drivers load by name, from the installed copy, which ships py.typed."""
    drivers = {name: registry.get(name) for name in ("stx-tcp", "stx-serial")}
    assert {name: d.name for name, d in drivers.items()} == {
        "stx-tcp": "stx-tcp",
        "stx-serial": "stx-serial",
    }
    module_file = sys.modules[drivers["stx-tcp"].__module__].__file__
    assert module_file is not None
    assert Path(module_file).is_relative_to(stx_site)
    assert (stx_site / "edge_proxy_stx" / "py.typed").is_file()
    assert {"stx-tcp", "stx-serial"} <= set(registry.names())


def test_example_package_tests_pass(stx_site: Path) -> None:
    """The package's own suite (frames, contract, STX cases) passes against the installed copy."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "examples/stx_driver/tests",
        ],
        cwd=ROOT,
        env=_env(stx_site, EXAMPLE / "src"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None and int(passed.group(1)) >= 50, summary
    assert "failed" not in summary and "error" not in summary, summary


async def test_write_then_read_through_the_edge(stx_site: Path, gateway: Gateway) -> None:
    """Gateway commands reach the simulated device through a running edge, and back."""
    sim = _simulator()
    port = await sim.start()
    tree = base_tree(gateway.url)
    readme = yaml.safe_load(_readme_config())
    tree["profiles"]["boiler"] = readme["profiles"]["boiler"]
    tree["links"]["stx"] = {"driver": "stx-tcp", "host": "127.0.0.1", "port": port}
    tree["devices"].append({"id": "boiler-1", "type": "boiler", "profile": "boiler", "link": "stx"})
    daemon = Daemon(make_config(tree))
    await daemon.start()
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER")
        await gateway.send(
            command("w1", "boiler-1", op="write", params={"values": {"setpoint": 42.5}})
        )
        assert (await gateway.terminal("w1"))["status"] == "completed"
        assert sim.registers[0x10] == 425
        assert b"W0010=01A9" in sim.requests

        await gateway.send(command("r1", "boiler-1", op="read", params={"points": ["setpoint"]}))
        term = await gateway.terminal("r1")
        assert term["status"] == "completed"
        assert term["result"]["values"] == {"setpoint": 42.5}

        # A refusal by the device (E3) reaches the Gateway as DEVICE_EXCEPTION with its code.
        sim.read_only.add(0x30)
        await gateway.send(command("w2", "boiler-1", op="write", params={"values": {"pump": 0}}))
        term = await gateway.terminal("w2")
        assert term["status"] == "failed"
        assert term["error"] == {
            "code": "DEVICE_EXCEPTION",
            "message": "device boiler-1 refused W0030=0000: E3 (register is read-only)",
            "details": {"code": "3", "request": "W0030=0000"},
        }
    finally:
        await daemon.stop(grace=1.0)
        await sim.stop()


def test_readme_config_passes_check(stx_site: Path, tmp_path: Path) -> None:
    """`edge-proxy check` accepts the README's config and shows its stx-tcp link."""
    config = tmp_path / "stx.yaml"
    config.write_text(_readme_config(), encoding="utf-8")
    result = cli("check", "--config", str(config), env=_env(stx_site))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"boiler-bus\s+stx-tcp\s+127\.0\.0\.1:15020\s+0\.5s", result.stdout)


def test_check_reports_points_the_driver_cannot_hold(stx_site: Path, tmp_path: Path) -> None:
    """The driver's check_profile hook: `edge-proxy check` names an unsupported point."""
    text = _readme_config()
    text += "\n" if not text.endswith("\n") else ""
    config = yaml.safe_load(text)
    profile = next(iter(config["profiles"].values()))
    profile["points"]["spare_input"] = {"table": "input", "address": 7}
    path = tmp_path / "stx-bad.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = cli("check", "--config", str(path), env=_env(stx_site))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "points.spare_input" in result.stderr and "stx-tcp" in result.stderr
    assert "Traceback" not in result.stderr


async def test_readme_probe(stx_site: Path) -> None:
    """`edge-proxy probe` prints what the README shows, one frame per point."""
    sim = _simulator()
    port = await sim.start()
    try:
        text = _readme_config().replace("port: 15020", f"port: {port}")
        config = load_config_text(text, env={}, check_link=registry.check_link)
        lines: list[str] = []
        assert await probe(config, "boiler-1", lines.append) == 0
    finally:
        await sim.stop()
    assert lines[0] == f"probing boiler-1 (stx-tcp 127.0.0.1:{port}, unit 1)"
    rows = [line.split() for line in lines[2:]]
    assert rows == [
        ["setpoint", "holding", "16", "21.5", "C"],
        ["flow_temp", "holding", "32", "19.8", "C"],
        ["pump", "holding", "48", "1"],
        ["fault_code", "holding", "49", "0"],
    ]
    assert sim.requests == [b"R0010", b"R0020", b"R0030", b"R0031"]
