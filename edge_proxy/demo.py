"""``edge-proxy demo``: a development Gateway and an edge in one process, and a short script."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .config import Config
from .daemon import Daemon
from .devgateway import DevGateway


async def run_demo(config: Config, out: Callable[[str], None] = print) -> int:
    """Start a Gateway and the edge, send a few commands, print the exchange; 0 on success."""
    gw = DevGateway("127.0.0.1", 0, printer=out)
    port = await gw.start()
    config = config.model_copy(
        update={"gateway": config.gateway.model_copy(update={"url": f"ws://127.0.0.1:{port}"})}
    )
    daemon = Daemon(config)
    edge = config.edge.id
    out(f"== development Gateway on ws://127.0.0.1:{port}; starting edge {edge}")
    await daemon.start()
    ok = True
    try:
        await gw.wait_for(lambda m: m.get("type") == "REGISTER", timeout=10)
        devices = [d for d in config.devices if d.enabled]
        first = devices[0].id
        profile = config.profiles[devices[0].profile]
        writable = next(
            (
                n
                for n, p in profile.points.items()
                if p.writable and p.type not in {"bool", "string"}
            ),
            None,
        )
        script: list[tuple[str, dict[str, Any], str]] = [
            (
                "a read of every readable point",
                gw.command(f"{edge}:{first}", op="read"),
                "completed",
            ),
        ]
        if writable is not None:
            point = profile.points[writable]
            value = int(point.max) if point.max is not None else 1
            script.append(
                (
                    f"a write of {writable}",
                    gw.command(f"{edge}:{first}", op="write", params={"values": {writable: value}}),
                    "completed",
                )
            )
        for code, cmd in profile.commands.items():
            params = {
                n: (p.max if p.max is not None else 1) for n, p in cmd.params.items() if p.required
            }
            params = {
                n: int(v) if isinstance(v, float) and v.is_integer() else v
                for n, v in params.items()
            }
            script.append(
                (
                    f"the profile command {code}",
                    gw.command(f"{edge}:{first}", code, params=params),
                    "completed",
                )
            )
            break
        script.append(
            (
                "an invalid command (a point that does not exist)",
                gw.command(f"{edge}:{first}", op="write", params={"values": {"no_such_point": 1}}),
                "error",
            )
        )
        for title, msg, expected in script:
            out(f"\n== {title}")
            reply = await gw.call(msg)
            got = reply.get("status") if reply["type"] == "command_response" else "error"
            if got != expected:
                out(f"!! expected {expected}, got {got}")
                ok = False
        out("\n== QUERY devices")
        reply = await gw.call({"type": "QUERY", "requestRef": "q-1", "query": "devices"})
        ok = ok and reply.get("status") == "completed"
    except (asyncio.TimeoutError, ConnectionError) as exc:
        out(f"!! demo failed: {type(exc).__name__}: {exc}")
        ok = False
    finally:
        await daemon.stop(grace=2.0)
        await gw.stop()
    out("\n== demo " + ("finished" if ok else "FAILED"))
    return 0 if ok else 1
