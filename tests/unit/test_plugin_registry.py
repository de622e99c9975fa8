"""A driver that is not installed is named in the error."""

from __future__ import annotations

import pytest

from edge_proxy.drivers import DriverRegistry
from edge_proxy.errors import DriverError


def test_missing_plugin_is_named() -> None:
    with pytest.raises(DriverError, match="no driver named 'no-such-driver'"):
        DriverRegistry().get("no-such-driver")
