"""The driver contract suite: every driver, built-in or third-party, runs it against itself.

Use it from a driver package's tests (pytest with pytest-asyncio); the public names are
re-exported by :mod:`edge_proxy.testing`::

    from edge_proxy.testing import ContractSetup, DriverContract

    class TestMyDriver(DriverContract):
        @pytest.fixture
        async def contract(self) -> AsyncIterator[ContractSetup]:
            server = await start_my_test_device()          # a real device or simulator
            yield ContractSetup(driver=MyDriver, link=..., device=..., profile=...,
                                write_values={"setpoint": 12})
            await server.stop()

Each ``test_*`` method below then runs against the driver. Importing this module does not
import pytest: the test methods import it when they run, so a driver package can import its
test helpers (or ``edge_proxy.testing``) outside a test run. The ``contract`` fixture is the
test module's own; without one pytest reports "fixture 'contract' not found".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.drivers.api import Device, Driver, Link, OperationContext, set_current_operation
from edge_proxy.errors import EdgeProxyError, OperationAborted


@dataclass
class ContractSetup:
    """What the suite needs: a driver and one reachable device it can talk to."""

    driver: type[Driver]
    link: LinkConfig
    device: DeviceConfig
    profile: ProfileConfig
    #: point -> value pairs that are written and read back (writable and readable points)
    write_values: Mapping[str, Any] = field(default_factory=dict)
    #: request commands to run, with their parameters; each must return a dict
    commands: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: a link mapping whose open() must fail (nothing listening there), if the driver has one
    unreachable: LinkConfig | None = None
    #: seconds one operation may take in this suite
    timeout: float = 5.0


async def _opened(setup: ContractSetup) -> tuple[Link, Device]:
    link = setup.driver.link_class("contract", setup.link)
    await asyncio.wait_for(link.open(), setup.timeout)
    device = setup.driver.device_class(link, setup.device, setup.profile)
    return link, device


@contextlib.asynccontextmanager
async def _device_for(setup: ContractSetup, needed: object, why: str) -> AsyncIterator[Device]:
    """The device on an opened link, the link closed afterwards; the test is skipped (``why``)
    unless ``needed`` is true."""
    import pytest

    if not needed:
        pytest.skip(why)
    link, device = await _opened(setup)
    try:
        yield device
    finally:
        await link.close()


class DriverContract:
    """Base class of a driver's contract tests; the subclass provides the ``contract`` fixture
    (an async fixture yielding a :class:`ContractSetup` for a reachable device)."""

    def test_driver_declaration(self, contract: ContractSetup) -> None:
        """The driver class names its link and device classes and checks its link config."""
        drv = contract.driver
        assert issubclass(drv, Driver)
        assert drv.name, "Driver.name must be set"
        assert issubclass(drv.link_class, Link)
        assert issubclass(drv.device_class, Device)
        problems = drv.check_link(contract.link)
        assert problems == [], f"check_link rejects the contract's own link: {problems}"
        assert drv.share_key("a", contract.link) == drv.share_key("a", contract.link)

    async def test_open_close_idempotent_and_reopen(self, contract: ContractSetup) -> None:
        """open() makes the link usable; close() twice is harmless; open() again works."""
        link, device = await _opened(contract)
        try:
            assert link.is_open
            await link.close()
            await link.close()
            assert not link.is_open
            await asyncio.wait_for(link.open(), contract.timeout)
            assert link.is_open
            await asyncio.wait_for(device.health(), contract.timeout)
        finally:
            await link.close()

    async def test_read_returns_every_requested_point(self, contract: ContractSetup) -> None:
        """read() returns exactly the requested points."""
        names = [n for n, p in contract.profile.points.items() if p.readable]
        async with _device_for(contract, names, "the profile has no readable points") as device:
            values = await asyncio.wait_for(device.read(names), contract.timeout)
            assert set(values) == set(names)
            one = await asyncio.wait_for(device.read(names[:1]), contract.timeout)
            assert set(one) == {names[0]}

    async def test_write_then_read_back(self, contract: ContractSetup) -> None:
        """Written values read back equal (for points that are both writable and readable)."""
        import pytest

        written = contract.write_values
        async with _device_for(contract, written, "no write_values given") as device:
            await asyncio.wait_for(device.write(written), contract.timeout)
            readable = [n for n in written if contract.profile.points[n].readable]
            if readable:
                back = await asyncio.wait_for(device.read(readable), contract.timeout)
                for name in readable:
                    assert back[name] == pytest.approx(written[name]), name

    async def test_commands_return_dicts(self, contract: ContractSetup) -> None:
        """execute() of each request command returns a dict of result values."""
        async with _device_for(contract, contract.commands, "no commands given") as device:
            for name, params in contract.commands.items():
                result = await asyncio.wait_for(device.execute(name, params), contract.timeout)
                assert isinstance(result, dict), name

    async def test_aborted_operation_sends_nothing(self, contract: ContractSetup) -> None:
        """An operation whose command was cancelled stops at its first checkpoint."""
        import pytest

        names = [n for n, p in contract.profile.points.items() if p.readable]
        link, device = await _opened(contract)
        ctx = OperationContext("contract")
        ctx.abort("cancelled")
        set_current_operation(ctx)
        try:
            with pytest.raises(OperationAborted):
                if names:
                    await asyncio.wait_for(device.read(names[:1]), contract.timeout)
                elif contract.commands:
                    name, params = next(iter(contract.commands.items()))
                    await asyncio.wait_for(device.execute(name, params), contract.timeout)
                else:
                    raise OperationAborted("nothing to run")
        finally:
            set_current_operation(None)
            await link.close()

    async def test_unreachable_open_fails_with_a_typed_error(self, contract: ContractSetup) -> None:
        """open() of an unreachable endpoint raises EdgeProxyError or OSError, in time."""
        import pytest

        if contract.unreachable is None:
            pytest.skip("no unreachable link given")
        link = contract.driver.link_class("contract-unreachable", contract.unreachable)
        try:
            with pytest.raises((EdgeProxyError, OSError, TimeoutError)):
                await asyncio.wait_for(link.open(), contract.timeout)
            assert not link.is_open
        finally:
            await link.close()
