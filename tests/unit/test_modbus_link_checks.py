"""Bad Modbus link settings are configuration errors, found before any connection."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edge_proxy.config import ConfigError, validate_tree
from edge_proxy.drivers import registry
from tests.builders import TYPES_PROFILE, base_tree


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_gap", -1),
        ("max_read_registers", 126),
        ("max_read_bits", 0),
        ("late_reply_wait", "soon"),
        ("baud", 9600),
    ],
)
def test_bad_driver_keys_are_config_errors(key: str, value: Any) -> None:
    tree = base_tree(
        links={"l": {"driver": "modbus-rtu", "port": "/dev/ttyUSB0", key: value}},
        profiles={"p": copy.deepcopy(TYPES_PROFILE)},
        devices=[{"id": "d", "profile": "p", "link": "l"}],
    )
    with pytest.raises(ConfigError, match=key):
        validate_tree(tree, registry.check_link)


def test_tcp_drivers_need_host_and_port() -> None:
    for driver in ("modbus-tcp", "modbus-rtu-over-tcp"):
        tree = base_tree(
            links={"l": {"driver": driver}},
            profiles={"p": copy.deepcopy(TYPES_PROFILE)},
            devices=[{"id": "d", "profile": "p", "link": "l"}],
        )
        with pytest.raises(ConfigError, match="host"):
            validate_tree(tree, registry.check_link)
