"""What the built-in serial drivers share: one connection per serial port, whatever names it."""

from __future__ import annotations

import os
from collections.abc import Hashable

from edge_proxy.config import LinkConfig
from edge_proxy.drivers import Driver


def serial_share_key(link: LinkConfig) -> Hashable:
    """The share key of a serial link: its driver and port, symlinks resolved (``realpath``).

    ``/dev/serial/by-id/usb-...`` and the ``/dev/ttyUSB0`` it points to are one port, so the
    devices on both share one connection (the config check makes sure their settings agree).
    The driver is part of the key: a connection is never handed to another driver's devices,
    even when a symlink made after the config check joins two ports.
    """
    port = link.port
    return ("serial", link.driver, os.path.realpath(port) if isinstance(port, str) else port)


class PortSharingDriver(Driver):
    """A built-in driver whose serial links share by :func:`serial_share_key`."""

    @classmethod
    def share_key(cls, link_name: str, link: LinkConfig) -> Hashable:
        """A serial port is shared by path with symlinks resolved; else as the core decides."""
        if cls.serial:
            return serial_share_key(link)
        return super().share_key(link_name, link)
