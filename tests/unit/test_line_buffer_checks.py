"""The line drivers check their ``max_buffer`` link key (the bound of the receive buffer)."""

from __future__ import annotations

from typing import Any

import pytest

from edge_proxy.config import LinkConfig
from edge_proxy_drivers.line import LineSerialDriver, LineTcpDriver
from edge_proxy_drivers.line.client import MAX_BUFFER, LineTcpLink


def serial(**keys: Any) -> LinkConfig:
    """A line-serial link mapping with extra keys."""
    return LinkConfig.model_validate({"driver": "line-serial", "port": "/dev/ttyS0", **keys})


@pytest.mark.parametrize("value", ["64KiB", "1KiB", 4096, "1MiB"])
def test_a_size_of_at_least_1_kib_is_accepted(value: object) -> None:
    assert LineSerialDriver.check_link(serial(max_buffer=value)) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "expected a size"),
        (100, "at least 1024 bytes"),
        ("0", "at least"),
        (-1, "negative"),
    ],
)
def test_a_bad_size_is_an_error(value: object, message: str) -> None:
    errors = LineSerialDriver.check_link(serial(max_buffer=value))
    assert len(errors) == 1 and errors[0].startswith(".max_buffer: ") and message in errors[0]


def test_the_default_is_64_kib_and_the_key_sets_it() -> None:
    tcp = {"driver": "line-tcp", "host": "127.0.0.1", "port": 4001}
    assert LineTcpDriver.check_link(LinkConfig.model_validate(tcp)) == []
    assert MAX_BUFFER == 64 * 1024
    assert LineTcpLink("l", LinkConfig.model_validate(tcp)).max_buffer == MAX_BUFFER
    sized = LinkConfig.model_validate({**tcp, "max_buffer": "8KiB"})
    assert LineTcpLink("l", sized).max_buffer == 8192
