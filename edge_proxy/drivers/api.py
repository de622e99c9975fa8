"""The driver API that plugin authors implement: Link, Device, Driver, and the operation context.

A driver is a :class:`Driver` subclass registered under the entry-point group
``edge_proxy.drivers`` (see :mod:`edge_proxy.drivers.registry`). It names two classes:

* a :class:`Link`, which owns one physical connection (a serial port, a TCP socket) and is
  shared by every device configured on it; the core guarantees that only one operation runs
  on a link at a time, so a link never needs its own lock;
* a :class:`Device`, the adapter for one device on that link: ``read``, ``write``, ``execute``.

Drivers raise the exceptions of :mod:`edge_proxy.errors` (``DeviceTimeout``, ``DeviceException``,
``LinkIOError``...) and call :func:`checkpoint` before each wire transaction, so a cancelled or
expired command stops between two transactions and never in the middle of one.

A driver may also offer a simulator of its devices (:meth:`Driver.simulator`, see
:mod:`edge_proxy.drivers.simulation`), which ``edge-proxy simulate`` and ``edge-proxy demo`` run.
"""

from __future__ import annotations

import contextvars
import importlib
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.errors import DeviceException, OperationAborted

if TYPE_CHECKING:
    from edge_proxy.drivers.simulation import DeviceSimulator


class OperationContext:
    """The command a driver is working for: lets the core stop it between transactions."""

    __slots__ = ("deadline", "reason", "request_ref")

    def __init__(self, request_ref: str | None = None, deadline: float | None = None) -> None:
        self.request_ref = request_ref
        self.deadline = deadline
        self.reason: str | None = None

    def abort(self, reason: str) -> None:
        """Ask the running operation to stop before its next transaction."""
        if self.reason is None:
            self.reason = reason

    def check(self) -> None:
        """Raise OperationAborted if the command was cancelled or has expired."""
        if self.reason is not None:
            raise OperationAborted(self.reason)


_current: contextvars.ContextVar[OperationContext | None] = contextvars.ContextVar(
    "edge_proxy_operation", default=None
)


def current_operation() -> OperationContext | None:
    """The OperationContext of the operation running in this task, if any."""
    return _current.get()


def set_current_operation(ctx: OperationContext | None) -> contextvars.Token[Any]:
    """Bind an OperationContext to the running task (used by the core's link worker)."""
    return _current.set(ctx)


def checkpoint() -> None:
    """Call before each wire transaction: raises OperationAborted if the command must stop."""
    ctx = _current.get()
    if ctx is not None:
        ctx.check()


class Link(ABC):
    """One physical connection, shared by the devices configured on it."""

    #: Whether every operation on this link ends by itself within the link's timeouts (each
    #: request timed by the driver). The core then sets no last-resort guard timer around each
    #: operation; leave it False unless every wait in the driver is bounded.
    self_timed: ClassVar[bool] = False

    def __init__(self, name: str, config: LinkConfig) -> None:
        self.name = name
        self.config = config

    @property
    @abstractmethod
    def is_open(self) -> bool:
        """Whether the connection is usable right now."""

    @abstractmethod
    async def open(self) -> None:
        """Open the connection; raise LinkIOError (or OSError) when it cannot be opened."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection; calling it on a closed link does nothing."""


