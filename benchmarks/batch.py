"""A BATCH read of 1,000 devices over 10 Modbus TCP links, beside bare pymodbus doing the same.

Run: ``.venv/bin/python benchmarks/batch.py [--rounds 10] [--links 10] [--units 100]``
(and ``--profile``, ``--smoke``)

Three processes besides this driver, all on loopback:

* the Modbus servers (``common.py modbus-server``): one pymodbus TCP server per link, one unit
  per device, in a process of their own so neither side pays for them;
* the edge daemon (``python -m edge_proxy run``), one modbus-tcp link per server and one device
  per unit; the driver, as its Gateway, sends one ``BATCH`` read of every device (``targets:
  "*"``) and times it to the ``command_response``, with its validation, queues, state
  tracking, progress updates and the 1,000-device result;
* the baseline (this file with ``--bare``): the floor for the same reads, one
  ``AsyncModbusTcpClient`` per link, connected once like the edge's links, each reading its
  units one after another (a link carries one transaction at a time), the links in parallel.

Rounds alternate edge and baseline so that the machine's noise falls on both. Wall is the
median round (the edge's from the COMMAND's send to its terminal here, the baseline's timed in
its own process); CPU is each side's own process CPU (``/proc/<pid>/stat``) per round.
The issue's target: within 1.5x of bare pymodbus.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import common


def batch_read() -> dict[str, Any]:
    """One BATCH reading the benchmark point of every device."""
    return {
        "type": "COMMAND",
        "targetClientId": f"{common.EDGE_ID}:*",
        "command": {
            "commandType": "BATCH",
            "operationType": "read",
            "deviceType": "pillar",
            "parameters": {"targets": "*", "points": [common.POINT]},
        },
        "timeout": 120000,
        "version": "1.0",
    }


async def bare(ports: list[int], units: int) -> None:
    """The baseline process: a client per link; each request line is one round of reads."""
    from pymodbus.client import AsyncModbusTcpClient

    clients = [AsyncModbusTcpClient(common.HOST, port=p, timeout=2, retries=0) for p in ports]
    for client in clients:
        if not await client.connect():
            raise RuntimeError("no Modbus server")

    async def one_link(client: AsyncModbusTcpClient) -> None:
        for unit in range(1, units + 1):
            rsp = await client.read_holding_registers(common.ADDRESS, count=1, device_id=unit)
            if rsp.isError():
                raise RuntimeError(f"unit {unit}: {rsp}")

    async def one_round(_request: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        await asyncio.gather(*(one_link(c) for c in clients))
        return {"wall": time.perf_counter() - start}

    await common.serve_helper({}, one_round)
    for client in clients:
        client.close()


async def body(args: argparse.Namespace) -> None:
    if args.smoke:
        args.rounds, args.links, args.units = 2, 2, 10
    targets = args.links * args.units
    async with common.Bench(args) as bench:
        ports = await bench.modbus_servers(args.links, args.units)
        devices = {
            f"plc-{i}": [f"p-{i}-{u}" for u in range(1, args.units + 1)] for i in range(args.links)
        }
        edge = await bench.start_edge(common.edge_tree(common.modbus_links(ports), devices))
        baseline = await bench.helper(
            __file__, "--bare", "--units", str(args.units), "--ports", ",".join(map(str, ports))
        )

        async def edge_round() -> common.Run:
            latency, terminal = await bench.gateway.request("edge", batch_read(), timeout=120)
            succeeded = terminal["result"]["summary"]["succeeded"]
            if succeeded != targets:
                raise RuntimeError(f"BATCH: {succeeded} of {targets} succeeded")
            return common.Run([latency], latency)

        async def bare_round() -> common.Run:
            wall = float((await baseline.call({}))["wall"])
            return common.Run([wall], wall)

        await edge_round()  # warm-up: connections, first reads
        await bare_round()
        runs: dict[str, list[common.Run]] = {"edge": [], "bare": []}
        for _ in range(args.rounds):
            turns = (("edge", edge.pid, edge_round), ("bare", baseline.pid, bare_round))
            for side, pid, stretch in turns:
                runs[side].append(await common.measured(pid, stretch(), bench.server_pid))

        bench.header()
        report(args, runs)


def report(args: argparse.Namespace, runs: dict[str, list[common.Run]]) -> None:
    targets = args.links * args.units

    def wall(side: str) -> float:
        return statistics.median(r.wall for r in runs[side]) * 1000

    def cpu(side: str, server: bool = False) -> float:
        total = sum(r.server_cpu if server else r.cpu for r in runs[side])
        return total / len(runs[side]) * 1000

    common.side_by_side(
        f"BATCH read of {targets} devices over {args.links} Modbus TCP links, "
        f"{args.rounds} rounds (ms per round)",
        "bare pymodbus",
        [("wall (median)", wall("edge"), wall("bare")), ("CPU", cpu("edge"), cpu("bare"))],
        digits=1,
    )
    print(
        f"\nCPU per device: edge-proxy {cpu('edge') / targets:.3f} ms, "
        f"bare pymodbus {cpu('bare') / targets:.3f} ms"
    )
    print(common.server_note("round", cpu("edge", True), "bare pymodbus", cpu("bare", True)))
    print("target: edge-proxy within 1.5x of bare pymodbus")


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--links", type=int, default=10)
    p.add_argument("--units", type=int, default=100, help="devices per link")
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ports", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare:
        asyncio.run(bare([int(x) for x in args.ports.split(",")], args.units))
    else:
        common.run_main(body, args)


if __name__ == "__main__":
    main()
