"""A 1,000-target BATCH over 10 Modbus TCP links, beside the same writes done with bare pymodbus.

Run: ``.venv/bin/python benchmarks/batch_modbus.py [--rounds 5] [--links 10] [--units 100]``

Both sides talk to the same real pymodbus servers on loopback (one server per link, one unit per
target) in the same process, round after round, alternating, so machine noise hits both alike.
The baseline is the floor: one ``AsyncModbusTcpClient`` per link, the targets of a link written
one after another (a link carries one transaction at a time), links in parallel. edge-proxy runs
the same writes as one BATCH command from a real WebSocket Gateway, with validation, queues,
state tracking, progress updates and the result message. The script prints wall and CPU times
and their ratios; the ratio is the number to watch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from websockets.asyncio.server import ServerConnection, serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_proxy.config import validate_tree
from edge_proxy.drivers import registry
from edge_proxy.ops.daemon import Daemon
from edge_proxy_drivers.modbus.simulator import modbus_device

PROFILE: dict[str, Any] = {
    "points": {"brightness": {"table": "holding", "address": 101, "access": "rw", "max": 100}},
    "commands": {
        "SET_BRIGHTNESS": {
            "params": {"brightness": {"type": "int", "min": 0, "max": 100, "required": True}},
            "write": {"brightness": "{brightness}"},
        }
    },
}


async def start_servers(links: int, units: int) -> list[tuple[ModbusTcpServer, int]]:
    """One pymodbus TCP server per link, ``units`` unit ids each."""
    from edge_proxy.config import ProfileConfig

    profile = ProfileConfig.model_validate(PROFILE)
    out = []
    for _ in range(links):
        server = ModbusTcpServer(
            [modbus_device(u, profile) for u in range(1, units + 1)],
            framer=FramerType.SOCKET,
            address=("127.0.0.1", 0),
        )
        await server.serve_forever(background=True)
        listener = server.transport
        assert isinstance(listener, asyncio.Server)
        out.append((server, int(listener.sockets[0].getsockname()[1])))
    return out


async def baseline(ports: list[int], units: int, value: int) -> None:
    """The same writes with bare pymodbus clients: sequential per link, links in parallel."""

    async def one_link(port: int) -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        await client.connect()
        try:
            for unit in range(1, units + 1):
                rsp = await client.write_register(101, value, device_id=unit)
                assert not rsp.isError()
        finally:
            client.close()

    await asyncio.gather(*(one_link(p) for p in ports))


class Gateway:
    """The smallest Gateway that can send a BATCH and wait for its result."""

    def __init__(self) -> None:
        self.conn: ServerConnection | None = None
        self.registered = asyncio.Event()
        self.results: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def handler(self, ws: ServerConnection) -> None:
        self.conn = ws
        async for frame in ws:
            msg = json.loads(frame)
            if msg.get("type") == "REGISTER":
                self.registered.set()
            fut = self.results.get(msg.get("requestRef", ""))
            if fut is not None and msg["type"] in ("command_response", "error"):
                fut.set_result(msg)

    async def batch(self, ref: str, value: int, targets: int) -> dict[str, Any]:
        assert self.conn is not None
        fut = asyncio.get_running_loop().create_future()
        self.results[ref] = fut
        cmd = {
            "type": "COMMAND",
            "requestRef": ref,
            "targetClientId": "bench:*",
            "command": {
                "commandType": "BATCH",
                "commandCode": "SET_BRIGHTNESS",
                "deviceType": "pillar",
                "parameters": {"targets": "*", "brightness": value},
            },
            "timeout": 60000,
            "version": "1.0",
        }
        await self.conn.send(json.dumps(cmd))
        result = await fut
        assert result.get("status") == "completed", result
        assert result["result"]["summary"]["succeeded"] == targets
        return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--links", type=int, default=10)
    parser.add_argument("--units", type=int, default=100)
    args = parser.parse_args()
    servers = await start_servers(args.links, args.units)
    ports = [p for _, p in servers]
    gw = Gateway()
    ws_server = await serve(gw.handler, "127.0.0.1", 0, max_size=None)
    gw_port = next(iter(ws_server.sockets)).getsockname()[1]
    tree: dict[str, Any] = {
        "edge": {"id": "bench"},
        "gateway": {"url": f"ws://127.0.0.1:{gw_port}", "max_message_size": "16MiB"},
        "links": {
            f"plc-{i}": {
                "driver": "modbus-tcp",
                "host": "127.0.0.1",
                "port": p,
                "timeout": "2s",
                "health_interval": "1h",
            }
            for i, p in enumerate(ports)
        },
        "profiles": {"pillar": PROFILE},
        "devices": [
            {
                "id": f"p-{i}-{u}",
                "type": "pillar",
                "profile": "pillar",
                "link": f"plc-{i}",
                "unit": u,
            }
            for i in range(args.links)
            for u in range(1, args.units + 1)
        ],
    }
    daemon = Daemon(validate_tree(tree, registry.check_link))
    await daemon.start()
    await gw.registered.wait()
    targets = args.links * args.units
    await gw.batch("warm-up", 1, targets)
    await baseline(ports, args.units, 1)

    wall_b: list[float] = []
    wall_e: list[float] = []
    cpu_b: list[float] = []
    cpu_e: list[float] = []
    for r in range(args.rounds):
        value = 10 + r
        c0, t0 = time.process_time(), time.perf_counter()
        await baseline(ports, args.units, value)
        c1, t1 = time.process_time(), time.perf_counter()
        await gw.batch(f"round-{r}", value + 50, targets)
        c2, t2 = time.process_time(), time.perf_counter()
        wall_b.append(t1 - t0)
        wall_e.append(t2 - t1)
        cpu_b.append(c1 - c0)
        cpu_e.append(c2 - c1)

    await daemon.stop(grace=1.0)
    ws_server.close()
    await ws_server.wait_closed()
    for server, _ in servers:
        await server.shutdown()  # type: ignore[no-untyped-call]

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    # CPU here includes the servers, which run in this process for both sides alike.
    print(f"{targets} writes over {args.links} Modbus TCP links, {args.rounds} rounds (median)")
    print(f"  bare pymodbus : wall {med(wall_b) * 1000:8.1f} ms   cpu {med(cpu_b) * 1000:8.1f} ms")
    print(f"  edge-proxy    : wall {med(wall_e) * 1000:8.1f} ms   cpu {med(cpu_e) * 1000:8.1f} ms")
    print(
        f"  ratio edge/bare: wall {med(wall_e) / med(wall_b):.2f}x   "
        f"cpu {med(cpu_e) / med(cpu_b):.2f}x"
    )
    extra = (med(cpu_e) - med(cpu_b)) / targets * 1000
    print(f"  edge-proxy's own CPU per target: {extra:.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
