"""Registry entries of the Modbus drivers and the checks of their link keys.

Driver link keys, beyond the core's: ``max_gap`` (registers a merged read may span that no
point asked for, default 8; 0 for devices that refuse reads across holes),
``max_read_registers`` (default 125), ``max_read_bits`` (default 2000), ``late_reply_wait`` and
``broadcast_turnaround``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from edge_proxy.config import LinkConfig, parse_duration
from edge_proxy.drivers import Device, Link
from edge_proxy_drivers.modbus.client import (
    MAX_BITS,
    MAX_REGISTERS,
    ModbusAsciiLink,
    ModbusRtuOverTcpLink,
    ModbusSerialLink,
    ModbusTcpLink,
)
from edge_proxy_drivers.modbus.device import ModbusDevice
from edge_proxy_drivers.ports import PortSharingDriver

if TYPE_CHECKING:
    pass


def _check_int_key(link: LinkConfig, key: str, low: int, high: int) -> list[str]:
    if key not in link.extra_keys:
        return []
    value = link.extra_keys[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return [f".{key}: expected an integer {low}..{high} (got {value!r})"]
    return []


class _ModbusDriver(PortSharingDriver):
    """What the four Modbus drivers share: the device class and the read-merging keys."""

    #: A pymodbus server with one unit per device, framed as this driver frames.
    simulator_class: ClassVar[str] = "edge_proxy_drivers.modbus.simulator:ModbusSimulator"

    device_class: ClassVar[type[Device]] = ModbusDevice
    extra_link_keys: ClassVar[frozenset[str]] = frozenset(
        {
            "max_gap",
            "max_read_registers",
            "max_read_bits",
            "late_reply_wait",
            "broadcast_turnaround",
        }
    )

    @classmethod
    def check_link(cls, link: LinkConfig) -> list[str]:
        """Also check the driver's own keys: read merging limits and late_reply_wait."""
        errors = super().check_link(link)
        for key in ("late_reply_wait", "broadcast_turnaround"):
            if key in link.extra_keys:
                try:
                    parse_duration(link.extra_keys[key])
                except ValueError as exc:
                    errors.append(f".{key}: {exc} (got {link.extra_keys[key]!r})")
        errors += _check_int_key(link, "max_gap", 0, MAX_REGISTERS)
        errors += _check_int_key(link, "max_read_registers", 1, MAX_REGISTERS)
        errors += _check_int_key(link, "max_read_bits", 1, MAX_BITS)
        if cls.serial and link.port is None:
            errors.append(f".port: driver {link.driver!r} needs a serial device path")
        return errors


class ModbusTcpDriver(_ModbusDriver):
    """Registry entry of ``modbus-tcp``: Modbus TCP with MBAP framing."""

    name: ClassVar[str] = "modbus-tcp"
    link_class: ClassVar[type[Link]] = ModbusTcpLink
    needs_host: ClassVar[bool] = True
    needs_port: ClassVar[bool] = True


class ModbusRtuOverTcpDriver(_ModbusDriver):
    """Registry entry of ``modbus-rtu-over-tcp``: RTU frames through a TCP connection."""

    name: ClassVar[str] = "modbus-rtu-over-tcp"
    link_class: ClassVar[type[Link]] = ModbusRtuOverTcpLink
    needs_host: ClassVar[bool] = True
    needs_port: ClassVar[bool] = True


class ModbusRtuDriver(_ModbusDriver):
    """Registry entry of ``modbus-rtu``: a serial line with RTU framing."""

    name: ClassVar[str] = "modbus-rtu"
    link_class: ClassVar[type[Link]] = ModbusSerialLink
    serial: ClassVar[bool] = True


class ModbusAsciiDriver(_ModbusDriver):
    """Registry entry of ``modbus-ascii``: a serial line with ASCII framing."""

    name: ClassVar[str] = "modbus-ascii"
    link_class: ClassVar[type[Link]] = ModbusAsciiLink
    serial: ClassVar[bool] = True
