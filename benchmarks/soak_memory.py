"""Memory over a long run: does anything grow with the number of commands served?

Run: ``.venv/bin/python benchmarks/soak_memory.py [--commands 60000] [--window 2s]``

A real WebSocket Gateway sends a steady mix of commands (reads, writes, profile commands,
BATCHes, rejected frames, duplicates, timeouts) to an edge with simulated devices, in the same
process. ``tracemalloc`` measures the Python heap after each block of commands once the
de-duplication window has been filled once; a heap that keeps growing after that is a leak.
At the end the window is let empty, and the heap must fall back to about where it started.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tracemalloc
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from edge_proxy.config import parse_duration, validate_tree
from edge_proxy.drivers import registry
from edge_proxy.ops.daemon import Daemon

PROFILE: dict[str, Any] = {
    "points": {
        "brightness": {"table": "holding", "address": 1, "access": "rw", "max": 100},
        "mode": {"table": "holding", "address": 2, "access": "rw"},
    },
    "commands": {
        "SET_BRIGHTNESS": {
            "params": {"brightness": {"type": "int", "min": 0, "max": 100, "required": True}},
            "write": {"brightness": "{brightness}"},
        },
        "STATUS": {"read": ["brightness", "mode"]},
    },
}


def frames(i: int) -> list[dict[str, Any]]:
    """One round of the mix (the ref makes each command new)."""
    dev = f"p-{i % 20}"

    def cmd(ref: str, **command: Any) -> dict[str, Any]:
        return {
            "type": "COMMAND",
            "requestRef": ref,
            "targetClientId": f"soak:{dev}",
            "command": {"deviceId": dev, **command},
            "timeout": 2000,
            "version": "1.0",
        }

    out = [
        cmd(f"r{i}", operationType="read", parameters={"points": ["brightness"]}),
        cmd(f"w{i}", operationType="write", parameters={"values": {"mode": i % 7}}),
        cmd(f"s{i}", commandCode="SET_BRIGHTNESS", parameters={"brightness": i % 100}),
        cmd(f"bad{i}", commandCode="SET_BRIGHTNESS", parameters={"brightness": 500}),
    ]
    if i % 10 == 0:
        out.append(
            {
                "type": "COMMAND",
                "requestRef": f"b{i}",
                "targetClientId": "soak:*",
                "command": {
                    "commandType": "BATCH",
                    "commandCode": "STATUS",
                    "parameters": {"targets": "p-*"},
                },
                "version": "1.0",
            }
        )
    if i % 5 == 0:
        out.append(out[0])  # a duplicate
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=60000)
    parser.add_argument("--window", default="2s", help="dedup_window for the run")
    args = parser.parse_args()
    window = parse_duration(args.window)

    terminals = 0
    done = asyncio.Event()
    expected = 0
    conn: list[ServerConnection] = []
    registered = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        nonlocal terminals
        conn.append(ws)
        async for frame in ws:
            msg = json.loads(frame)
            if msg["type"] == "REGISTER":
                registered.set()
            elif msg["type"] in ("command_response", "error"):
                terminals += 1
                if terminals >= expected:
                    done.set()

    server = await serve(handler, "127.0.0.1", 0, max_size=None)
    port = next(iter(server.sockets)).getsockname()[1]
    tree = {
        "edge": {"id": "soak"},
        "gateway": {"url": f"ws://127.0.0.1:{port}", "max_message_size": "16MiB"},
        "links": {f"l{k}": {"driver": "simulated", "health_interval": "1s"} for k in range(4)},
        "profiles": {"pillar": PROFILE},
        "devices": [
            {"id": f"p-{n}", "type": "pillar", "profile": "pillar", "link": f"l{n % 4}"}
            for n in range(20)
        ],
        "commands": {"dedup_window": window},
        "control": {"enabled": False},
    }
    daemon = Daemon(validate_tree(tree, registry.check_link))
    await daemon.start()
    await registered.wait()

    tracemalloc.start()
    samples: list[tuple[int, float]] = []
    sent = 0
    i = 0
    block = max(1, args.commands // 12)
    while sent < args.commands:
        batch = frames(i)
        i += 1
        expected += len(batch)
        for f in batch:
            await conn[-1].send(json.dumps(f))
        sent += len(batch)
        if i % 50 == 0:  # keep a bounded number in flight, like a real Gateway would
            await asyncio.wait_for(done.wait(), 60)
            done.clear()
        if sent // block > len(samples):
            if terminals < expected:
                await asyncio.wait_for(done.wait(), 60)
            done.clear()
            gc.collect()
            current, _ = tracemalloc.get_traced_memory()
            samples.append((sent, current / 1024))
    await asyncio.sleep(window + 0.5)  # let the dedup window empty once more
    daemon.engine.finished.expire()
    gc.collect()
    final = tracemalloc.get_traced_memory()[0] / 1024
    tracemalloc.stop()
    await daemon.stop(grace=1.0)
    server.close()
    await server.wait_closed()

    print(f"{sent} frames, {terminals} terminal messages, dedup_window {window:g}s")
    for count, kib in samples:
        print(f"  after {count:7d} frames: heap {kib:9.0f} KiB")
    print(f"  after the window emptied: heap {final:9.0f} KiB")
    settled = [kib for _, kib in samples[len(samples) // 2 :]]
    growth = (settled[-1] - settled[0]) / max(1, samples[-1][0] - samples[len(samples) // 2][0])
    print(f"  growth over the second half: {growth * 1024:.1f} bytes per frame")
    print(f"  in the dedup memory at the end: {len(daemon.engine.finished)} refs")


if __name__ == "__main__":
    asyncio.run(main())
