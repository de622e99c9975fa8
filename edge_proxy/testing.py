"""The driver contract suite (public): ``from edge_proxy.testing import DriverContract``.

The suite lives in :mod:`edge_proxy.drivers.contract`; importing either module imports pytest
only once a contract test runs.
"""

from edge_proxy.drivers.contract import ContractSetup, DriverContract

__all__ = ["ContractSetup", "DriverContract"]
