"""Which health checks ask the device something: only their success is an answer.

A health check that only opens the link proves nothing about the device; the runtime then
keeps the device ``connecting`` until a command or a poll is answered. Nothing is opened here.
"""

from __future__ import annotations

from typing import Any

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.drivers import Driver, registry
from edge_proxy.runtime.devices import health_asks_device

POINTS = {"points": {"level": {"table": "holding", "address": 1}}}
WRITE_ONLY = {"points": {"cmd": {"table": "holding", "address": 1, "access": "w"}}}
LINE = {"line": {}, "commands": {"STATUS": {"request": "STS?"}}}
LINE_HEALTH = {"line": {}, "commands": {"STATUS": {"request": "STS?"}, "health": {"request": "P"}}}


def asks(driver_name: str, link: dict[str, Any], profile: dict[str, Any], unit: int = 1) -> bool:
    """health_asks_device for one device of the driver on the link."""
    driver: type[Driver] = registry.get(driver_name)
    cfg = LinkConfig.model_validate({"driver": driver_name, **link})
    adapter = driver.device_class(
        driver.link_class("l", cfg),
        DeviceConfig(id="d", profile="p", link="l", unit=unit),
        ProfileConfig.model_validate(profile),
    )
    return health_asks_device(adapter)


def test_line_devices_ask_only_with_a_health_command() -> None:
    tcp = {"host": "127.0.0.1", "port": 4001}
    assert asks("line-tcp", tcp, LINE_HEALTH)
    assert not asks("line-tcp", tcp, LINE)
    assert not asks("line-serial", {"port": "/dev/ttyS0"}, LINE)


def test_modbus_devices_ask_with_a_readable_point_unless_broadcast() -> None:
    tcp = {"host": "127.0.0.1", "port": 502}
    assert asks("modbus-tcp", tcp, POINTS)
    assert not asks("modbus-tcp", tcp, WRITE_ONLY)
    assert asks("modbus-tcp", tcp, POINTS, unit=0)  # on TCP unit 0 is a plain id
    assert not asks("modbus-rtu", {"port": "/dev/ttyS0"}, POINTS, unit=0)  # broadcast


def test_the_base_health_check_asks_with_a_readable_point() -> None:
    assert asks("simulated", {}, POINTS)
    assert not asks("simulated", {}, WRITE_ONLY)
    assert not health_asks_device(None)
