"""The ``simulated`` driver: an in-memory device that follows its profile.

Every point holds a value (0, ``false`` or ``""`` to start); reads return them and writes store
them. Useful for dry runs of a device map and as the device behind ``edge-proxy demo``.
Optional link keys: ``latency`` (a duration added to every transaction) and ``initial``
(a mapping of point name to starting value). A point with a ``simulate:`` rule is read as the
rule's value at the time of the read (:mod:`edge_proxy.core.simulation_rules`, the clock
starting with the device); a write to it is kept only until the rule moves it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig, parse_duration
from edge_proxy.core import simulation_rules
from edge_proxy.drivers import Device, Driver, Link, checkpoint
from edge_proxy.errors import DeviceException


class SimulatedLink(Link):
    """A link that is always there."""

    #: Every operation takes the link's ``latency`` and no more.
    self_timed: ClassVar[bool] = True

    def __init__(self, name: str, config: LinkConfig) -> None:
        super().__init__(name, config)
        self._open = False
        self.latency = parse_duration(config.extra_keys.get("latency", 0))

    @property
    def is_open(self) -> bool:
        """Whether open() was called."""
        return self._open

    async def open(self) -> None:
        """Nothing to connect."""
        self._open = True

    async def close(self) -> None:
        """Nothing to disconnect."""
        self._open = False


def _zero(point_type: str) -> Any:
    if point_type == "bool":
        return False
    if point_type == "string":
        return ""
    if point_type.startswith("float"):
        return 0.0
    return 0


class SimulatedDevice(Device):
    """A device whose points live in a dict."""

    link: SimulatedLink

    def __init__(self, link: Link, config: DeviceConfig, profile: ProfileConfig) -> None:
        super().__init__(link, config, profile)
        initial = link.config.extra_keys.get("initial") or {}
        self.values: dict[str, Any] = {
            name: initial.get(name, _zero(point.type)) for name, point in profile.points.items()
        }
        self._started = time.monotonic()
        self._moving = {
            name: simulation_rules.seed_of(config.id, name)
            for name, point in profile.points.items()
            if point.simulate is not None
        }

    async def _transaction(self) -> None:
        checkpoint()
        if self.link.latency:
            await asyncio.sleep(self.link.latency)

    async def read(self, points: Sequence[str]) -> dict[str, Any]:
        """Return the stored values."""
        await self._transaction()
        t = time.monotonic() - self._started
        for name in points:
            seed = self._moving.get(name)
            if seed is not None:
                point = self.profile.points[name]
                self.values[name] = simulation_rules.point_value(point, t, seed)
        return {name: self.values[name] for name in points}

    async def write(self, values: Mapping[str, Any]) -> None:
        """Store the values (the core has checked access and range)."""
        await self._transaction()
        for name, value in values.items():
            if name not in self.values:
                raise DeviceException(f"no point {name!r}")
            point = self.profile.points[name]
            self.values[name] = bool(value) if point.type == "bool" else value

    async def execute(self, command: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """A request command is answered with the request that would have been sent."""
        await self._transaction()
        cmd = self.profile.commands[command]
        return {"request": (cmd.request or "").format(**params)}


class SimulatedDriver(Driver):
    """Registry entry of the simulated driver."""

    name: ClassVar[str] = "simulated"
    link_class: ClassVar[type[Link]] = SimulatedLink
    device_class: ClassVar[type[Device]] = SimulatedDevice
    extra_link_keys: ClassVar[frozenset[str]] = frozenset({"latency", "initial"})

    @classmethod
    def check_link(cls, link: LinkConfig) -> list[str]:
        """Check the simulated driver's own keys too."""
        errors = super().check_link(link)
        if "latency" in link.extra_keys:
            try:
                parse_duration(link.extra_keys["latency"])
            except ValueError as exc:
                errors.append(f".latency: {exc} (got {link.extra_keys['latency']!r})")
        initial = link.extra_keys.get("initial")
        if initial is not None and not isinstance(initial, dict):
            errors.append(f".initial: expected a mapping of point: value (got {initial!r})")
        return errors
