"""The driver API plugin authors implement, and the entry-point registry that finds drivers."""

from edge_proxy.drivers.api import (
    Device,
    Driver,
    DriverRegistry,
    Link,
    OperationContext,
    checkpoint,
    current_operation,
    registry,
    set_current_operation,
)

__all__ = [
    "Device",
    "Driver",
    "DriverRegistry",
    "Link",
    "OperationContext",
    "checkpoint",
    "current_operation",
    "registry",
    "set_current_operation",
]
