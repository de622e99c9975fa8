"""The line drivers check their link settings before any connection."""

from __future__ import annotations

from edge_proxy.config import LinkConfig
from edge_proxy_drivers.line import LineSerialDriver, LineTcpDriver


def test_link_checks() -> None:
    assert LineTcpDriver.check_link(LinkConfig(driver="line-tcp")) == [
        ".host: driver 'line-tcp' needs a host",
        ".port: driver 'line-tcp' needs a port",
    ]
    bad = LinkConfig.model_validate(
        {"driver": "line-serial", "port": "/dev/ttyS0", "late_reply_grace": "soon"}
    )
    errors = LineSerialDriver.check_link(bad)
    assert len(errors) == 1 and errors[0].startswith(".late_reply_grace:")
    assert LineSerialDriver.check_link(LinkConfig(driver="line-serial", port=4001))
