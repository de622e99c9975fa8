"""The console's pure parts: its config rules, ring buffers, command log, live-stream queues,
sessions, the tester's frames and each page's data (on stand-ins for a running daemon)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

import pytest

from edge_proxy.config import ConfigError, validate_tree
from edge_proxy.config.console import is_loopback, split_listen
from edge_proxy.core.report import Sample
from edge_proxy.ops.console import views
from edge_proxy.ops.console.auth import Sessions
from edge_proxy.ops.console.broadcast import Broadcaster
from edge_proxy.ops.console.commands import CommandLog, source_of
from edge_proxy.ops.console.history import GroupRing, History
from edge_proxy.ops.console.state import BadCommand, command_frame
from tests.builders import base_tree, make_config


def console_errors(console: dict[str, Any]) -> list[str]:
    tree = base_tree("ws://127.0.0.1:1")
    tree["console"] = console
    try:
        validate_tree(tree)
    except ConfigError as exc:
        return exc.errors
    return []


def test_the_console_is_off_and_read_only_by_default() -> None:
    config = make_config(base_tree("ws://127.0.0.1:1"))
    assert config.console.listen is None and config.console.address is None
    assert config.console.allow_commands is False and config.console.history == 300


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "[::1]:8080", "localhost:0", "127.9.9.9:1"])
def test_loopback_needs_no_token(listen: str) -> None:
    assert console_errors({"listen": listen}) == []


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "192.168.1.5:80", "[::]:8080", "box:8080"])
def test_any_other_address_needs_a_token(listen: str) -> None:
    (error,) = console_errors({"listen": listen})
    assert error.startswith("console.token: required when console.listen")
    (empty,) = console_errors({"listen": listen, "token": ""})  # ${CONSOLE_TOKEN:-} unset
    assert empty.startswith("console.token: required when console.listen")
    assert console_errors({"listen": listen, "token": "t0ken"}) == []


@pytest.mark.parametrize("listen", ["127.0.0.1:65536", "127.0.0.1:http", ":8080", "8080"])
def test_a_bad_listen_is_an_error_naming_console_listen(listen: str) -> None:
    (error,) = console_errors({"listen": listen})
    assert error.startswith("console.listen: ")


def test_the_token_is_a_secret_of_the_config() -> None:
    tree = base_tree("ws://127.0.0.1:1")
    tree["console"] = {"listen": "0.0.0.0:1", "token": "console-secret"}
    config = make_config(tree)
    assert "console-secret" in config.secrets()
    assert "console-secret" not in repr(config)
    shown = views.config_view(config)
    assert shown["console"]["token"] == "**********"
    assert "console-secret" not in str(shown)


def test_listen_parsing() -> None:
    assert split_listen("[::1]:80") == ("::1", 80)
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_a_group_ring_keeps_the_last_n_numbers_with_gaps() -> None:
    ring = GroupRing(3)
    ring.add(1.0, {"a": 1, "b": True, "s": "x"})
    ring.add(2.0, {"a": 2.5}, bad={"a"})
    ring.add(3.0, {"a": 3, "c": 7})
    ring.add(4.0, {"a": 4, "c": 8})
    assert set(ring.values) == {"a", "c"}  # bools and strings are not charted
    series = ring.series()
    assert series["a"] == [[2.0, None], [3.0, 3.0], [4.0, 4.0]]
    assert series["c"][0][1] is None and series["c"][-1] == [4.0, 8.0]
    assert ring.series(after=3.0) == {"a": [[4.0, 4.0]], "c": [[4.0, 8.0]]}
    assert ring.last_time() == 4.0
    assert ring.nbytes() == 3 * 8 + 2 * 3 * 4  # bounded: times and float32 values


def test_history_is_bounded_per_point_and_forgets_removed_devices() -> None:
    history = History(50)
    for i in range(1000):
        history.add("d1", "g", Sample({"x": float(i), "y": i}, frozenset(), float(i), 0.0))
    history.add("d2", "g", Sample({"x": 1}, frozenset(), 5.0, 0.0))
    series = history.series("d1")
    assert len(series["x"]) == 50 and series["x"][-1] == [999.0, 999.0]
    assert history.nbytes() == 2 * (50 * 8) + 3 * 50 * 4
    history.keep_only(["d1"])
    assert history.series("d2") == {}
    assert math.isclose(history.last_time("d1") or 0, 999.0)


def test_the_command_log_files_gateway_and_console_commands_bounded() -> None:
    log = CommandLog(per_device=2, max_refs=3)
    request = SimpleNamespace(
        command_type="SIMPLE", command_code="SET", operation_type=None, parameters={"v": 1}
    )
    running = {"r1": SimpleNamespace(request=request)}
    assert log.observe({"type": "telemetry", "requestRef": "r1"}) is None
    assert log.observe({"type": "progress_update", "requestRef": "unknown"}) is None
    entry = log.observe(
        {"type": "ack", "requestRef": "r1", "status": "accepted", "targets": ["d1"]}, running
    )
    assert entry is not None and entry.command == "SIMPLE SET" and entry.source == "gateway"
    log.observe({"type": "command_response", "requestRef": "r1", "status": "completed",
                 "result": "x" * 20_000, "_text": "y" * 20_000})  # fmt: skip
    (shown,) = log.recent("d1")
    assert shown["status"] == "completed" and len(shown["messages"]) == 2
    assert "too large" in shown["messages"][1]["result"]  # a huge result is not kept
    log.begin("console:a", ["d1"], "SIMPLE write", {})
    log.begin("console:b", ["d1"], "SIMPLE read", {})
    assert [e["ref"] for e in log.recent("d1")] == ["console:b", "console:a"]
    for i in range(100):
        log.observe({"type": "progress_update", "requestRef": "console:b", "progress": i})
    log.observe({"type": "error", "requestRef": "console:b", "code": "DEVICE_OFFLINE"})
    latest = log.recent("d1")[0]
    assert latest["status"] == "DEVICE_OFFLINE" and len(latest["messages"]) <= 24
    assert latest["messages"][-1]["type"] == "error" and latest["droppedMessages"] > 0
    log.begin("console:c", ["d2"], "SIMPLE read", {})
    assert len(log.entries) == 3
    assert source_of("local:1") == "local" and source_of("console:1") == "console"


def test_a_full_stream_queue_drops_that_client_only() -> None:
    streams = Broadcaster(max_clients=2, queue_size=3)
    slow = streams.join(frozenset({"devices"}))
    fast = streams.join(frozenset({"devices", "logs"}))
    assert slow is not None and fast is not None
    assert streams.join(frozenset({"logs"})) is None and streams.refused == 1
    for i in range(3):
        assert streams.publish("devices", "devices", str(i)) == 2
        fast.queue.get_nowait()
    assert streams.publish("devices", "devices", "3") == 1  # slow's queue was full
    assert slow.dropped and streams.dropped == 1
    assert slow.queue.get_nowait() is None  # its handler sees the end at once
    assert fast.queue.get_nowait() == b"event: devices\ndata: 3\n\n"
    assert streams.publish("logs", "logs", "x") == 1
    streams.leave(slow)
    assert streams.topics() == {"devices", "logs"}


def test_sessions_need_the_token_and_never_hold_it() -> None:
    sessions = Sessions("right")
    assert sessions.required
    assert sessions.login("wrong") is None and sessions.login(None) is None
    sid = sessions.login("right")
    assert sid is not None and "right" not in sid and sessions.valid(sid)
    assert sessions.allowed(None, sid) and sessions.allowed("Bearer right", None)
    assert not sessions.allowed("Bearer wrong", "forged") and not sessions.allowed(None, None)
    sessions.logout(sid)
    assert not sessions.valid(sid)
    assert Sessions(None).allowed(None, None)


def test_tester_requests_become_commands_for_the_engine() -> None:
    frame, what = command_frame(
        "e1", "console:1", {"device": "d", "kind": "write", "values": {"a": 1}}
    )
    assert frame["targetClientId"] == "e1:d" and frame["requestRef"] == "console:1"
    assert frame["command"] == {
        "commandType": "SIMPLE",
        "operationType": "write",
        "parameters": {"values": {"a": 1}},
    }
    assert what == "SIMPLE write" and frame["timeout"] == 5000
    frame, what = command_frame("e1", "r", {"device": "d", "code": "GO", "params": {"x": 2}})
    assert frame["command"]["commandCode"] == "GO" and what == "SIMPLE GO"
    for bad in (
        {"device": "d", "kind": "nope"},
        {"kind": "read", "points": ["a"]},
        {"device": "d", "kind": "read", "points": "a"},
        {"device": "d", "kind": "write", "values": {}},
        {"device": "d", "code": "GO", "timeoutMs": 10**9},
        {"device": "d", "code": "GO", "priority": "now"},
    ):
        with pytest.raises(BadCommand):
            command_frame("e1", "r", bad)


def _runtime() -> views.RuntimeView:
    """A stand-in for the daemon: real config, devices and telemetry, nothing running."""
    from edge_proxy.ops.activity import Activity
    from edge_proxy.runtime.devices import DeviceRuntime

    tree = base_tree("ws://user:pw@127.0.0.1:1")
    tree["console"] = {"listen": "127.0.0.1:0", "allow_commands": True}
    config = make_config(tree)
    devices = {}
    for dev in config.devices:
        devices[dev.id] = DeviceRuntime(dev, config.profiles[dev.profile], None, None)
    devices["pillar-002"].state = "offline"
    devices["pillar-002"].last_error = {"code": "DEVICE_TIMEOUT", "message": "no answer"}
    telemetry = SimpleNamespace(by_device={}, status=lambda dev_id: None)
    session = SimpleNamespace(state="online", connects=2, failures=1, last_error=None)
    outbox = SimpleNamespace(count=3, bytes=300, dropped={"telemetry": 4})
    engine = SimpleNamespace(in_flight=lambda: 1, running={})
    activity = Activity()
    activity.device_changed("pillar-002", "offline", "online", "no answer (x3)")
    return cast(
        views.RuntimeView,
        SimpleNamespace(
            config=config,
            session=session,
            outbox=outbox,
            engine=engine,
            devices=devices,
            links={},
            telemetry=telemetry,
            activity=activity,
        ),
    )


def test_the_overview_and_the_devices_table() -> None:
    rt = _runtime()
    o = views.overview(rt)
    assert o["edge"]["id"] == "edge-001" and o["gateway"]["url"] == "ws://user:***@127.0.0.1:1"
    assert o["outbox"] == {
        "messages": 3,
        "bytes": 300,
        "dropped": {"telemetry": 4},
        "droppedTotal": 4,
    }
    assert o["inFlight"] == 1 and o["devices"]["total"] == 3 and o["devices"]["online"] == 0
    assert o["changes"][0]["id"] == "pillar-002" and o["changes"][0]["state"] == "offline"
    rows = views.device_rows(rt)
    assert rows[0]["id"] == "pillar-002"  # the broken one first
    assert rows[0]["lastError"]["code"] == "DEVICE_TIMEOUT"
    assert [r["state"] for r in rows] == ["offline", "connecting", "connecting"]


def test_the_device_page_and_the_tester_form() -> None:
    rt = _runtime()
    detail = views.device_detail(rt, "pillar-001", History(10), CommandLog())
    assert detail is not None
    points = {p["name"]: p for p in detail["points"]}
    assert points["brightness"]["numeric"] and not points["relay"]["numeric"]
    assert points["brightness"]["quality"] == "none" and points["brightness"]["value"] is None
    form = detail["form"]
    names = [c["name"] for c in form["commands"]]
    assert "SET_BRIGHTNESS" in names
    (param,) = next(c for c in form["commands"] if c["name"] == "SET_BRIGHTNESS")["params"]
    assert param == {
        "name": "brightness",
        "type": "int",
        "min": 0.0,
        "max": 100.0,
        "required": True,
        "default": None,
        "choices": None,
        "description": None,
    }
    assert "door_state" in form["read"] and "door_cmd" not in form["read"]
    assert {"name": "brightness", "type": "uint16", "min": 0.0, "max": 100.0, "unit": None} in form[
        "write"
    ]
    assert views.device_detail(rt, "nope", History(10), CommandLog()) is None
    assert views.dumps({"x": math.nan, "y": [math.inf]}) == '{"x":null,"y":[null]}'
