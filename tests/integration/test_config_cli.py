"""``edge-proxy check`` and ``run`` as a user runs them, in a subprocess, on good and bad files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.configs import BROKEN_DIR, EXAMPLE, MULTI_DEFECT_FILE, broken_params, has_error
from tests.integration.support import cli

TESTS_DIR = Path(__file__).resolve().parents[1]


def cli_env(**extra: str) -> dict[str, str]:
    """A small, controlled environment for ``python -m edge_proxy``."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess and capture its output."""
    return cli(*args, env=cli_env() if env is None else env, cwd=TESTS_DIR)


@pytest.mark.parametrize(("name", "path", "message"), broken_params())
def test_check_rejects_broken_file(name: str, path: str, message: str) -> None:
    config_path = BROKEN_DIR / name
    proc = run_cli("check", "--config", str(config_path))
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"{config_path}: ")
    assert "configuration error(s)" in lines[0]
    assert has_error(lines[1:], path, message), proc.stderr


def test_check_lists_every_defect_of_a_file() -> None:
    config_path = BROKEN_DIR / MULTI_DEFECT_FILE
    proc = run_cli("check", "--config", str(config_path))
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0] == f"{config_path}: 3 configuration error(s):"
    assert has_error(lines, "gateway.url", "ws:// or wss://")
    assert has_error(lines, "profiles.pillar.points.alarm.bit", "less than or equal to 15")
    assert has_error(lines, "devices[1].unit", "less than or equal to 247")
    assert len(lines) == 4


def test_check_on_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    config_path = tmp_path / "latin1.yaml"
    config_path.write_bytes(b"edge:\n  id: caf\xe9\n")
    proc = run_cli("check", "--config", str(config_path))
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "latin1.yaml" in proc.stderr
    assert "utf-8" in proc.stderr.lower()


def table_rows(stdout: str, title: str) -> list[list[str]]:
    """The rows of one table printed by ``check``, split on whitespace."""
    lines = stdout.splitlines()
    start = lines.index(title) + 3  # title, header, dashes
    rows: list[list[str]] = []
    for line in lines[start:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_check_on_the_example_prints_its_devices_and_profiles() -> None:
    secret = "tok-3f9a-never-printed"
    proc = run_cli("check", "--config", str(EXAMPLE), env=cli_env(EDGE_TOKEN=secret))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert secret not in proc.stdout
    assert proc.stdout.startswith(f"{EXAMPLE}: OK (edge edge-001, gateway ws://127.0.0.1:18081)")
    devices = {row[0]: row for row in table_rows(proc.stdout, "Devices")}
    assert set(devices) == {"pillar-001", "pillar-002", "pillar-003", "pillar-101", "pillar-900"}
    # id, type, profile, link, unit, enabled
    assert devices["pillar-001"][2:] == ["pillar-modbus", "plc-1", "1", "yes"]
    assert devices["pillar-002"][2:] == ["pillar-modbus", "plc-1", "2", "yes"]
    assert devices["pillar-003"][2:] == ["pillar-modbus", "sim-bus", "-", "yes"]
    assert devices["pillar-101"][2:] == ["pillar-ascii", "pillar-101/link", "-", "yes"]
    assert devices["pillar-900"][2:] == ["pillar-modbus", "pillar-900/link", "-", "no"]
    profiles = table_rows(proc.stdout, "Profiles")
    assert [row[0] for row in profiles] == ["pillar-modbus", "pillar-ascii"]
    assert profiles[0][1] == "10"  # nine, and light (a ramp for the demo's telemetry)
    links = {row[0]: row[1] for row in table_rows(proc.stdout, "Links")}
    assert links == {
        "sim-bus": "simulated",
        "plc-1": "modbus-tcp",
        "pillar-101/link": "line-tcp",
        "pillar-900/link": "simulated",
    }


def test_run_on_a_broken_config_exits_2() -> None:
    config_path = BROKEN_DIR / "17-unit-300.yaml"
    proc = run_cli("run", "--config", str(config_path))
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert has_error(proc.stderr.splitlines(), "devices[0].unit", "247")


@pytest.mark.parametrize("command", ["check", "run"])
def test_missing_config_file_exits_2_naming_it(command: str, tmp_path: Path) -> None:
    config_path = tmp_path / "no-such-config.yaml"
    proc = run_cli(command, "--config", str(config_path))
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert has_error(proc.stderr.splitlines(), str(config_path), "cannot read the file")
