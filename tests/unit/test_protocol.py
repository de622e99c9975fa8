"""Pure unit tests of the wire contract in edge_proxy.protocol (no sockets, no event loop)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from edge_proxy.errors import RequestError
from edge_proxy.wire import messages as protocol
from edge_proxy.wire.messages import (
    CommandRequest,
    Incoming,
    MessageFactory,
    encode,
    parse_command,
    parse_frame,
    utc_timestamp,
)

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def frame(**fields: Any) -> str:
    """A JSON text frame with exactly these fields."""
    return json.dumps(fields)


def good_command(**over: Any) -> dict[str, Any]:
    """A schema-valid COMMAND body; ``over`` replaces top-level fields (None deletes one)."""
    body: dict[str, Any] = {
        "type": "COMMAND",
        "requestRef": "cmd-1",
        "targetClientId": "edge-001:pillar-001",
        "command": {
            "commandType": "SIMPLE",
            "commandCode": "SET_BRIGHTNESS",
            "deviceType": "pillar",
            "deviceId": "pillar-001",
            "operationType": "write",
            "parameters": {"brightness": 50},
        },
        "priority": "normal",
        "timeout": 5000,
        "timestamp": "2024-01-20T10:00:00.000Z",
        "version": "1.0",
    }
    for key, value in over.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def with_command(**over: Any) -> dict[str, Any]:
    """A COMMAND whose ``command`` object has fields replaced (None deletes one)."""
    body = good_command()
    cmd = dict(body["command"])
    for key, value in over.items():
        if value is None:
            cmd.pop(key, None)
        else:
            cmd[key] = value
    body["command"] = cmd
    return body


def rejected(data: str | bytes, max_size: int = 1024**2) -> RequestError:
    """The RequestError parse_frame raises for ``data`` (fails the test if it accepts it)."""
    with pytest.raises(RequestError) as info:
        parse_frame(data, max_size)
    return info.value


def command_error(body: dict[str, Any]) -> RequestError:
    """The RequestError parse_command raises for a COMMAND body that passes the envelope."""
    msg = parse_frame(json.dumps(body))
    assert msg.type == "COMMAND"
    with pytest.raises(RequestError) as info:
        parse_command(msg)
    return info.value


def parsed(body: dict[str, Any]) -> CommandRequest:
    """parse_frame then parse_command."""
    return parse_command(parse_frame(json.dumps(body)))


# ---------------------------------------------------------------------- timestamps


def test_timestamp_now_has_the_wire_format() -> None:
    stamp = utc_timestamp()
    assert TS_RE.match(stamp), stamp
    parsed_back = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs(parsed_back - datetime.now(timezone.utc)) < timedelta(seconds=5)


def test_timestamp_of_a_fixed_datetime_is_exact() -> None:
    at = datetime(2024, 1, 20, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert utc_timestamp(at) == "2024-01-20T10:00:00.123Z"


def test_timestamp_truncates_to_milliseconds_and_pads() -> None:
    assert utc_timestamp(datetime(2024, 1, 2, 3, 4, 5, 999999, tzinfo=timezone.utc)) == (
        "2024-01-02T03:04:05.999Z"
    )
    assert utc_timestamp(datetime(2024, 1, 2, 3, 4, 5, 0, tzinfo=timezone.utc)) == (
        "2024-01-02T03:04:05.000Z"
    )
    assert utc_timestamp(datetime(2024, 1, 2, 3, 4, 5, 7000, tzinfo=timezone.utc)) == (
        "2024-01-02T03:04:05.007Z"
    )


def test_timestamp_converts_other_zones_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    at = datetime(2024, 1, 20, 12, 30, 0, 500000, tzinfo=plus_two)
    assert utc_timestamp(at) == "2024-01-20T10:30:00.500Z"


# ---------------------------------------------------------------------- MessageFactory

FACTORY = MessageFactory("edge-001")

BUILDERS: dict[str, tuple[str, Callable[[MessageFactory], dict[str, Any]]]] = {
    "register": ("REGISTER", lambda f: f.register("Station", "0.1.0", [], token="t0k")),
    "heartbeat": ("HEARTBEAT", lambda f: f.heartbeat({"devicesOnline": 1, "devicesTotal": 2})),
    "ack": ("ack", lambda f: f.ack("cmd-1", "accepted", ["pillar-001"])),
    "progress": (
        "progress_update",
        lambda f: f.progress("cmd-1", 40, "step 2/5", 2, 5, "pillar-001"),
    ),
    "response": (
        "command_response",
        lambda f: f.response("cmd-1", "completed", result={"values": {}}, duration_ms=3),
    ),
    "error": ("error", lambda f: f.error("INVALID_COMMAND", "bad", request_ref="cmd-1")),
    "device_status": (
        "device_status",
        lambda f: f.device_status("pillar-001", "pillar", "offline", "online", "timeout"),
    ),
    "telemetry": (
        "telemetry",
        lambda f: f.telemetry("pillar-001", "pillar", "fast", 7, 1.7e9, {"door_state": 1}),
    ),
}


def test_telemetry_carries_group_seq_and_the_sample_time() -> None:
    msg = FACTORY.telemetry(
        "pillar-001",
        "pillar",
        "fast",
        1842,
        1705744800.25,
        {"door_state": 1, "temperature": 23.5},
        snapshot=True,
        quality={"energy": "bad"},
    )
    assert msg["sampledAt"] == "2024-01-20T10:00:00.250Z"
    assert (msg["group"], msg["seq"], msg["snapshot"]) == ("fast", 1842, True)
    assert msg["deviceType"] == "pillar" and msg["quality"] == {"energy": "bad"}
    assert "quality" not in FACTORY.telemetry("d", "t", "g", 1, 0.0, {"a": 1})


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_builder_has_the_full_envelope(name: str) -> None:
    mtype, build = BUILDERS[name]
    msg = build(FACTORY)
    assert msg["type"] == mtype
    assert msg["clientId"] == "edge-001"
    assert msg["version"] == "1.0"
    assert TS_RE.match(msg["timestamp"]), msg["timestamp"]
    assert isinstance(msg["messageId"], str) and msg["messageId"]
    # and it survives the wire unchanged
    assert json.loads(encode(msg)) == msg


def test_message_ids_are_unique_across_ten_thousand_messages() -> None:
    factory = MessageFactory("edge-001")
    builds = [b for _, b in BUILDERS.values()]
    ids = [builds[i % len(builds)](factory)["messageId"] for i in range(10_000)]
    assert len(set(ids)) == 10_000


def test_message_ids_differ_between_factories_of_the_same_edge() -> None:
    # a restarted edge must not replay the ids of its previous run
    first = {MessageFactory("edge-001").heartbeat({})["messageId"] for _ in range(50)}
    assert len(first) == 50


def test_register_carries_capabilities_devices_and_token() -> None:
    devices = [{"deviceId": "pillar-001", "deviceType": "pillar", "status": "online"}]
    msg = FACTORY.register(None, "0.1.0", devices, token="s3cret")
    assert msg["clientType"] == "EDGE"
    assert msg["clientInfo"]["name"] == "edge-001"
    assert msg["clientInfo"]["devices"] == devices
    assert set(msg["clientInfo"]["capabilities"]) >= {"command", "batch", "cancel", "query"}
    assert msg["auth"] == {"token": "s3cret"}
    assert "auth" not in FACTORY.register("n", "0.1.0", [])


def test_device_status_names_the_full_target() -> None:
    msg = FACTORY.device_status("pillar-001", "pillar", "offline", "online", "read timeout x3")
    assert msg["targetClientId"] == "edge-001:pillar-001"
    assert (msg["status"], msg["previous"], msg["reason"]) == (
        "offline",
        "online",
        "read timeout x3",
    )


def test_progress_device_id_is_optional() -> None:
    msg = FACTORY.progress("r", 10, "s", 1, 10)
    assert "deviceId" not in msg
    assert (msg["progress"], msg["completed"], msg["total"]) == (10, 1, 10)


def test_callback_is_echoed_only_when_present() -> None:
    plain = FACTORY.response("r", "completed")
    assert "callback" not in plain
    # present, even when its value is null or falsy
    for value in (None, "", 0, {"a": [1]}):
        resp = FACTORY.response("r", "completed", callback=value, has_callback=True)
        assert "callback" in resp and resp["callback"] == value
        err = FACTORY.error("X", "m", request_ref="r", callback=value, has_callback=True)
        assert "callback" in err and err["callback"] == value
    assert "callback" not in FACTORY.error("X", "m", request_ref="r")


def test_error_without_ref_or_details_omits_them() -> None:
    msg = FACTORY.error("MALFORMED_MESSAGE", "not JSON")
    assert "requestRef" not in msg and "details" not in msg
    full = FACTORY.error("INVALID_COMMAND", "m", request_ref="r", details={"field": "timeout"})
    assert full["requestRef"] == "r" and full["details"] == {"field": "timeout"}


def test_is_terminal() -> None:
    assert protocol.is_terminal(FACTORY.response("r", "completed"))
    assert protocol.is_terminal(FACTORY.error("X", "m", request_ref="r"))
    assert not protocol.is_terminal(FACTORY.error("X", "m"))
    assert not protocol.is_terminal(FACTORY.ack("r", "accepted", []))
    assert not protocol.is_terminal(FACTORY.progress("r", 1, "s", 1, 2))


# ---------------------------------------------------------------------- parse_frame: envelope


@pytest.mark.parametrize(
    ("raw_type", "canonical"),
    [
        ("COMMAND", "COMMAND"),
        ("command", "COMMAND"),
        ("Command", "COMMAND"),
        ("heartbeat", "HEARTBEAT"),
        ("HeartBeat", "HEARTBEAT"),
        ("cancel", "CANCEL"),
        ("Query", "QUERY"),
        ("register_ack", "REGISTER_ACK"),
        ("pong", "PONG"),
    ],
)
def test_type_is_case_insensitive(raw_type: str, canonical: str) -> None:
    msg = parse_frame(frame(type=raw_type, requestRef="r1"))
    assert msg.type == canonical
    assert msg.request_ref == "r1"


@pytest.mark.parametrize("version", ["1.0", "1.5", "1"])
def test_major_version_one_is_accepted(version: str) -> None:
    assert parse_frame(frame(type="HEARTBEAT", version=version)).type == "HEARTBEAT"


def test_missing_version_is_accepted() -> None:
    assert parse_frame(frame(type="HEARTBEAT")).type == "HEARTBEAT"


@pytest.mark.parametrize("version", ["2.0", 2, 1.0, "", ".5", "10.0", "v1.0"])
def test_other_versions_are_unsupported(version: Any) -> None:
    exc = rejected(frame(type="COMMAND", requestRef="r9", version=version))
    assert exc.code == "UNSUPPORTED_VERSION"
    assert exc.details == {"requestRef": "r9"}


@pytest.mark.parametrize(
    "data",
    [
        "",
        "not json",
        "{",
        '{"type": "COMMAND",',
        "NaN",
        '{"type": "COMMAND", "timeout": NaN}',
        '{"type": "COMMAND", "timeout": Infinity}',
        "[" * 100_000,
    ],
)
def test_not_json_is_malformed(data: str) -> None:
    assert rejected(data).code == "MALFORMED_MESSAGE"


@pytest.mark.parametrize("data", ["[]", "1", '"COMMAND"', "null", "true", '[{"type": "COMMAND"}]'])
def test_not_an_object_is_malformed(data: str) -> None:
    assert rejected(data).code == "MALFORMED_MESSAGE"


@pytest.mark.parametrize("data", [b"\xff\xfe{}", b'{"type": "COMMAND", "x": "\xc3"}', b"\x80"])
def test_bytes_that_are_not_utf8_are_malformed(data: bytes) -> None:
    assert rejected(data).code == "MALFORMED_MESSAGE"


def test_utf8_bytes_are_parsed_like_text() -> None:
    msg = parse_frame(frame(type="command", requestRef="é-1").encode("utf-8"))
    assert (msg.type, msg.request_ref) == ("COMMAND", "é-1")


def test_too_large_text_is_malformed_and_keeps_the_ref() -> None:
    big = json.dumps({"requestRef": "big-1", "type": "COMMAND", "pad": "x" * 2000})
    exc = rejected(big, max_size=1024)
    assert exc.code == "MALFORMED_MESSAGE"
    assert exc.details == {"requestRef": "big-1"}
    # one character under the limit is parsed normally
    assert parse_frame(big, max_size=len(big)).request_ref == "big-1"


def test_too_large_bytes_is_malformed() -> None:
    big = json.dumps({"type": "COMMAND", "pad": "x" * 2000}).encode()
    assert rejected(big, max_size=1024).code == "MALFORMED_MESSAGE"


def test_too_large_bytes_keeps_the_ref() -> None:
    big = json.dumps({"requestRef": "big-2", "type": "COMMAND", "pad": "x" * 2000}).encode()
    exc = rejected(big, max_size=1024)
    assert exc.code == "MALFORMED_MESSAGE"
    assert exc.details == {"requestRef": "big-2"}


@pytest.mark.parametrize(
    ("data", "ref"),
    [
        ('{"type": "COMMAND", "requestRef": "cmd-42", "command": {', "cmd-42"),
        ('{"requestRef":"cmd-43"', "cmd-43"),
        ('garbage "requestRef" : "cmd-44" garbage', "cmd-44"),
        ('{"requestRef": "a\\"b", broken', 'a"b'),
        ('{"requestRef": "caf\\u00e9", broken', "café"),
    ],
)
def test_request_ref_is_extracted_from_a_broken_frame(data: str, ref: str) -> None:
    exc = rejected(data)
    assert exc.code == "MALFORMED_MESSAGE"
    assert exc.details == {"requestRef": ref}


@pytest.mark.parametrize(
    "data",
    ['{"requestRef": "", broken', '{"requestRef": 12, broken', "{broken"],
)
def test_broken_frame_without_a_usable_ref_has_no_ref(data: str) -> None:
    exc = rejected(data)
    assert exc.code == "MALFORMED_MESSAGE"
    assert not exc.details.get("requestRef")


@pytest.mark.parametrize("mtype", ["FOO", "command_response", "REGISTERX", "COMMAND2"])
def test_unknown_type(mtype: str) -> None:
    exc = rejected(frame(type=mtype, requestRef="u1"))
    assert exc.code == "UNKNOWN_MESSAGE_TYPE"
    assert exc.details == {"requestRef": "u1"}


@pytest.mark.parametrize("mtype", [None, 5, "", "   ", ["COMMAND"], {"a": 1}])
def test_missing_or_non_string_type_is_malformed(mtype: Any) -> None:
    body: dict[str, Any] = {"requestRef": "t1"}
    if mtype is not None:
        body["type"] = mtype
    exc = rejected(json.dumps(body))
    assert exc.code == "MALFORMED_MESSAGE"
    assert exc.details == {"requestRef": "t1"}


@pytest.mark.parametrize("ref", ["", 5, None, ["a"], {"r": 1}, True])
def test_unusable_request_ref_is_none(ref: Any) -> None:
    msg = parse_frame(frame(type="HEARTBEAT", requestRef=ref))
    assert msg.request_ref is None


def test_unknown_extra_fields_are_ignored() -> None:
    body = good_command(futureField={"x": 1}, anotherOne=[1, 2])
    req = parsed(body)
    assert req.request_ref == "cmd-1"


def test_incoming_keeps_the_body() -> None:
    msg = parse_frame(frame(type="query", requestRef="q1", query="devices"))
    assert msg == Incoming("QUERY", {"type": "query", "requestRef": "q1", "query": "devices"}, "q1")


# ---------------------------------------------------------------------- parse_command


def test_a_good_command_parses_fully() -> None:
    req = parsed(good_command(callback="cb-1", priority="HIGH"))
    assert req.request_ref == "cmd-1"
    assert (req.target_edge, req.target_device) == ("edge-001", "pillar-001")
    assert req.command_type == "SIMPLE"
    assert req.command_code == "SET_BRIGHTNESS"
    assert req.operation_type == "write"
    assert (req.device_type, req.device_id) == ("pillar", "pillar-001")
    assert req.parameters == {"brightness": 50}
    assert req.priority == "high"
    assert req.timeout_ms == 5000.0
    assert (req.callback, req.has_callback) == ("cb-1", True)


def test_defaults() -> None:
    body = {
        "type": "COMMAND",
        "requestRef": "d1",
        "targetClientId": "edge-001",
        "command": {},
    }
    req = parsed(body)
    assert req.command_type == "SIMPLE"
    assert req.priority == "normal"
    assert req.timeout_ms is None
    assert req.parameters == {}
    assert req.target_device is None
    assert req.operation_type is None
    assert (req.callback, req.has_callback) == (None, False)


def test_null_priority_and_parameters_mean_defaults() -> None:
    body = good_command()
    body["priority"] = None
    body["command"]["parameters"] = None
    req = parsed(body)
    assert req.priority == "normal"
    assert req.parameters == {}


def test_callback_presence_is_tracked_even_when_null() -> None:
    body = good_command()
    body["callback"] = None
    req = parsed(body)
    assert (req.callback, req.has_callback) == (None, True)
    req = parsed(good_command(callback={"k": [1, "two"]}))
    assert (req.callback, req.has_callback) == ({"k": [1, "two"]}, True)
    assert not parsed(good_command()).has_callback


def test_target_device_after_the_colon() -> None:
    assert parsed(good_command(targetClientId="edge-001:")).target_device is None
    req = parsed(good_command(targetClientId="edge-009:x:y"))
    assert (req.target_edge, req.target_device) == ("edge-009", "x:y")


@pytest.mark.parametrize("priority", ["low", "Normal", "HIGH", "uRgEnT"])
def test_priority_is_case_insensitive(priority: str) -> None:
    assert parsed(good_command(priority=priority)).priority == priority.lower()


@pytest.mark.parametrize("ctype", ["simple", "Batch", "COMPLEX", "complex"])
def test_command_type_is_case_insensitive(ctype: str) -> None:
    assert parsed(with_command(commandType=ctype)).command_type == ctype.upper()


@pytest.mark.parametrize("op", ["READ", "Write", "execute", "EXECUTE"])
def test_operation_type_is_case_insensitive(op: str) -> None:
    assert parsed(with_command(operationType=op)).operation_type == op.lower()


@pytest.mark.parametrize("timeout", [1, 0.5, 5000, 5000.5, protocol.MAX_TIMEOUT_MS])
def test_good_timeouts(timeout: float) -> None:
    assert parsed(good_command(timeout=timeout)).timeout_ms == float(timeout)


INVALID_TOP: list[tuple[str, dict[str, Any], str]] = [
    ("missing requestRef", good_command(requestRef=None), "requestRef"),
    ("empty requestRef", good_command(requestRef=""), "requestRef"),
    ("numeric requestRef", good_command(requestRef=42), "requestRef"),
    ("list requestRef", good_command(requestRef=["cmd-1"]), "requestRef"),
    ("missing targetClientId", good_command(targetClientId=None), "targetClientId"),
    ("empty targetClientId", good_command(targetClientId=""), "targetClientId"),
    ("numeric targetClientId", good_command(targetClientId=7), "targetClientId"),
    ("missing command", good_command(command=None), "command"),
    ("command is a string", good_command(command="SET_BRIGHTNESS"), "command"),
    ("command is a list", good_command(command=[{"commandType": "SIMPLE"}]), "command"),
    ("bad priority", good_command(priority="critical"), "priority"),
    ("numeric priority", good_command(priority=3), "priority"),
    ("negative timeout", good_command(timeout=-1), "timeout"),
    ("zero timeout", good_command(timeout=0), "timeout"),
    ("bool timeout", good_command(timeout=True), "timeout"),
    ("string timeout", good_command(timeout="5000"), "timeout"),
    ("huge timeout", good_command(timeout=protocol.MAX_TIMEOUT_MS + 1), "timeout"),
    ("enormous timeout", good_command(timeout=10**30), "timeout"),
    ("list timeout", good_command(timeout=[5000]), "timeout"),
]

INVALID_CMD: list[tuple[str, dict[str, Any], str]] = [
    ("bad commandType", with_command(commandType="MULTI"), "command.commandType"),
    ("numeric commandType", with_command(commandType=1), "command.commandType"),
    ("bad operationType", with_command(operationType="delete"), "command.operationType"),
    ("numeric operationType", with_command(operationType=0), "command.operationType"),
    ("parameters is a list", with_command(parameters=[1, 2]), "command.parameters"),
    ("parameters is a string", with_command(parameters="brightness=50"), "command.parameters"),
    ("numeric commandCode", with_command(commandCode=5), "command.commandCode"),
    ("empty commandCode", with_command(commandCode=""), "command.commandCode"),
    ("numeric deviceId", with_command(deviceId=1), "command.deviceId"),
    ("empty deviceType", with_command(deviceType=""), "command.deviceType"),
]


@pytest.mark.parametrize(
    ("body", "fieldname"),
    [(b, f) for _, b, f in INVALID_TOP + INVALID_CMD],
    ids=[name for name, _, _ in INVALID_TOP + INVALID_CMD],
)
def test_schema_errors_name_the_field(body: dict[str, Any], fieldname: str) -> None:
    exc = command_error(body)
    assert exc.code == "INVALID_COMMAND"
    assert exc.details == {"field": fieldname}
    assert exc.message


def test_timeout_that_is_not_finite_is_rejected() -> None:
    # 1e999 is valid JSON syntax; Python reads it as infinity
    text = json.dumps(good_command(timeout=1)).replace('"timeout": 1', '"timeout": 1e999')
    assert "1e999" in text
    with pytest.raises(RequestError) as info:
        parse_command(parse_frame(text))
    assert info.value.code == "INVALID_COMMAND"
    assert info.value.details == {"field": "timeout"}


# ---------------------------------------------------------------------- encode


def test_encode_is_compact_and_keeps_unicode() -> None:
    text = encode({"a": 1, "b": "café ✓"})
    assert text == '{"a":1,"b":"café ✓"}'


def test_encode_falls_back_to_str_for_unknown_objects() -> None:
    at = datetime(2024, 1, 20, tzinfo=timezone.utc)
    assert json.loads(encode({"at": at})) == {"at": str(at)}


def _strict_loads(text: str) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=reject)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_encode_of_non_finite_numbers_is_valid_json(value: float) -> None:
    msg: dict[str, Any] = {
        "type": "telemetry",
        "values": {"temperature": value, "list": [1.5, value]},
    }
    decoded = _strict_loads(encode(msg))
    assert decoded == {"type": "telemetry", "values": {"temperature": None, "list": [1.5, None]}}
    # the message itself is not changed
    assert msg["values"]["temperature"] is value


def test_epoch_timestamps_from_a_cached_second_agree_with_datetime() -> None:
    import random
    from datetime import datetime, timezone

    from edge_proxy.wire.messages import epoch_timestamp, utc_timestamp

    rng = random.Random(7)
    edges = [0.0, 1705744800.25, 1705744859.9995, 1705744859.9999996, 1705744860.0]
    for epoch in edges + [rng.uniform(0, 4e9) for _ in range(20_000)]:
        assert epoch_timestamp(epoch) == utc_timestamp(datetime.fromtimestamp(epoch, timezone.utc))
