"""A third-party edge-proxy driver: a device that remembers what was written to it.

It is written only against edge-proxy's public driver API, as an outside package would be.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.drivers import Device, Driver, Link, checkpoint
from edge_proxy.errors import LinkIOError


class EchoLink(Link):
    """A link that can be told to refuse connections (``refuse: true``)."""

    def __init__(self, name: str, config: LinkConfig) -> None:
        super().__init__(name, config)
        self._open = False
        self.refuse = bool(config.extra_keys.get("refuse", False))

    @property
    def is_open(self) -> bool:
        """Whether open() succeeded."""
        return self._open

    async def open(self) -> None:
        """Connect, unless told to refuse."""
        if self.refuse:
            raise LinkIOError("echo link refuses connections")
        self._open = True

    async def close(self) -> None:
        """Disconnect."""
        self._open = False


class EchoDevice(Device):
    """Points hold what was last written (42 to start)."""

    def __init__(self, link: Link, config: DeviceConfig, profile: ProfileConfig) -> None:
        super().__init__(link, config, profile)
        self.memory: dict[str, Any] = dict.fromkeys(profile.points, 42)

    async def read(self, points: Sequence[str]) -> dict[str, Any]:
        """Return remembered values."""
        checkpoint()
        return {name: self.memory[name] for name in points}

    async def write(self, values: Mapping[str, Any]) -> None:
        """Remember values."""
        checkpoint()
        self.memory.update(values)


class EchoDriver(Driver):
    """Registry entry ``echo-test``."""

    name: ClassVar[str] = "echo-test"
    link_class: ClassVar[type[Link]] = EchoLink
    device_class: ClassVar[type[Device]] = EchoDevice
    extra_link_keys: ClassVar[frozenset[str]] = frozenset({"refuse"})
