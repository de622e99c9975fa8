"""A storm of random and mutated Gateway frames against a running daemon, over a real WebSocket.

The corpus, built before the storm and the same on every run, is :mod:`tests.fuzz_corpus`.
The frames go to the ``edge`` fixture through the ``gateway`` fixture. Bugs the storm found
are reproduced one by one at the end of this file, as regression tests.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from edge_proxy.ops.daemon import Daemon
from edge_proxy.wire import messages as protocol
from edge_proxy.wire.names import REQUEST_ERROR_CODES
from tests.builders import command, is_terminal
from tests.fuzz_corpus import DEVICES, MIN_FRAMES, Frame, build_corpus
from tests.integration.support import Gateway

#: What the storm may provoke: refusals, never a failure inside the edge (INTERNAL_ERROR).
ERROR_CODES = set(REQUEST_ERROR_CODES)
EMITTED_TYPES = {
    "REGISTER",
    "HEARTBEAT",
    "ack",
    "progress_update",
    "command_response",
    "error",
    "device_status",
    "telemetry",
}
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
POOL_REF_RE = re.compile(r'"(fz\d{6})"')


# ---------------------------------------------------------------------- the storm


async def wait_for(
    gateway: Gateway, pred: Callable[[dict[str, Any]], bool], timeout: float = 30.0
) -> dict[str, Any]:
    """Wait for the first received frame matching ``pred``, scanning each frame once.

    ``Gateway.wait`` rescans every frame on every arrival, which is quadratic in a storm.
    """
    index = 0
    found: list[dict[str, Any]] = []

    def scan() -> bool:
        nonlocal index
        while index < len(gateway.frames):
            frame = gateway.frames[index]
            index += 1
            if pred(frame):
                found.append(frame)
                return True
        return False

    async with gateway._cond:
        await asyncio.wait_for(gateway._cond.wait_for(scan), timeout)
    return found[0]


async def test_storm_of_random_frames(
    gateway: Gateway, edge: Daemon, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = build_corpus()
    assert len(corpus) >= MIN_FRAMES
    caplog.set_level(logging.ERROR)
    conn = gateway.conns[-1]
    for frame in corpus:
        await conn.send(frame.data)

    # the daemon survived and still works
    await gateway.send(command("final-1", op="read", params={"points": ["brightness"]}))
    ack = await wait_for(gateway, lambda f: f.get("requestRef") == "final-1")
    assert (ack["type"], ack["status"]) == ("ack", "accepted")
    final = await wait_for(gateway, lambda f: f.get("requestRef") == "final-1" and is_terminal(f))
    assert final["type"] == "command_response" and final["status"] == "completed"
    assert isinstance(final["result"]["values"]["brightness"], int)

    # Commands not running now have sent their terminal before final-2's: wait for that one.
    running = set(edge.engine.running)
    await gateway.send({"type": "QUERY", "requestRef": "final-2", "query": "devices"})
    query = await wait_for(gateway, lambda f: f.get("requestRef") == "final-2")
    assert query["status"] == "completed"
    assert {d["deviceId"] for d in query["result"]["devices"]} == set(DEVICES)

    assert not edge.stopped.is_set()
    assert edge.session.state == "online"
    assert (gateway.connections, edge.session.connects, edge.session.failures) == (1, 1, 0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()[:200]}" for r in errors[:5]]

    frames = gateway.frames
    by_ref: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    message_ids: dict[str, dict[str, Any]] = {}
    progress: dict[str, int] = {}
    for f in frames:
        assert f["type"] in EMITTED_TYPES, f["type"]
        assert f["clientId"] == "edge-001" and f["version"] == "1.0"
        assert TS_RE.match(f["timestamp"])
        # a messageId is never reused for another message (a resend keeps its id, and a
        # terminal replayed for a duplicate COMMAND is that message with "replay": true)
        if f["messageId"] in message_ids:
            first = message_ids[f["messageId"]]
            assert f in (first, {**first, "replay": True}), f
        else:
            message_ids[f["messageId"]] = f
        if f["type"] == "error":
            assert f["code"] in ERROR_CODES, f
            assert isinstance(f["message"], str)
        if f["type"] == "command_response":
            assert f["status"] in protocol.TERMINAL_STATUSES
        if f["type"] == "progress_update":
            assert 0 <= f["progress"] <= 100
            assert f["progress"] >= progress.get(f["requestRef"], 0)
            progress[f["requestRef"]] = f["progress"]
        if "requestRef" in f:
            by_ref[f["requestRef"]].append(f)

    # never two accepted acks for one requestRef (de-duplication)
    for ref, about in by_ref.items():
        accepted = [f for f in about if f["type"] == "ack" and f["status"] == "accepted"]
        assert len(accepted) <= 1, ref

    # Exactly one terminal per COMMAND frame, counted over requestRefs whose frames are all
    # intact COMMANDs (and CANCELs, which send none of their own).
    carriers: dict[str, list[Frame]] = collections.defaultdict(list)
    for frame in corpus:
        text = frame.data if isinstance(frame.data, str) else frame.data.decode("utf-8", "replace")
        for ref in set(POOL_REF_RE.findall(text)):
            carriers[ref].append(frame)
    checked = 0
    for ref, carried in carriers.items():
        if any(f.role == "other" or f.ref != ref for f in carried):
            continue
        sent = sum(1 for f in carried if f.role == "command")
        if not sent:
            continue
        checked += 1
        about = by_ref.get(ref, [])
        terminals = [f for f in about if is_terminal(f)]
        acks = [f for f in about if f["type"] == "ack"]
        n_accepted = sum(1 for f in acks if f["status"] == "accepted")
        if ref in running:
            assert n_accepted == 1 and len(terminals) <= sent, (ref, about)
        else:
            assert len(terminals) == sent, (ref, sent, about)
            if n_accepted:
                assert [t["type"] for t in terminals].count("command_response") == len(acks)
    assert checked > 500

    # the storm reached deep into the engine
    codes = collections.Counter(f["code"] for f in frames if f["type"] == "error")
    assert set(codes) >= ERROR_CODES - {"OVERLOADED"}, codes
    statuses = collections.Counter(f["status"] for f in frames if f["type"] == "command_response")
    assert statuses["completed"] > 100 and statuses["cancelled"] > 0, statuses


# ---------------------------------------------------------------------- regressions the storm found


async def reply_or_reconnect(gateway: Gateway, ref: str) -> dict[str, Any]:
    """The first terminal for ``ref``, an INTERNAL_ERROR, or a REGISTER on a new connection."""
    found = await gateway.wait(
        lambda f: (
            (f.get("requestRef") == ref and is_terminal(f))
            or f.get("code") == "INTERNAL_ERROR"
            or (f["type"] == "REGISTER" and gateway.connections > 1)
        )
    )
    return found[0]


def terminals_of(gateway: Gateway, ref: str) -> list[dict[str, Any]]:
    return [f for f in gateway.of(ref) if is_terminal(f)]


async def test_lone_surrogate_ref_on_a_rejected_frame_keeps_the_session(
    gateway: Gateway, edge: Daemon
) -> None:
    await gateway.send('{"type": "FOO", "requestRef": "\\ud800"}')
    reply = await reply_or_reconnect(gateway, "\ud800")
    assert gateway.connections == 1
    assert reply["type"] == "error" and reply["code"] == "UNKNOWN_MESSAGE_TYPE"


async def test_lone_surrogate_ref_on_a_valid_command_gets_one_terminal(
    gateway: Gateway, edge: Daemon
) -> None:
    ref = "\ud800"
    await gateway.send(command(ref, op="read", params={"points": ["brightness"]}))
    reply = await reply_or_reconnect(gateway, ref)
    assert reply.get("code") != "INTERNAL_ERROR" and gateway.connections == 1
    assert len(terminals_of(gateway, ref)) == 1
    assert edge.engine.in_flight() == 0


@pytest.mark.parametrize(
    "extra",
    [{"callback": "\udc80", "device": "nope"}, {"device": "\udc80"}],
    ids=["callback", "deviceId"],
)
async def test_lone_surrogate_in_an_echoed_field_keeps_the_rejection(
    gateway: Gateway, edge: Daemon, extra: dict[str, Any]
) -> None:
    extra = dict(extra)
    msg = command("sur-1", extra.pop("device"), "STATUS", **extra)
    await gateway.send(msg)
    reply = await reply_or_reconnect(gateway, "sur-1")
    assert reply.get("requestRef") == "sur-1"
    assert reply["type"] == "error" and reply["code"] == "UNKNOWN_DEVICE"


async def test_non_finite_callback_on_a_rejected_command(gateway: Gateway, edge: Daemon) -> None:
    # 1e999 is valid JSON that Python reads as float('inf'): echoing it must not break the error
    text = json.dumps(command("inf-1", "nope", "STATUS", callback=1))
    await gateway.send(text.replace('"callback": 1', '"callback": 1e999'))
    reply = await reply_or_reconnect(gateway, "inf-1")
    assert reply.get("requestRef") == "inf-1"
    assert reply["type"] == "error" and reply["code"] == "UNKNOWN_DEVICE"
    assert "callback" in reply


async def test_non_finite_callback_on_an_accepted_command(gateway: Gateway, edge: Daemon) -> None:
    # one terminal for the command, the stored one again for its resend, and no second run
    ref = "inf-2"
    text = json.dumps(command(ref, op="read", params={"points": ["brightness"]}, callback=1))
    text = text.replace('"callback": 1', '"callback": 1e999')
    for i in range(2):
        await gateway.send(text)
        sync = f"inf-sync-{i}"
        await gateway.send(command(sync, op="read", params={"points": ["brightness"]}))
        await gateway.terminal(sync)
        if ref in edge.engine.running:
            await gateway.terminal(ref)
    acks = [f["status"] for f in gateway.of(ref) if f["type"] == "ack"]
    assert acks == ["accepted", "duplicate"]
    terminals = terminals_of(gateway, ref)
    assert [(t["type"], t["status"]) for t in terminals] == [("command_response", "completed")] * 2
    assert "callback" in terminals[0]


async def test_deeply_nested_callback_gets_one_terminal(gateway: Gateway, edge: Daemon) -> None:
    refs: list[str] = []
    for depth in range(900, 1100):
        for device in ("nope", "pillar-001"):
            ref = f"deep-{device}-{depth}"
            refs.append(ref)
            text = json.dumps(command(ref, device, op="read", params={"points": ["brightness"]}))
            await gateway.send(text[:-1] + ', "callback": ' + "[" * depth + "]" * depth + "}")
    await gateway.send(command("deep-sync", op="read", params={"points": ["brightness"]}))
    await gateway.terminal("deep-sync")
    # Collect the command tasks that died with RecursionError now: left to a later GC, their
    # "exception never retrieved" finalizer can run inside pytest's traceback formatting, where
    # CPython < 3.11.8 turns it into "SystemError: AST constructor recursion depth mismatch".
    gc.collect()
    internal = [f for f in gateway.frames if f.get("code") == "INTERNAL_ERROR"]
    lost = [r for r in refs if not terminals_of(gateway, r) and r not in edge.engine.running]
    assert not internal and not lost, (len(internal), lost)


async def test_error_frame_for_a_long_command_code_stays_small(
    gateway: Gateway, edge: Daemon
) -> None:
    msg = command("long-1", code="\x7f" * 300_000)
    await gateway.send(json.dumps(msg, ensure_ascii=False))
    reply = await reply_or_reconnect(gateway, "long-1")
    assert gateway.connections == 1
    assert reply.get("requestRef") == "long-1" and reply["code"] == "UNSUPPORTED_COMMAND"
