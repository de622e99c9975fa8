from __future__ import annotations

from edge_proxy.ops.daemon import Daemon
from tests.builders import command
from tests.integration.support import Gateway


async def test_read_roundtrip(gateway: Gateway, edge: Daemon) -> None:
    await gateway.send(command("r1", op="read", params={"points": ["brightness"]}))
    term = await gateway.terminal("r1")
    assert term["status"] == "completed"
    assert term["result"] == {"values": {"brightness": 0}}
