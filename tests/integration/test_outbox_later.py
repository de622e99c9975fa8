"""The outbox's deferred writes: an ``ack`` is written at the end of the loop's turn (after the
device request that turn started) and never after the terminal of its command."""

from __future__ import annotations

import asyncio
import json

from edge_proxy.runtime.outbox import Outbox


def _writer(box: Outbox, written: list[str]) -> None:
    """Stand in for a live session: each put hands what may be sent to ``written``."""

    def on_put() -> None:
        while (entry := box.take()) is not None:
            box.written(entry)
            written.append(json.loads(entry.text)["type"])

    box.on_put = on_put


async def test_a_later_message_is_written_at_the_end_of_the_loop_turn() -> None:
    box = Outbox(max_messages=10, max_bytes=1024**2)
    written: list[str] = []
    _writer(box, written)
    box.put({"type": "ack", "requestRef": "a", "_later": True})
    assert written == []  # queued, not yet written: the device request goes out first
    await asyncio.sleep(0)
    assert written == ["ack"]
    assert "_later" not in box.pending_items()[0][1]


async def test_a_later_ack_still_goes_before_a_terminal_put_in_the_same_turn() -> None:
    box = Outbox(max_messages=10, max_bytes=1024**2)
    written: list[str] = []
    _writer(box, written)
    box.put({"type": "ack", "requestRef": "a", "_later": True})
    box.put({"type": "command_response", "requestRef": "a", "status": "failed"})
    assert written == ["ack", "command_response"]
    await asyncio.sleep(0)  # the deferred write finds nothing left to write
    assert written == ["ack", "command_response"]


async def test_a_later_message_without_a_live_session_wakes_the_sender() -> None:
    box = Outbox(max_messages=10, max_bytes=1024**2)
    box.put({"type": "ack", "requestRef": "a", "_later": True})
    entry = await asyncio.wait_for(box.next(), 1.0)
    assert json.loads(entry.text) == {"type": "ack", "requestRef": "a"}
