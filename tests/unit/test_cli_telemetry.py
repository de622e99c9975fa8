"""Telemetry as the CLI shows it: the dev Gateway's one-line form, `status`'s two columns."""

from __future__ import annotations

from datetime import datetime, timezone

from edge_proxy.cli.devgateway import summarize
from edge_proxy.cli.main import telemetry_cells

SAMPLE = {
    "type": "telemetry",
    "clientId": "edge-001",
    "deviceId": "pillar-001",
    "deviceType": "pillar",
    "group": "fast",
    "seq": 1842,
    "sampledAt": "2024-01-20T10:00:00.250Z",
    "snapshot": True,
    "values": {"door_state": 1, "temperature": 23.5},
    "quality": {"energy": "bad"},
    "timestamp": "2024-01-20T10:00:00.300Z",
    "version": "1.0",
}


def test_a_telemetry_message_is_one_short_line() -> None:
    assert summarize(SAMPLE) == (
        "telemetry pillar-001 fast #1842 snap door_state=1 temperature=23.5 [energy:bad] "
        "@10:00:00.250"
    )
    change = {**SAMPLE, "snapshot": False, "values": {"relay": True, "mode": "auto"}}
    del change["quality"]
    expected = 'telemetry pillar-001 fast #1842 relay=true mode="auto" @10:00:00.250'
    assert summarize(change) == expected


def test_long_value_lists_are_cut_with_a_count_of_the_rest() -> None:
    many = {**SAMPLE, "values": {f"point_{i:03d}": i / 7 for i in range(200)}}
    many["quality"] = {f"bad_{i}": "bad" for i in range(10)}
    line = summarize(many)
    assert len(line) < 200
    assert "point_000=0 point_001=0.142857" in line  # floats kept short
    shown = line.count("point_")
    assert f"+{200 - shown} more" in line
    assert "[bad_0:bad" in line and "+" in line.split("[")[1]
    assert line.endswith("@10:00:00.250")


def test_status_shows_the_last_sample_age_and_the_skipped_ticks() -> None:
    now = datetime(2024, 1, 20, 10, 0, 2, 350_000, tzinfo=timezone.utc).timestamp()
    groups = [
        {"group": "fast", "skipped": 3, "lastSample": "2024-01-20T10:00:00.250Z"},
        {"group": "slow", "skipped": 1, "lastSample": "2024-01-20T09:59:00.000Z"},
    ]
    assert telemetry_cells(groups, now) == ("2.1s", 4)  # the newest group's sample
    assert telemetry_cells([{"group": "g", "skipped": 0, "lastSample": None}], now) == (
        "never",
        0,
    )
    assert telemetry_cells(None, now) == (None, None)  # no telemetry: "-" in the table
    assert telemetry_cells([groups[1]], now)[0] == "1.0m"
    hours = [{"skipped": 0, "lastSample": "2024-01-20T07:00:00.000Z"}]
    assert telemetry_cells(hours, now)[0] == "3.0h"
