"""Built-in drivers run the driver contract suite of edge_proxy.testing against themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conftest import PILLAR_PROFILE
from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.testing import ContractSetup, DriverContract
from edge_proxy_drivers.simulated import SimulatedDriver


class TestSimulatedDriver(DriverContract):
    @pytest.fixture
    async def contract(self) -> AsyncIterator[ContractSetup]:
        yield ContractSetup(
            driver=SimulatedDriver,
            link=LinkConfig(driver="simulated"),
            device=DeviceConfig(id="sim-1", profile="pillar", link="x"),
            profile=ProfileConfig.model_validate(PILLAR_PROFILE),
            write_values={"brightness": 40, "mode": 3, "relay": True},
        )
