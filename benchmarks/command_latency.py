"""SIMPLE read and SIMPLE write over Modbus TCP, one at a time: edge-proxy beside the floor.

Run: ``.venv/bin/python benchmarks/command_latency.py [--commands 2000] [--profile] [--smoke]``

Four processes, all on loopback:

* a pymodbus TCP server with one unit (``common.py modbus-server``), so neither side pays for it;
* the edge daemon (``python -m edge_proxy run``) with one modbus-tcp link and one device on it;
* the floor (``common.py responder``): a websockets client beside a bare
  ``AsyncModbusTcpClient`` that answers each COMMAND frame with one read (or write) and one
  reply frame; one WebSocket round trip plus one Modbus transaction, what the libraries cost;
* this driver, the Gateway: it sends each COMMAND to the edge or to the floor and times it from
  the send to the terminal, one command at a time.

Edge and floor take turns in blocks (``--blocks``) so that the machine's noise falls on both.
CPU per command is each side's own process CPU over its blocks, from ``/proc/<pid>/stat``.
The issue's targets: wall within 1.2x of the floor, CPU within 1.5x.
"""

from __future__ import annotations

import argparse
import functools

import common

OPS = ("read", "write")


async def body(args: argparse.Namespace) -> None:
    count, blocks, warm = (40, 2, 10) if args.smoke else (args.commands, args.blocks, 200)
    async with common.Bench(args) as bench:
        (port,) = await bench.modbus_servers(links=1, units=1)
        tree = common.edge_tree(common.modbus_links([port]), {"plc-0": ["dev"]})
        edge = await bench.start_edge(tree)
        floor = await bench.responder("--modbus-port", str(port))
        pids = {"edge": edge.pid, "floor": floor.pid}
        runs = {}
        for op in OPS:
            make = functools.partial(common.simple, "dev", op)
            turns = await bench.take_turns(pids, make, count, blocks=blocks, warm=warm)
            for side, run in turns.items():
                runs[op, side] = run
        bench.header()
        for op in OPS:
            e, f = runs[op, "edge"], runs[op, "floor"]
            common.side_by_side(
                f"SIMPLE {op} over Modbus TCP, {e.count} commands one at a time (ms)",
                "floor",
                [
                    ("wall p50", e.ms(50), f.ms(50)),
                    ("wall p99", e.ms(99), f.ms(99)),
                    ("CPU per command", e.cpu_per_command_ms, f.cpu_per_command_ms),
                ],
            )
            per_command = [r.server_cpu / max(1, r.count) * 1000 for r in (e, f)]
            print("  " + common.server_note("command", per_command[0], "the floor", per_command[1]))
        print("\ntargets: wall <= 1.2x the floor, CPU <= 1.5x the floor")


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--commands", type=int, default=2000, help="per operation and side")
    p.add_argument("--blocks", type=int, default=10, help="turns taken by edge and floor")
    common.run_main(body, p.parse_args())


if __name__ == "__main__":
    main()
