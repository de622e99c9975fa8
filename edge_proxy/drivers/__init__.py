"""The driver API plugin authors implement, and the entry-point registry that finds drivers.

:mod:`~edge_proxy.drivers.api` holds the classes a driver implements, :mod:`.registry` the
registry, :mod:`.simulation` the simulator hook, :mod:`.contract` the contract test suite.
"""

from edge_proxy.drivers.api import (
    Device,
    Driver,
    Link,
    OperationContext,
    checkpoint,
    current_operation,
    set_current_operation,
)
from edge_proxy.drivers.registry import ENTRY_POINT_GROUP, DriverRegistry, registry
from edge_proxy.drivers.simulation import (
    Address,
    DeviceSimulator,
    SerialAddress,
    TcpAddress,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Address",
    "Device",
    "DeviceSimulator",
    "Driver",
    "DriverRegistry",
    "Link",
    "OperationContext",
    "SerialAddress",
    "TcpAddress",
    "checkpoint",
    "current_operation",
    "registry",
    "set_current_operation",
]
