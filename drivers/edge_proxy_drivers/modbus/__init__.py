"""Modbus drivers: ``modbus-tcp``, ``modbus-rtu-over-tcp``, ``modbus-rtu`` and ``modbus-ascii``.

:mod:`.client` holds the links (one pymodbus client each), :mod:`.device` the unit adapter,
:mod:`.framing` which framing each driver uses, :mod:`.driver` the registry entries and
:mod:`.simulator` the simulator ``edge-proxy simulate`` runs (imported only when used).
"""

from edge_proxy_drivers.modbus.client import (
    BROADCAST_TURNAROUND,
    LATE_REPLY_WAIT,
    MIN_QUIET,
    ModbusAsciiLink,
    ModbusLink,
    ModbusRtuOverTcpLink,
    ModbusSerialLink,
    ModbusTcpLink,
)
from edge_proxy_drivers.modbus.device import (
    EXCEPTION_NAMES,
    READ_FUNCTIONS,
    ModbusDevice,
    exception_name,
)
from edge_proxy_drivers.modbus.driver import (
    ModbusAsciiDriver,
    ModbusRtuDriver,
    ModbusRtuOverTcpDriver,
    ModbusTcpDriver,
)

__all__ = [
    "BROADCAST_TURNAROUND",
    "EXCEPTION_NAMES",
    "LATE_REPLY_WAIT",
    "MIN_QUIET",
    "READ_FUNCTIONS",
    "ModbusAsciiDriver",
    "ModbusAsciiLink",
    "ModbusDevice",
    "ModbusLink",
    "ModbusRtuDriver",
    "ModbusRtuOverTcpDriver",
    "ModbusRtuOverTcpLink",
    "ModbusSerialLink",
    "ModbusTcpDriver",
    "ModbusTcpLink",
    "exception_name",
]
