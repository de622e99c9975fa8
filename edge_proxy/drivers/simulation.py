"""How a driver offers a simulator of its devices, and the parts simulators share.

A driver offers one by overriding :meth:`~edge_proxy.drivers.Driver.simulator`: given a link
(name and mapping) and the devices configured on it, it returns a :class:`DeviceSimulator`, or
None when it has nothing to serve. ``edge-proxy simulate`` and ``edge-proxy demo`` group a
config's devices the way the daemon shares links (:meth:`Driver.share_key`), ask each link's
driver for a simulator, and start it at an :data:`Address`:

* :class:`TcpAddress` ``(host, port)``: listen there (port 0: any free port);
* :class:`SerialAddress` ``(path)``: be the device at the far end of a serial line whose
  client end is ``path`` (None: a new pseudo-terminal). :meth:`DeviceSimulator.start` builds
  the line as a :class:`NullModem` and hands the simulator the device end to open like the
  real device opens its port.

A subclass implements :meth:`~DeviceSimulator.serve_tcp` and/or
:meth:`~DeviceSimulator.serve_serial`, and :meth:`~DeviceSimulator.stop_serving`.

Claiming a configured serial path
---------------------------------
To serve a serial link on the path its config names, the client end's pseudo-terminal is
made reachable as that path by a symbolic link. :func:`claim_serial_path` creates it only
where that cannot hide anything real:

* the path does not exist at all (no file, no link), and its folder does: the symlink is made
  (``os.symlink`` refuses if anything appeared meanwhile);
* the path is a *dangling* symlink (its target is gone, as a symlink left behind by a
  simulator that was killed): it is replaced;
* anything else (a device node, a regular file, a live symlink such as udev's
  ``/dev/serial/by-id/...`` or another simulator's) is left alone: ``FileExistsError``, and
  the caller serves on a new pseudo-terminal instead.

The symlink is removed again on stop, if it still points at our pseudo-terminal. A missing
``/dev/ttyUSB0`` claimed by a root user is removed the same way; a simulator killed with
SIGKILL leaves it dangling, and the next run (or ``rm``) clears it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import pty
import socket
import stat
import tty
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TcpAddress:
    """A TCP endpoint; port 0 asks for any free port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SerialAddress:
    """The client end of a serial line; None asks for a new pseudo-terminal."""

    path: str | None = None

    def __str__(self) -> str:
        return self.path or "<new pty>"


#: Where a simulator serves.
Address: TypeAlias = TcpAddress | SerialAddress


def is_loopback(host: str | None) -> bool:
    """Whether a host names this machine's loopback interface (127.x, ::1, localhost)."""
    if not host:
        return False
    if host.lower().rstrip(".") in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ensure_bindable(host: str, port: int) -> None:
    """Raise the OSError a listener on host:port would get (in use, not permitted...)."""
    if port == 0:
        return
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)


