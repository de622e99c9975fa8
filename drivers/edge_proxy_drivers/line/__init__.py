"""The ``line-tcp`` and ``line-serial`` drivers: text request/reply protocols, one line each way.

:mod:`.client` holds the links (and how replies are kept paired with their requests),
:mod:`.device` the device adapter, :mod:`.driver` the registry entries and :mod:`.simulator`
the simulator ``edge-proxy simulate`` runs (imported only when used).
"""

from edge_proxy_drivers.line.client import LineLink, LineSerialLink, LineTcpLink
from edge_proxy_drivers.line.device import LineDevice
from edge_proxy_drivers.line.driver import LineSerialDriver, LineTcpDriver

__all__ = [
    "LineDevice",
    "LineLink",
    "LineSerialDriver",
    "LineSerialLink",
    "LineTcpDriver",
    "LineTcpLink",
]
