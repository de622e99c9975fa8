"""Faults between the edge and the Gateway: a silent dead link, and a Gateway that reads slowly.

protocol.md, delivery guarantees 1 (exactly one terminal per accepted requestRef), 2 (sent
means received: a message leaves the outbox only once a pong proves the Gateway has it, and is
sent again after the next REGISTER with the same messageId) and 4 (a bounded outbox; drops
counted, terminal messages last).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.builders import command
from tests.integration.faults.conftest import EdgeFactory, ProxyFactory
from tests.integration.faults.edge import (
    acked,
    add_device,
    add_telemetry,
    all_answered,
    barrier,
    control_status,
    edge_tree,
    exactly_once_problems,
    pillar_profile,
    set_if_known,
    status_report,
    terminal_ids,
    write_config,
)
from tests.integration.faults.parts import poll_until
from tests.integration.support import Gateway

pytestmark = pytest.mark.faults

NOT_REPLAYED = ("REGISTER", "HEARTBEAT")  # per connection, never part of the outbox


def _registers(gw: Gateway) -> list[int]:
    """Indices of the REGISTER frames the Gateway received."""
    return [i for i, f in enumerate(gw.frames) if f.get("type") == "REGISTER"]


async def test_messages_sent_into_a_black_hole_are_resent_after_register(
    gw: Gateway, proxies: ProxyFactory, edges: EdgeFactory, tmp_path: Path
) -> None:
    proxy = await proxies(gw, tap=True)
    tree = edge_tree(
        proxy.url,
        heartbeat_interval="300ms",
        ping_interval="300ms",
        ping_timeout="1s",
        open_timeout="1s",
    )
    add_device(tree, "fast-1", "sim", {"driver": "simulated"})
    add_device(tree, "slow-1", "slow", {"driver": "simulated", "latency": "150ms"})
    await edges(write_config(tree, tmp_path / "edge.yaml"))
    await gw.wait(lambda f: f["type"] == "REGISTER", timeout=20)

    before = [f"pre-{i}" for i in range(3)]
    for i, ref in enumerate(before):
        await gw.send(command(ref, "fast-1", op="write", params={"values": {"mode": i}}))
    await poll_until(all_answered(gw, before), 10, "terminals before the black hole")

    # ten commands on a slow device: accepted now, answered while the link is a black hole
    refs = [f"bh-{i}" for i in range(10)]
    for i, ref in enumerate(refs):
        params = {"values": {"mode": i + 1}}
        await gw.send(command(ref, "slow-1", op="write", params=params, timeout=30000))
    await gw.wait(lambda f: f["type"] == "ack" and f["requestRef"] in refs, count=len(refs))
    proxy.set_mode("blackhole")
    attempts = proxy.accepted
    # nothing was closed: only WebSocket ping/pong can tell the edge that its link is dead
    await poll_until(lambda: proxy.accepted > attempts, 15, "the edge giving up a silent dead link")
    received_before = {f.get("messageId") for f in gw.frames}
    first_registers = len(_registers(gw))
    faulty_conns = proxy.accepted
    await proxy.restore()
    await gw.wait(lambda f: f["type"] == "REGISTER", timeout=15, count=first_registers + 1)
    await poll_until(all_answered(gw, refs), 15, "a terminal for every accepted command")
    await barrier(gw, "probe")

    assert acked(gw, refs) == refs
    assert not exactly_once_problems(gw, before + refs), exactly_once_problems(gw, before + refs)
    # what the edge wrote into the black hole, as the tap saw it
    lost: list[dict[str, Any]] = [
        m
        for number, m in proxy.edge_messages()
        if number <= faulty_conns
        and m.get("type") not in NOT_REPLAYED
        and m.get("messageId") not in received_before
    ]
    lost_terminals = [m for m in lost if m.get("type") in ("command_response", "error")]
    assert lost_terminals, "setup: no terminal message was sent into the black hole"
    after = gw.frames[_registers(gw)[first_registers] :]
    after_ids = [f.get("messageId") for f in after]
    missing = [
        (m.get("type"), m.get("requestRef"), m.get("messageId"))
        for m in lost
        if m.get("messageId") not in after_ids
    ]
    assert not missing, (
        "sent into the black hole and never sent again after the next REGISTER "
        f"(with the same messageId): {missing}"
    )
    # and in the order they were first sent
    again = [after_ids.index(m.get("messageId")) for m in lost]
    assert again == sorted(again), "resent out of order"


# ---------------------------------------------------------------- a Gateway that reads slowly

SLOW_RATE = 1024.0  # bytes/s the Gateway reads
WIDE_POINTS = 100  # a read of every point is a terminal of about 2.5 KB
FLOOD_WAVES = 3
FLOOD_WAVE = 500  # commands per wave: 3.7 MB of answers, more than the kernel buffers
OUTBOX_MAX_MESSAGES = 300
RESEND_BATCH = 10  # answers to re-sent commands: 25 KB at a time, a fifth of the outbox
# A bounded outbox and a bounded de-duplication store (which here remembers every flood
# command, a few MB): the whole flood fits in this much more memory than the idle edge uses.
RSS_GROWTH_MAX_MIB = 64


async def test_slow_gateway_bounded_memory_counted_drops_no_lost_terminal(
    gw: Gateway, proxies: ProxyFactory, edges: EdgeFactory, tmp_path: Path, short_dir: Path
) -> None:
    proxy = await proxies(gw, rcvbuf=4096)
    sock = str(short_dir / "ctl.sock")
    tree = edge_tree(
        proxy.url,
        sock,
        outbox={"max_messages": OUTBOX_MAX_MESSAGES, "max_bytes": "128KiB"},
    )
    # the de-duplication store remembers every flood command: it tells which were accepted
    tree["commands"].update({"dedup_max": 5000, "max_queued_per_link": 1000})
    set_if_known(tree, ("commands", "dedup_max_bytes"), "16MiB")
    tree["profiles"]["wide"] = pillar_profile(WIDE_POINTS)
    devices = [f"w-{i}" for i in range(4)]
    for i, dev in enumerate(devices):
        add_device(tree, dev, f"sim-{i}", {"driver": "simulated"}, profile="wide")
    points = [f"p{i}" for i in range(WIDE_POINTS)]
    add_telemetry(tree, "wide", "100ms", points)
    edge = await edges(write_config(tree, tmp_path / "edge.yaml"))
    await gw.wait(lambda f: f["type"] == "REGISTER", timeout=20)

    def read_all(ref: str, n: int) -> dict[str, Any]:
        dev = devices[n % len(devices)]
        return command(ref, dev, op="read", params={"points": points}, timeout=60000)

    warm = [f"warm-{i}" for i in range(40)]
    for n, ref in enumerate(warm):
        await gw.send(read_all(ref, n))
    await poll_until(all_answered(gw, warm), 10, "warm-up commands answered")
    baseline = edge.rss_kib()
    peak = baseline

    proxy.set_mode("throttle", SLOW_RATE)
    refs: list[str] = []
    after_wave: list[int] = []
    outbox_peak = 0
    for wave in range(FLOOD_WAVES):
        for n in range(FLOOD_WAVE):
            ref = f"f{wave}-{n}"
            refs.append(ref)
            await gw.send(read_all(ref, n))
            if n % 50 == 0:
                peak = max(peak, edge.rss_kib())
        # the wave is taken in and run while its results cannot leave
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            report = await control_status(sock)
            outbox_peak = max(outbox_peak, report["outbox"]["messages"])
            peak = max(peak, edge.rss_kib())
            if not report["inFlight"]:
                break
            assert asyncio.get_running_loop().time() < deadline, "flood never ran through"
            await asyncio.sleep(0.1)  # sampling memory while polling the status
        after_wave.append(edge.rss_kib())
        peak = max(peak, after_wave[-1])
    report = await control_status(sock)
    proxy.set_mode("pass")

    print(f"RSS KiB: baseline {baseline}, after waves {after_wave}, peak {peak}")
    print(f"outbox while throttled: {report['outbox']}, most messages seen {outbox_peak}")
    assert outbox_peak <= OUTBOX_MAX_MESSAGES
    dropped = sum(report["outbox"]["dropped"].values())
    assert dropped > 0, f"setup: the outbox never overflowed: {report['outbox']}"
    # every message dropped is counted where an operator looks
    status = await status_report(tmp_path / "edge.yaml")
    assert sum(status["outbox"]["dropped"].values()) >= dropped
    assert peak - baseline <= RSS_GROWTH_MAX_MIB * 1024, (baseline, after_wave, peak)

    await barrier(gw, "probe", timeout=30)
    seen = terminal_ids(gw)
    acked_before = set(acked(gw, refs))
    # Which of the commands without an answer had the edge accepted? Their ack may have been
    # dropped too (only terminals are kept last), so ask the edge: a COMMAND sent again is
    # answered "duplicate" when its requestRef was accepted before (guarantee 3), and is run
    # afresh when it had been rejected (and its error dropped, which the protocol allows).
    unanswered = [ref for ref in refs if ref not in seen]
    for n, ref in enumerate(unanswered):
        await gw.send(read_all(ref, n))
        if n % RESEND_BATCH == RESEND_BATCH - 1:  # the outbox must not overflow again
            await barrier(gw, f"probe-{n}")
    await barrier(gw, "probe-end")
    again = {
        f["requestRef"]: f["status"]
        for f in gw.frames
        if f.get("type") == "ack" and f.get("requestRef") in set(unanswered)
    }  # the last ack of each: the answer to the second COMMAND
    lost = sorted(r for r in unanswered if r in acked_before or again.get(r) == "duplicate")
    problems = exactly_once_problems(gw, seen)
    some = dict(list(problems.items())[:5])
    assert not lost and not problems, (
        f"{len(lost)} accepted commands whose terminal never arrived (e.g. {lost[:5]}); "
        f"{len(problems)} with more than one terminal messageId: {some}"
    )
