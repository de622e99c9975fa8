"""A third-party driver package, installed by the test, is found by name and passes the suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge_proxy.config import DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.drivers import Driver, registry
from edge_proxy.ops.daemon import Daemon
from edge_proxy.testing import ContractSetup, DriverContract
from tests.builders import PILLAR_PROFILE, base_tree, command, make_config
from tests.integration.support import Gateway, installed_package

PLUGIN = Path(__file__).parent / "plugins" / "echo_plugin"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[type[Driver]]:
    """pip-install the plugin package into a directory put on sys.path, as a user would."""
    with installed_package(PLUGIN, tmp_path_factory.mktemp("site"), "edge_proxy_echo"):
        yield registry.get("echo-test")


def test_found_by_name(installed_plugin: type[Driver]) -> None:
    assert installed_plugin.name == "echo-test"
    assert installed_plugin.__module__ == "edge_proxy_echo"
    assert "echo-test" in registry.names()


async def test_config_and_command_through_the_plugin(
    installed_plugin: type[Driver], gateway: Gateway
) -> None:
    tree = base_tree(gateway.url)
    tree["links"]["echo"] = {"driver": "echo-test"}
    tree["devices"].append({"id": "echo-1", "type": "pillar", "profile": "pillar", "link": "echo"})
    daemon = Daemon(make_config(tree))
    await daemon.start()
    try:
        await gateway.wait(lambda f: f["type"] == "REGISTER")
        await gateway.send(command("e1", "echo-1", "SET_BRIGHTNESS", params={"brightness": 7}))
        assert (await gateway.terminal("e1"))["status"] == "completed"
        await gateway.send(command("e2", "echo-1", "STATUS"))
        term = await gateway.terminal("e2")
        assert term["result"]["values"] == {"door_state": 42, "brightness": 7, "temperature": 42}
    finally:
        await daemon.stop(grace=1.0)


def test_unknown_plugin_key_is_a_config_error(installed_plugin: type[Driver]) -> None:
    tree = base_tree()
    tree["links"]["echo"] = {"driver": "echo-test", "refuse": False, "colour": "red"}
    from edge_proxy.config import ConfigError

    with pytest.raises(ConfigError) as info:
        make_config(tree)
    assert any("links.echo.colour" in e for e in info.value.errors)


class TestEchoPluginContract(DriverContract):
    @pytest.fixture
    async def contract(self, installed_plugin: type[Driver]) -> AsyncIterator[ContractSetup]:
        yield ContractSetup(
            driver=installed_plugin,
            link=LinkConfig(driver="echo-test"),
            device=DeviceConfig(id="echo-1", profile="pillar", link="x"),
            profile=ProfileConfig.model_validate(PILLAR_PROFILE),
            write_values={"brightness": 9},
            unreachable=LinkConfig.model_validate({"driver": "echo-test", "refuse": True}),
        )