class Device(ABC):
    """The adapter for one device on a link."""

    def __init__(self, link: Link, config: DeviceConfig, profile: ProfileConfig) -> None:
        self.link = link
        self.config = config
        self.profile = profile

    @property
    def unit(self) -> int:
        """The device's unit (slave) id; 1 when the config gives none."""
        return 1 if self.config.unit is None else self.config.unit

    @abstractmethod
    async def read(self, points: Sequence[str]) -> dict[str, Any]:
        """Read the named points (already checked readable) and return their values."""

    @abstractmethod
    async def write(self, values: Mapping[str, Any]) -> None:
        """Write the named points (already checked writable and in range)."""

    @property
    def health_asks_device(self) -> bool:
        """Whether :meth:`health` puts a question to the device, so that its success is an answer.

        The runtime reports a device ``online`` only after an answer: a health check that
        merely opens the link does not count. The default: an overridden ``health()`` asks;
        the base one asks when the profile has a ``health`` request command or a readable
        point. A driver that knows better overrides this.
        """
        if type(self).health is not Device.health:
            return True
        health = self.profile.commands.get("health")
        if health is not None and health.request:
            return True
        return any(point.readable for point in self.profile.points.values())

    def read_plan(self, points: Sequence[str], *, contiguous: bool = False) -> list[list[str]]:
        """How a read of ``points`` splits into transactions: one list of point names each.

        The telemetry collector calls this once per poll group, when the config is loaded, and
        runs each part as a job of its own on the link, so a command waits at most for one
        transaction. ``contiguous`` asks for parts that span no unused address (used after the
        device refused a read across a hole). The default is one transaction for all.
        """
        del contiguous
        return [list(points)] if points else []

    async def execute(self, command: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run a profile command that has a ``request`` (text protocols); return result values."""
        raise DeviceException(f"driver cannot run request command {command!r}")

    async def health(self) -> None:
        """Check that the device answers: a profile ``health`` command, else one readable point."""
        if "health" in self.profile.commands and self.profile.commands["health"].request:
            await self.execute("health", {})
            return
        readable = [n for n, p in self.profile.points.items() if p.readable]
        if readable:
            await self.read(readable[:1])
        elif not self.link.is_open:
            await self.link.open()


class Driver:
    """A driver as registered under the ``edge_proxy.drivers`` entry-point group."""

    name: ClassVar[str] = ""
    link_class: ClassVar[type[Link]]
    device_class: ClassVar[type[Device]]
    #: Link keys the driver accepts beyond the core's (``driver``, ``host``, ``port``...).
    extra_link_keys: ClassVar[frozenset[str]] = frozenset()
    #: Whether the link is a serial line (sharing is then by port path).
    serial: ClassVar[bool] = False
    #: Whether devices need a ``host`` / ``port``.
    needs_host: ClassVar[bool] = False
    needs_port: ClassVar[bool] = False
    #: ``"package.module:Class"`` of the driver's :class:`DeviceSimulator`, imported only when
    #: a simulator is asked for; empty when the driver offers none.
    simulator_class: ClassVar[str] = ""

    @classmethod
    def check_link(cls, link: LinkConfig) -> list[str]:
        """Problems of a link mapping for this driver, each as ``.key: problem``."""
        errors = []
        for key in link.extra_keys:
            if key not in cls.extra_link_keys:
                errors.append(f".{key}: unknown key for driver {link.driver!r}")
        if cls.needs_host and not link.host:
            errors.append(f".host: driver {link.driver!r} needs a host")
        if cls.needs_port and link.port is None:
            errors.append(f".port: driver {link.driver!r} needs a port")
        if cls.serial and link.port is not None and not isinstance(link.port, str):
            errors.append(f".port: a serial driver needs a device path (got {link.port!r})")
        if cls.needs_host and link.port is not None and not isinstance(link.port, int):
            errors.append(f".port: a TCP driver needs a port number (got {link.port!r})")
        if isinstance(link.port, int) and not 0 < link.port < 65536:
            errors.append(f".port: {link.port} is not a TCP port number")
        return errors

    @classmethod
    def check_profile(cls, profile: ProfileConfig) -> list[str]:
        """Problems of a profile used with this driver, each as ``.key: problem`` (e.g. a
        point type the device cannot hold); ``edge-proxy check`` reports them."""
        return []

    @classmethod
    def share_key(cls, link_name: str, link: LinkConfig) -> Hashable:
        """Devices whose links give the same key share one connection."""
        if cls.serial:
            return ("serial", link.port)
        if cls.needs_host:
            return (link.driver, link.host, link.port)
        return ("link", link_name)

    @classmethod
    def simulator(
        cls,
        link_name: str,
        link: LinkConfig,
        devices: Sequence[tuple[DeviceConfig, ProfileConfig]],
    ) -> DeviceSimulator | None:
        """A simulator serving ``devices`` (all on one shared link) as this driver reaches them,
        or None when the driver offers none (the default): by default an instance of
        :attr:`simulator_class`."""
        if not cls.simulator_class:
            return None
        module_name, _, class_name = cls.simulator_class.partition(":")
        factory = getattr(importlib.import_module(module_name), class_name)
        simulator: DeviceSimulator = factory(link_name, link, devices)
        return simulator
