"""The on-disk spool: crash recovery, de-duplication memory across restarts, and its bounds."""

from __future__ import annotations

import time
from pathlib import Path

from edge_proxy.runtime.spool import Spool
from edge_proxy.wire.messages import MessageFactory


def terminal(factory: MessageFactory, ref: str) -> dict[str, object]:
    return factory.response(ref, "completed", result={"values": {"v": 1}}, duration_ms=1)


def test_unsent_terminals_and_unfinished_commands_survive(tmp_path: Path) -> None:
    factory = MessageFactory("edge-1")
    spool = Spool(tmp_path / "s.sqlite3")
    spool.accepted("a", {"cb": 1}, True)
    spool.accepted("b", None, False)
    spool.terminal(terminal(factory, "b"), ["dev-1"])
    spool.close()

    spool = Spool(tmp_path / "s.sqlite3")
    pending = spool.recover(factory)
    assert [m["requestRef"] for _, m, _ in pending] == ["b", "a"]
    assert pending[0][2] == ["dev-1"]
    restarted = pending[1][1]
    assert restarted["status"] == "failed" and restarted["callback"] == {"cb": 1}
    assert restarted["error"] == {"code": "INTERNAL_ERROR", "message": "edge restarted"}
    for spool_id, _, _ in pending:
        spool.sent(spool_id)
    assert spool.recover(factory) == []  # nothing waits any more
    assert [m["requestRef"] for _, m, _ in spool.delivered()] == ["b", "a"]
    spool.close()


def test_delivered_rows_are_pruned_by_age_and_count(tmp_path: Path) -> None:
    factory = MessageFactory("edge-1")
    spool = Spool(tmp_path / "s.sqlite3", keep=600, keep_max=3)
    for i in range(5):
        spool.sent(spool.terminal(terminal(factory, f"r{i}")))
    spool.prune()
    assert [m["requestRef"] for _, m, _ in spool.delivered()] == ["r2", "r3", "r4"]
    spool.keep = 0.01
    time.sleep(0.02)  # the age of the rows is what is tested
    spool.prune()
    assert spool.delivered() == []
    spool.close()