def claim_serial_path(path: str, target: str) -> None:
    """Make ``path`` a symlink to ``target`` if nothing real is there (see the module notes)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        os.symlink(target, path)
        return
    if stat.S_ISLNK(info.st_mode) and not os.path.exists(path):
        os.unlink(path)  # dangling: what it pointed at is gone
        os.symlink(target, path)
        return
    kind = "a symlink in use" if stat.S_ISLNK(info.st_mode) else "a real file or device"
    raise FileExistsError(f"{path} exists ({kind}); it is not replaced")


def release_serial_path(path: str, target: str) -> None:
    """Remove the symlink ``path`` if it still points at ``target``."""
    with contextlib.suppress(OSError):
        if os.path.islink(path) and os.readlink(path) == target:
            os.unlink(path)


class NullModem:
    """A serial line inside this machine: two pseudo-terminals joined by a byte relay.

    A client opens :attr:`client_path` (the configured path, made a symlink, or a pty of its
    own) and the simulator opens :attr:`device_path`, each like a real serial port. Both slave
    ends stay open here too, so a side that closes and reopens its port never leaves the relay
    reading EIO.
    """

    def __init__(self, client_path: str | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._fds: list[int] = []
        try:
            client_master, client_slave = self._pair()
            device_master, device_slave = self._pair()
            self.pty_path = os.ttyname(client_slave)
            self.device_path = os.ttyname(device_slave)
            if client_path is not None:
                claim_serial_path(client_path, self.pty_path)
        except BaseException:
            self._close_fds()
            raise
        self.claimed = client_path
        self.client_path = client_path or self.pty_path
        self.dropped = 0
        self._peer = {client_master: device_master, device_master: client_master}
        for fd in self._peer:
            self._loop.add_reader(fd, self._relay, fd)
        self._closed = False

    def _pair(self) -> tuple[int, int]:
        master, slave = pty.openpty()
        self._fds += [master, slave]
        # Raw until a side configures its port: the default line discipline would echo.
        tty.setraw(slave)
        os.set_blocking(master, False)
        return master, slave

    def _relay(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # cannot happen while the slaves are held open; never spin
            log.warning("null modem %s: relay stopped: %s", self.client_path, exc)
            self._loop.remove_reader(fd)
            return
        try:
            os.write(self._peer[fd], data)
        except BlockingIOError:
            # Nobody reads that end and its queue is full: a wire drops bytes too.
            self.dropped += len(data)

    def _close_fds(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def close(self) -> None:
        """Stop relaying, remove the claimed symlink, close every descriptor."""
        if self._closed:
            return
        self._closed = True
        for fd in self._peer:
            self._loop.remove_reader(fd)
        if self.claimed is not None:
            release_serial_path(self.claimed, self.pty_path)
        self._close_fds()


class DeviceSimulator(ABC):
    """Serves the devices of one link the way their driver reaches them."""

    def __init__(
        self,
        link_name: str,
        link: LinkConfig,
        devices: Sequence[tuple[DeviceConfig, ProfileConfig]],
    ) -> None:
        self.link_name = link_name
        self.link = link
        self.devices = list(devices)
        #: Where the simulator serves, once started.
        self.served: Address | None = None
        self._line: NullModem | None = None
        self.setup()

    def setup(self) -> None:
        """Set up the simulator's own state, once the attributes above are set (a hook; the
        default does nothing), so that a subclass need not repeat the constructor."""
        return

    @property
    def configured_address(self) -> Address | None:
        """The address the link's config names: a serial path or host:port, if any."""
        if isinstance(self.link.port, str):
            return SerialAddress(self.link.port)
        if self.link.host and isinstance(self.link.port, int):
            return TcpAddress(self.link.host, self.link.port)
        return None

    async def start(self, address: Address) -> Address:
        """Serve at ``address``; returns where the devices are served (OSError if not there)."""
        if self.served is not None:
            raise RuntimeError(f"simulator of link {self.link_name} is already started")
        if isinstance(address, TcpAddress):
            port = await self.serve_tcp(address.host, address.port)
            self.served = TcpAddress(address.host, port)
            return self.served
        line = NullModem(address.path)
        try:
            await self.serve_serial(line.device_path)
        except BaseException:
            line.close()
            raise
        self._line = line
        self.served = SerialAddress(line.client_path)
        return self.served

    async def stop(self) -> None:
        """Stop serving; calling it again does nothing."""
        if self.served is None:
            return
        self.served = None
        try:
            await self.stop_serving()
        finally:
            line, self._line = self._line, None
            if line is not None:
                line.close()

    async def serve_tcp(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port) and return the port; OSError if it cannot."""
        raise OSError(f"the {self.link.driver} simulator cannot serve over TCP")

    async def serve_serial(self, path: str) -> None:
        """Open the serial port ``path`` as the device and answer on it."""
        raise OSError(f"the {self.link.driver} simulator cannot serve a serial line")

    @abstractmethod
    async def stop_serving(self) -> None:
        """Close what serve_tcp or serve_serial opened."""

    def client_link(self, served: Address, link: LinkConfig | None = None) -> LinkConfig:
        """``link`` (default: the simulator's own) pointed at the simulator serving at ``served``;
        a simulator that serves in another way than its driver connects overrides it."""
        link = self.link if link is None else link
        if isinstance(served, TcpAddress):
            if (link.host, link.port) == (served.host, served.port):
                return link
            return link.model_copy(update={"host": served.host, "port": served.port})
        if link.port == served.path:
            return link
        return link.model_copy(update={"port": served.path})
