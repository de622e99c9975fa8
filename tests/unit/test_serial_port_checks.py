"""Two links on one serial port: same settings share one connection, other settings are an error.

A serial port is one connection with one set of line settings. Links that name the same port,
also through a symlink (``/dev/serial/by-id/...`` and ``/dev/ttyUSB0``), must agree on every
setting, or the config is refused (``edge-proxy check`` exits 2 naming both links and both
paths); when they agree they share one connection, as two devices on one link do. The ports
here are plain files and symlinks in ``tmp_path``: nothing is opened.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_proxy.cli.main import main
from edge_proxy.config import validate_tree
from edge_proxy.drivers import registry
from tests.configs import has_error
from tests.unit.test_config_faults import errors_of

PROFILE: dict[str, Any] = {"points": {"level": {"table": "holding", "address": 1}}}


def tree(links: dict[str, Any], devices: list[dict[str, Any]]) -> dict[str, Any]:
    """A config tree with the given links and devices (profile ``p``)."""
    return {
        "edge": {"id": "edge-001"},
        "gateway": {"url": "ws://127.0.0.1:9"},
        "links": copy.deepcopy(links),
        "profiles": {"p": PROFILE},
        "devices": [{"profile": "p", **d} for d in copy.deepcopy(devices)],
        "control": {"enabled": False},
    }


@pytest.fixture
def ports(tmp_path: Path) -> tuple[str, str]:
    """A stand-in serial port and a by-id style symlink to it."""
    real = tmp_path / "ttyUSB0"
    real.write_text("")
    by_id = tmp_path / "serial" / "by-id" / "usb-FTDI_FT232R-if00-port0"
    by_id.parent.mkdir(parents=True)
    by_id.symlink_to(real)
    return str(real), str(by_id)


def two_units(first: str, second: str | dict[str, Any]) -> list[dict[str, Any]]:
    """Unit 1 on ``first``, unit 2 on ``second``."""
    return [{"id": "a", "link": first, "unit": 1}, {"id": "b", "link": second, "unit": 2}]


def port_errors(errors: list[str]) -> list[str]:
    """The errors about one port with two sets of settings."""
    return [e for e in errors if "other settings" in e]


def test_two_names_same_port_other_baudrate_is_an_error(ports: tuple[str, str]) -> None:
    real, _ = ports
    links = {
        "rs485-a": {"driver": "modbus-rtu", "port": real, "baudrate": 9600},
        "rs485-b": {"driver": "modbus-rtu", "port": real, "baudrate": 19200},
    }
    errors = errors_of(tree(links, two_units("rs485-a", "rs485-b")))
    assert len(port_errors(errors)) == 1, errors
    assert has_error(errors, "links.rs485-b.port", "links.rs485-a"), errors
    (line,) = port_errors(errors)
    assert "baudrate 19200" in line and "9600" in line


def test_a_symlink_to_the_same_port_with_other_parity_is_an_error(
    ports: tuple[str, str],
) -> None:
    real, by_id = ports
    links = {
        "bus": {"driver": "modbus-rtu", "port": real, "parity": "E"},
        "bus-by-id": {"driver": "modbus-rtu", "port": by_id, "parity": "N"},
    }
    errors = errors_of(tree(links, two_units("bus", "bus-by-id")))
    (line,) = port_errors(errors)
    assert line.startswith("links.bus-by-id.port: ")
    assert by_id in line and real in line and "links.bus" in line and "parity" in line


@pytest.mark.parametrize(
    "setting",
    [{"bytesize": 7}, {"stopbits": 2}, {"timeout": "3s"}, {"driver": "modbus-ascii"}],
    ids=["bytesize", "stopbits", "timeout", "driver"],
)
def test_any_other_setting_is_an_error_through_a_symlink(
    ports: tuple[str, str], setting: dict[str, Any]
) -> None:
    real, by_id = ports
    links = {
        "bus": {"driver": "modbus-rtu", "port": real},
        "alias": {"driver": "modbus-rtu", "port": by_id, **setting},
    }
    errors = errors_of(tree(links, two_units("bus", "alias")))
    (line,) = port_errors(errors)
    assert line.startswith("links.alias.port: ") and next(iter(setting)) in line, errors


def test_an_inline_link_on_a_named_links_port_is_checked_too(ports: tuple[str, str]) -> None:
    real, by_id = ports
    links = {"bus": {"driver": "line-serial", "port": real, "baudrate": 9600}}
    inline = {"driver": "line-serial", "port": by_id, "baudrate": 4800}
    profile = {"line": {}, "commands": {"STATUS": {"request": "STS?"}}}
    config_tree = tree(links, two_units("bus", inline))
    config_tree["profiles"]["p"] = profile
    errors = errors_of(config_tree)
    assert has_error(errors, "devices[1].link.port", "links.bus"), errors


def test_same_settings_share_one_connection(ports: tuple[str, str]) -> None:
    real, by_id = ports
    settings = {"driver": "modbus-rtu", "baudrate": 19200, "parity": "E", "timeout": "500ms"}
    links = {"bus": {**settings, "port": real}, "bus-by-id": {**settings, "port": by_id}}
    assert errors_of(tree(links, two_units("bus", "bus-by-id"))) == []
    # same spelling, as before
    links = {"bus": {**settings, "port": real}, "bus-2": {**settings, "port": real}}
    assert errors_of(tree(links, two_units("bus", "bus-2"))) == []
    # and they share one connection, through the symlink too
    driver = registry.get("modbus-rtu")
    config = validate_tree(tree({"bus": links["bus"]}, [{"id": "a", "link": "bus"}]))
    bus = config.links["bus"]
    alias = bus.model_copy(update={"port": by_id})
    assert driver.share_key("bus", bus) == driver.share_key("bus-by-id", alias)


def test_unit_clash_is_found_through_a_symlink(ports: tuple[str, str]) -> None:
    real, by_id = ports
    links = {
        "bus": {"driver": "modbus-rtu", "port": real},
        "bus-by-id": {"driver": "modbus-rtu", "port": by_id},
    }
    devices = [{"id": "a", "link": "bus", "unit": 3}, {"id": "b", "link": "bus-by-id", "unit": 3}]
    errors = errors_of(tree(links, devices))
    assert has_error(errors, "devices[1].unit", "unit 3 is already used"), errors


def test_a_disabled_device_does_not_hold_its_port(ports: tuple[str, str]) -> None:
    real, by_id = ports
    links = {
        "bus": {"driver": "modbus-rtu", "port": real, "baudrate": 9600},
        "spare": {"driver": "modbus-rtu", "port": by_id, "baudrate": 19200},
    }
    devices = two_units("bus", "spare")
    devices[1]["enabled"] = False
    assert errors_of(tree(links, devices)) == []


def test_check_exits_2_naming_both_links_and_both_paths(
    ports: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real, by_id = ports
    links = {
        "rs485-a": {"driver": "modbus-rtu", "port": real, "baudrate": 9600},
        "rs485-b": {"driver": "modbus-rtu", "port": by_id, "baudrate": 19200},
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(tree(links, two_units("rs485-a", "rs485-b"))))
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "other settings" in x]
    for name in ("links.rs485-b.port", "links.rs485-a", real, by_id):
        assert name in line, (name, err)
