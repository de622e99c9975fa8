"""Registry entries of the line drivers and the checks of their ``late_reply_grace`` and
``max_buffer`` keys."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from edge_proxy.config import LinkConfig, parse_duration, parse_size
from edge_proxy.drivers import Device, Link
from edge_proxy_drivers.line.client import MIN_BUFFER, LineSerialLink, LineTcpLink
from edge_proxy_drivers.line.device import LineDevice
from edge_proxy_drivers.ports import PortSharingDriver

if TYPE_CHECKING:
    pass


def _check_line_keys(link: LinkConfig) -> list[str]:
    errors = []
    if "late_reply_grace" in link.extra_keys:
        value = link.extra_keys["late_reply_grace"]
        try:
            parse_duration(value)
        except ValueError as exc:
            errors.append(f".late_reply_grace: {exc} (got {value!r})")
    if "max_buffer" in link.extra_keys:
        value = link.extra_keys["max_buffer"]
        try:
            size = parse_size(value)
        except ValueError as exc:
            errors.append(f".max_buffer: {exc} (got {value!r})")
        else:
            if size < MIN_BUFFER:
                errors.append(f".max_buffer: at least {MIN_BUFFER} bytes (1KiB) (got {value!r})")
    return errors


class _LineDriver(PortSharingDriver):
    """What both line drivers share: the device adapter and their link keys."""

    #: A line server answering the devices' profile commands.
    simulator_class: ClassVar[str] = "edge_proxy_drivers.line.simulator:LineSimulator"

    device_class: ClassVar[type[Device]] = LineDevice
    extra_link_keys: ClassVar[frozenset[str]] = frozenset({"late_reply_grace", "max_buffer"})
    needs_port: ClassVar[bool] = True

    @classmethod
    def check_link(cls, link: LinkConfig) -> list[str]:
        """Check the line driver's own keys too."""
        return super().check_link(link) + _check_line_keys(link)


class LineTcpDriver(_LineDriver):
    """Registry entry of the ``line-tcp`` driver."""

    name: ClassVar[str] = "line-tcp"
    link_class: ClassVar[type[Link]] = LineTcpLink
    needs_host: ClassVar[bool] = True


class LineSerialDriver(_LineDriver):
    """Registry entry of the ``line-serial`` driver."""

    name: ClassVar[str] = "line-serial"
    link_class: ClassVar[type[Link]] = LineSerialLink
    serial: ClassVar[bool] = True
