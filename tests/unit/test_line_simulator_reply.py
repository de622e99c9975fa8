"""The line simulator builds the reply a profile's ``expect`` pattern matches."""

from __future__ import annotations

from edge_proxy_drivers.line.simulator import build_reply


def test_build_reply_matches_expect() -> None:
    expect = r"^STS (?P<door_state>\d) (?P<brightness>\d+)$"
    assert build_reply(expect, {"brightness": 42, "door_state": 1}) == "STS 1 42"
    assert build_reply(expect, {}) == "STS 0 0"
    assert build_reply("^OK$", {}) == "OK"
    assert build_reply(r"^T=(?P<t>-?\d+\.\d+)C$", {"t": 21.5}) == "T=21.5C"
