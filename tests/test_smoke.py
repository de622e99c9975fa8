from __future__ import annotations

from conftest import Gateway, command
from edge_proxy.ops.daemon import Daemon


async def test_read_roundtrip(gateway: Gateway, edge: Daemon) -> None:
    await gateway.send(command("r1", op="read", params={"points": ["brightness"]}))
    term = await gateway.terminal("r1")
    assert term["status"] == "completed"
    assert term["result"] == {"values": {"brightness": 0}}
