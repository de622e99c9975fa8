"""Frame limits and terminal room, end to end over a real WebSocket Gateway.

protocol.md, guarantee 5: no frame exceeds ``gateway.max_frame``; a terminal that would is
cut to its failed targets (``result.truncated``, ``result.omitted``) and read whole with
``QUERY result`` in slices; REGISTER and ``QUERY devices`` are paged. Guarantee 1 with a
bounded outbox: a command is accepted only when its terminal has room.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from edge_proxy.config import Config
from edge_proxy.ops.daemon import Daemon
from tests.builders import base_tree, command, is_terminal, make_config
from tests.integration.support import Gateway

EdgeFactory = Callable[[Config], Awaitable[Daemon]]

MAX_FRAME = 16 * 1024


def many_devices_tree(gateway: Gateway, n: int, **gateway_keys: Any) -> dict[str, Any]:
    tree = base_tree(gateway.url)
    tree["gateway"].update(gateway_keys)
    tree["devices"] = [
        {"id": f"pillar-{i:04d}", "type": "pillar", "profile": "pillar", "link": "sim"}
        for i in range(n)
    ]
    tree["devices"].append(
        {"id": "gone", "type": "pillar", "profile": "pillar", "link": "sim", "enabled": False}
    )
    return tree


def frame_sizes(gateway: Gateway) -> list[int]:
    return [len(json.dumps(f, separators=(",", ":"), ensure_ascii=False)) for f in gateway.frames]


async def test_register_and_query_devices_are_paged(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    await edge_factory(make_config(many_devices_tree(gateway, 400, max_frame=MAX_FRAME)))
    (register,) = await gateway.wait(lambda f: f["type"] == "REGISTER")
    info = register["clientInfo"]
    assert info["devicesTruncated"] is True and info["devicesTotal"] == 401
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        ref = f"page-{offset}"
        await gateway.send(
            {"type": "QUERY", "requestRef": ref, "query": "devices", "offset": offset}
        )
        page = (await gateway.terminal(ref))["result"]
        assert page["total"] == 401 and page["devices"]
        seen += [d["deviceId"] for d in page["devices"]]
        offset = page.get("next")
    assert seen == [f"pillar-{i:04d}" for i in range(400)] + ["gone"]
    await gateway.send(
        {"type": "QUERY", "requestRef": "lim", "query": "devices", "offset": 10, "limit": 5}
    )
    page = (await gateway.terminal("lim"))["result"]
    assert [d["deviceId"] for d in page["devices"]] == [f"pillar-{i:04d}" for i in range(10, 15)]
    assert page["next"] == 15
    assert max(frame_sizes(gateway)) <= MAX_FRAME


async def test_an_oversized_batch_terminal_is_cut_and_read_back_in_slices(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    await edge_factory(make_config(many_devices_tree(gateway, 300, max_frame=MAX_FRAME)))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    await gateway.send(
        command(
            "big",
            code="STATUS",
            ctype="BATCH",
            params={"targets": ["pillar-*", "gone"], "batch": True},
        )
    )
    term = await gateway.terminal("big", timeout=30)
    result = term["result"]
    assert term["status"] == "partial"
    assert result["truncated"] is True
    assert result["summary"] == {"total": 301, "succeeded": 300, "failed": 1}
    assert list(result["results"]) == ["gone"]  # the failed target is kept
    assert result["omitted"] == 300
    slices: dict[str, Any] = {}
    offset: int | None = 0
    while offset is not None:
        ref = f"slice-{offset}"
        await gateway.send(
            {"type": "QUERY", "requestRef": ref, "query": "result", "ref": "big", "offset": offset}
        )
        page = (await gateway.terminal(ref))["result"]
        assert page["ref"] == "big" and page["total"] == 301
        slices.update(page["results"])
        offset = page.get("next")
    assert len(slices) == 301
    assert slices["gone"]["status"] == "failed"
    assert all(slices[f"pillar-{i:04d}"]["status"] == "completed" for i in range(300))
    assert max(frame_sizes(gateway)) <= MAX_FRAME


async def test_unknown_result_ref_is_an_error(gateway: Gateway, edge: Daemon) -> None:
    await gateway.send({"type": "QUERY", "requestRef": "q", "query": "result", "ref": "nope"})
    err = await gateway.terminal("q")
    assert err["type"] == "error" and err["code"] == "INVALID_COMMAND"


async def test_a_command_is_refused_when_the_outbox_cannot_hold_its_terminal(
    gateway: Gateway, edge_factory: EdgeFactory
) -> None:
    tree = base_tree(gateway.url)
    tree["gateway"]["outbox"] = {"max_messages": 3}
    daemon = await edge_factory(make_config(tree))
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    # three slow commands hold the three places their terminals need
    for i in range(3):
        await gateway.send(
            command(f"slow-{i}", "pillar-slow", op="read", params={"points": ["mode"]})
        )
    await gateway.wait(lambda f: f["type"] == "ack", count=3)
    await gateway.send(command("one-more", "pillar-001", op="read", params={"points": ["mode"]}))
    refused = await gateway.terminal("one-more")
    assert refused["type"] == "error" and refused["code"] == "OVERLOADED"
    for i in range(3):
        done = await gateway.terminal(f"slow-{i}", timeout=10)
        assert done["status"] == "completed"
    await gateway.wait(lambda f: is_terminal(f) and f["requestRef"] == "slow-2")
    # the room comes back once the terminals are confirmed
    await gateway.send(command("later", "pillar-001", op="read", params={"points": ["mode"]}))
    assert (await gateway.terminal("later"))["status"] == "completed"
    assert daemon.outbox.reserved == 0
