"""The pure parts of the delivery guarantees: outbox states, reservations, frame limits, de-dup.

Each test names the guarantee of protocol.md it holds, and most of them fail on the code
before the "sent means received" change (the outbox then forgot a message once it was
written, could pop the wrong message, and had no room kept for terminals).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge_proxy.config import CommandsConfig
from edge_proxy.core.plan import match_targets
from edge_proxy.errors import RequestError
from edge_proxy.runtime.dedup import DedupStore
from edge_proxy.runtime.outbox import Outbox
from edge_proxy.wire import framing
from edge_proxy.wire.messages import MessageFactory


def tele(i: int) -> dict[str, Any]:
    return {"type": "telemetry", "deviceId": "d", "values": {"v": i}}


def response(ref: str, **extra: Any) -> dict[str, Any]:
    return {"type": "command_response", "requestRef": ref, "status": "completed", **extra}


def texts(box: Outbox) -> list[dict[str, Any]]:
    return [json.loads(text) for _, text in box.pending_items()]


# ---------------------------------------------------------------- sent means received (2)


def test_a_written_message_stays_until_a_pong_confirms_it() -> None:
    box = Outbox(100, 1024**2)
    box.put(response("a"))
    entry = box.take()
    assert entry is not None
    box.written(entry)
    assert box.count == 1 and box.unconfirmed == 1  # written is not received
    assert box.confirm(entry.seq - 1) == 0
    assert box.confirm(box.last_sent) == 1
    assert box.count == 0 and box.bytes == 0


def test_unconfirmed_messages_are_resent_first_in_order_with_their_text() -> None:
    box = Outbox(100, 1024**2)
    for ref in "abc":
        box.put(response(ref, messageId=f"m-{ref}"))
    first = box.take()
    second = box.take()
    assert first is not None and second is not None
    box.written(first)
    box.confirm(first.seq)  # "a" arrived; "b" was written into a dead link
    box.written(second)
    assert box.requeue() == 1
    again = [box.take() for _ in range(2)]
    assert [json.loads(e.text)["messageId"] for e in again if e] == ["m-b", "m-c"]
    assert again[0] is not None and again[0].text == second.text  # the same bytes, same id


def test_a_drop_while_a_message_is_being_written_loses_nothing_else() -> None:
    # before: the sender popped "the head of the class" after a slow send, and a put that
    # had dropped that head in the meantime made it pop (lose) another message
    box = Outbox(3, 1024**2)
    box.put(tele(0))
    box.put(tele(1))
    box.put(response("r"))
    writing = box.take()  # tele 0 is on the wire
    assert writing is not None and json.loads(writing.text)["values"] == {"v": 0}
    box.put(tele(2))  # full: the oldest telemetry (the one being written) is dropped
    box.written(writing)
    box.confirm(writing.seq)
    left = [json.loads(e.text) for e in iter(box.take, None)]
    assert left == [tele(1), response("r"), tele(2)]


def test_an_empty_outbox_gives_nothing_and_never_raises() -> None:
    box = Outbox(10, 1024)
    assert box.take() is None
    assert box.confirm(10) == 0
    assert box.requeue() == 0


# ---------------------------------------------------------------- terminals are kept (1, 4)


def test_a_reserved_terminal_is_never_dropped() -> None:
    box = Outbox(4, 1024**2)
    assert box.reserve("cmd-1")
    for i in range(10):
        box.put(tele(i))
    assert box.count == 4  # the reserved place is used until the terminal needs it
    box.put(response("cmd-1"))
    assert box.count == 4 and response("cmd-1") in texts(box)
    for i in range(10, 20):
        box.put(tele(i))
        box.put(response(f"rejected-{i}"))  # unreserved terminals may go, reserved never
    held = texts(box)
    assert response("cmd-1") in held
    assert box.dropped["command_response"] > 0


def test_reservations_stop_at_the_outbox_size() -> None:
    box = Outbox(2, 1024**2)
    assert box.reserve("a") and box.reserve("b")
    assert not box.reserve("c")
    box.put(response("a"))
    assert not box.reserve("c")  # "a" still waits to be confirmed
    entry = box.take()
    assert entry is not None
    box.written(entry)
    box.confirm(entry.seq)
    assert box.reserve("c")


def test_a_reserved_terminal_may_pass_max_bytes_rather_than_be_lost() -> None:
    box = Outbox(10, 200)
    assert box.reserve("big")
    box.put(response("big", result={"text": "x" * 400}))
    assert box.count == 1 and box.bytes > 200
    assert not box.dropped


def test_a_message_waits_for_its_spool_ticket() -> None:
    box = Outbox(10, 1024**2)
    box.put({"type": "ack", "requestRef": "a", "_ticket": 3})
    box.put(response("b"))
    assert box.take() is None  # the ack is first, and its spool row is not committed
    box.mark_durable(2)
    assert box.take() is None
    box.mark_durable(3)
    taken = [box.take(), box.take()]
    assert [json.loads(e.text)["requestRef"] for e in taken if e] == ["a", "b"]


def test_dropped_messages_do_not_pile_up_while_the_link_is_down() -> None:
    box = Outbox(10, 1024**2)
    for i in range(20_000):
        box.put(tele(i))
    assert box.count == 10
    assert len(box._pending) < 200  # dropped entries are compacted away
    assert [m["values"]["v"] for m in texts(box)] == list(range(19_990, 20_000))


# ---------------------------------------------------------------- no frame too large (5)


def batch_result(n: int, failed_every: int) -> dict[str, Any]:
    results = {
        f"dev-{i:05d}": (
            {"status": "failed", "error": {"code": "DEVICE_OFFLINE", "message": "offline"}}
            if i % failed_every == 0
            else {"status": "completed", "result": {"values": {"door_state": 1, "mode": 2}}}
        )
        for i in range(n)
    }
    failed = sum(1 for r in results.values() if r["status"] == "failed")
    return {"summary": {"total": n, "succeeded": n - failed, "failed": failed}, "results": results}


def test_an_oversized_terminal_keeps_its_failed_targets_and_says_what_it_left_out() -> None:
    factory = MessageFactory("edge-1")
    msg = factory.response("big", "partial", result=batch_result(4000, 10), duration_ms=5)
    assert framing.size(msg) > 64 * 1024
    cut, full = framing.fit_terminal(msg, 64 * 1024)
    assert framing.size(cut) <= 64 * 1024
    assert full == msg["result"]["results"]
    result = cut["result"]
    assert result["truncated"] is True
    assert all(r["status"] == "failed" for r in result["results"].values())
    assert len(result["results"]) == 400  # every failed target fits
    assert result["omitted"] == 3600
    assert result["summary"] == msg["result"]["summary"]


def test_when_even_the_failed_targets_do_not_fit_as_many_as_fit_are_kept() -> None:
    msg = MessageFactory("e").response("big", "failed", result=batch_result(5000, 1))
    cut, _ = framing.fit_terminal(msg, 16 * 1024)
    assert framing.size(cut) <= 16 * 1024
    kept = len(cut["result"]["results"])
    assert 0 < kept < 5000 and cut["result"]["omitted"] == 5000 - kept


def test_a_terminal_that_fits_is_left_alone() -> None:
    msg = MessageFactory("e").response("r", "completed", result={"values": {"a": 1}})
    assert framing.fit_terminal(msg, 1024) == (msg, None)


def test_register_of_4000_devices_is_paged_to_max_frame() -> None:
    devices = [
        {"deviceId": f"pillar-{i:04d}", "deviceType": "pillar", "status": "online"}
        for i in range(4000)
    ]
    msg = MessageFactory("edge-1").register("edge", "1", devices, max_frame=64 * 1024)
    assert framing.size(msg) <= 64 * 1024
    info = msg["clientInfo"]
    assert info["devicesTotal"] == 4000 and info["devicesTruncated"] is True
    assert 0 < len(info["devices"]) < 4000
    assert info["devices"] == devices[: len(info["devices"])]
    small = MessageFactory("edge-1").register("edge", "1", devices[:3], max_frame=64 * 1024)
    assert "devicesTruncated" not in small["clientInfo"]


# ---------------------------------------------------------------- input can't stall (6)


def test_batch_limits_are_checked_before_any_glob_is_expanded() -> None:
    ids = [f"d{i}" for i in range(5000)]
    types = dict.fromkeys(ids, "pillar")
    limits = CommandsConfig()
    many = [f"d{i}*" for i in range(limits.max_batch_targets + 1)]
    with pytest.raises(RequestError, match="targets is above the limit"):
        match_targets(many, ids, types, None, max_items=limits.max_batch_targets)
    globs = [f"d{i}?" for i in range(limits.max_batch_globs + 1)]
    with pytest.raises(RequestError, match="glob patterns is above the limit"):
        match_targets(globs, ids, types, None, max_globs=limits.max_batch_globs)
    assert match_targets(["d1", "d2*"], ids, types, None, max_globs=1)[:2] == ["d1", "d2"]


# ---------------------------------------------------------------- de-duplication store (3)


def test_the_dedup_store_is_bounded_by_bytes_as_well_as_count() -> None:
    store = DedupStore(window=600, max_count=1000, max_bytes=10_000)
    text = framing.encode(response("r"))
    for i in range(100):
        store.add(f"r{i:02d}", text, [])
    each = store.bytes // len(store)
    assert store.bytes <= 10_000 and len(store) == 10_000 // each
    assert next(iter(store)) == f"r{100 - len(store):02d}" and store.get("r99") is not None
    assert store.get("r00") is None
    done = store.get("r99")
    assert done is not None and done.message == response("r")


def test_the_dedup_store_charges_what_an_entry_really_costs() -> None:
    import tracemalloc

    text = framing.encode(
        MessageFactory("edge-1").response("cmd-000000", "completed", duration_ms=3)
    )
    store = DedupStore(window=600, max_count=10**6, max_bytes=10**9)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(5000):
        store.add(f"cmd-{i:06d}", text[:-1] + f"{i}" + "}", ["pillar-001"])
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # what the bound counts is within 1.5x of the heap the entries take
    assert used <= 1.5 * store.bytes, (used, store.bytes)


def test_confirmed_messages_leave_no_trace() -> None:
    box = Outbox(100, 1024**2)
    for i in range(5000):
        ref = f"c{i}"
        assert box.reserve(ref)
        box.put(response(ref))
        box.put(tele(i))
        while (entry := box.take()) is not None:
            box.written(entry)
        box.confirm(box.last_sent)
    assert box.count == 0 and box.reserved == 0
    assert sum(len(q) for q in box._by_class.values()) < 200
    assert len(box._pending) == 0 and len(box._unconfirmed) == 0
