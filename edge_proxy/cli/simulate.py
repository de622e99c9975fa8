"""``edge-proxy simulate``: serve a config's devices on this machine, through their drivers.

The devices are grouped into links the way the daemon shares connections
(:meth:`Driver.share_key`), and each link's driver is asked for a simulator
(:meth:`Driver.simulator`, see :mod:`edge_proxy.drivers.simulation`). A driver that offers none
(``simulated``: its devices live inside the edge) is skipped.

Where each simulator serves:

* a TCP link whose host is this machine's loopback (``127.x``, ``localhost``, ``::1``) is
  served on that host and port, so ``edge-proxy run`` on the same, unedited config reaches it;
* a serial link is served on a new pseudo-terminal pair; its configured path becomes a symlink
  to the client end when nothing real is there (see
  :func:`~edge_proxy.drivers.simulation.claim_serial_path`: a missing path or a dangling
  symlink is taken, an existing device, file or live symlink never);
* otherwise (another host, an existing serial port, a port in use, or ``relocate``), on a free
  port of ``host`` (from ``base_port`` on, when given) or a new pseudo-terminal: the config
  then needs the addresses :meth:`Simulator.rewrite` (``--write-config``) puts in.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass

from edge_proxy.config import Config, DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.drivers import (
    Address,
    DeviceSimulator,
    DriverRegistry,
    SerialAddress,
    TcpAddress,
    registry,
)
from edge_proxy.drivers.simulation import is_loopback

log = logging.getLogger(__name__)


@dataclass
class Served:
    """One simulated device, where it is served and the link mapping that reaches it."""

    device: DeviceConfig
    configured: LinkConfig
    link: LinkConfig
    address: Address

    @property
    def driver(self) -> str:
        """The driver a client uses to reach the simulator."""
        return self.link.driver

    @property
    def moved(self) -> bool:
        """Whether the device is served somewhere else than its config says."""
        return self.link != self.configured


@dataclass
class _Group:
    name: str
    link: LinkConfig
    devices: list[tuple[DeviceConfig, ProfileConfig]]


class Simulator:
    """Runs a simulator for every enabled device whose driver offers one."""

    def __init__(
        self,
        config: Config,
        host: str = "127.0.0.1",
        base_port: int = 0,
        *,
        relocate: bool = False,
        drivers: DriverRegistry = registry,
    ) -> None:
        self.config = config
        self.host = host
        self.base_port = base_port
        self.relocate = relocate
        self.drivers = drivers
        self.served: dict[str, Served] = {}
        #: What did not go as configured, one line each (shown by the CLI).
        self.notes: list[str] = []
        self.simulators: list[DeviceSimulator] = []
        self._next_port = base_port

    def _groups(self) -> list[_Group]:
        groups: dict[Hashable, _Group] = {}
        for dev in self.config.devices:
            if not dev.enabled:
                continue
            link = self.config.link_of(dev)
            name = self.config.link_name_of(dev)
            key = self.drivers.get(link.driver).share_key(name, link)
            group = groups.setdefault(key, _Group(name, link, []))
            group.devices.append((dev, self.config.profiles[dev.profile]))
        return list(groups.values())

    def _free_port(self) -> int:
        if self.base_port == 0:
            return 0
        port = self._next_port
        self._next_port += 1
        return port

    def _preferred(self, sim: DeviceSimulator) -> Address | None:
        address = sim.configured_address
        if self.relocate or address is None:
            return None
        if isinstance(address, TcpAddress) and not is_loopback(address.host):
            return None
        return address

    def _fallback(self, sim: DeviceSimulator) -> Address:
        if isinstance(sim.configured_address, SerialAddress):
            return SerialAddress(None)
        return TcpAddress(self.host, self._free_port())

    async def _start_one(self, sim: DeviceSimulator) -> Address:
        preferred = self._preferred(sim)
        if preferred is not None:
            try:
                return await sim.start(preferred)
            except OSError as exc:
                self.notes.append(f"link {sim.link_name}: cannot serve on {preferred}: {exc}")
        elif sim.configured_address is not None and not self.relocate:
            self.notes.append(
                f"link {sim.link_name}: {sim.configured_address} is not on this machine"
            )
        return await sim.start(self._fallback(sim))

    async def start(self) -> dict[str, Served]:
        """Start every simulator; returns where each device is served."""
        try:
            for group in self._groups():
                driver = self.drivers.get(group.link.driver)
                sim = driver.simulator(group.name, group.link, group.devices)
                if sim is None:
                    if driver.serial or driver.needs_host:
                        ids = ", ".join(d.id for d, _ in group.devices)
                        self.notes.append(f"driver {driver.name!r} offers no simulator ({ids})")
                    continue
                served = await self._start_one(sim)
                self.simulators.append(sim)
                for dev, _ in group.devices:
                    own = self.config.link_of(dev)
                    self.served[dev.id] = Served(dev, own, sim.client_link(served, own), served)
        except BaseException:
            await self.stop()
            raise
        for note in self.notes:
            log.warning("simulate: %s", note)
        return self.served

    def rewrite(self) -> Config:
        """The config with every simulated device's link pointed at its simulator."""
        links = dict(self.config.links)
        devices = []
        for dev in self.config.devices:
            served = self.served.get(dev.id)
            if served is None or not served.moved:
                devices.append(dev)
            elif isinstance(dev.link, str):  # a named link keeps its name
                links[dev.link] = served.link
                devices.append(dev)
            else:
                devices.append(dev.model_copy(update={"link": served.link}))
        return self.config.model_copy(update={"links": links, "devices": devices})

    def table(self) -> list[tuple[str, str, str, str]]:
        """Rows of device, configured driver, served as, address."""
        return [
            (dev_id, s.configured.driver, s.driver, str(s.address))
            for dev_id, s in self.served.items()
        ]

    async def stop(self) -> None:
        """Stop every simulator (each one even if another fails)."""
        sims, self.simulators = self.simulators, []
        for sim in sims:
            try:
                await sim.stop()
            except Exception:
                log.exception("simulate: stopping the simulator of link %s", sim.link_name)
