"""Config files the tests read, and what ``edge-proxy check`` must say about each broken one.

The broken files live in ``tests/configs/broken/``: each is a small complete config with exactly
one defect (except ``90-three-defects.yaml``). ``BROKEN_CASES`` maps each file to a substring of
the path its error must name and a substring of the message; the unit tests load the files, the
integration tests run ``edge-proxy check`` on them, and the schema tests validate them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.mark.structures import ParameterSet

#: The repository's example config (a good one).
EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"
BROKEN_DIR = Path(__file__).resolve().parent / "broken"
MULTI_DEFECT_FILE = "90-three-defects.yaml"

#: (file in tests/configs/broken, substring of the error path, substring of the error message)
BROKEN_CASES: list[tuple[str, str, str]] = [
    ("01-not-yaml.yaml", "01-not-yaml.yaml", "not valid YAML"),
    ("02-missing-edge-id.yaml", "edge.id", "required key is missing"),
    ("03-gateway-url-scheme.yaml", "gateway.url", "expected a ws:// or wss:// URL"),
    ("04-duplicate-device-id.yaml", "devices[1].id", "already used by devices[0]"),
    ("05-unknown-profile.yaml", "devices[1].profile", "unknown profile 'pillar-modbsu'"),
    ("06-unknown-link-name.yaml", "devices[1].link", "unknown link 'rs485-b'"),
    (
        "07-command-undeclared-point.yaml",
        "profiles.pillar.commands.STATUS.read",
        "point 'humidity' is not declared",
    ),
    (
        "08-command-writes-read-only-point.yaml",
        "profiles.pillar.commands.OPEN_DOOR.write",
        "point 'door_state' is not writable",
    ),
    ("09-unknown-driver.yaml", "links.sim-bus.driver", "no driver named 'no-such-driver'"),
    ("10-modbus-unit-clash.yaml", "devices[1].unit", "unit 1 is already used on this link"),
    (
        "11-point-min-above-max.yaml",
        "profiles.pillar.points.brightness",
        "min (100) is greater than max (0)",
    ),
    ("12-point-bit-16.yaml", "profiles.pillar.points.alarm.bit", "less than or equal to 15"),
    (
        "13-string-point-without-length.yaml",
        "profiles.pillar.points.serial_no",
        "a string point needs length",
    ),
    ("14-bad-duration.yaml", "links.sim-bus.timeout", "expected a duration"),
    ("15-bad-size.yaml", "gateway.outbox.max_bytes", "expected a size"),
    ("16-misspelt-key.yaml", "profiles.pillar.points.mode.adress", "unknown key"),
    ("17-unit-300.yaml", "devices[0].unit", "less than or equal to 247"),
    ("18-unset-env-var.yaml", "gateway.token", "EDGE_PROXY_TEST_UNSET_TOKEN is not set"),
    (
        "19-template-undeclared-param.yaml",
        "profiles.pillar.commands.SET_BRIGHTNESS",
        "parameter {level} that params does not declare",
    ),
    (
        "20-step-two-actions.yaml",
        "profiles.pillar.commands.COMMISSION.steps[1]",
        "exactly one of write, read, delay, command",
    ),
    (
        "21-bad-expect-regex.yaml",
        "profiles.pillar-ascii.commands.SET_BRIGHTNESS.expect",
        "not a valid regular expression",
    ),
    ("22-parity-x.yaml", "links.rs485-a.parity", "'N', 'E', 'O'"),
    (
        "23-simulated-link-unknown-key.yaml",
        "links.sim-bus.latncy",
        "unknown key for driver 'simulated'",
    ),
    ("24-inline-link-bad-parity.yaml", "devices[2].link.parity", "'N', 'E', 'O'"),
    (
        "25-command-reads-write-only-point.yaml",
        "profiles.pillar.commands.STATUS.read",
        "point 'door_cmd' is write-only",
    ),
    ("26-writable-input-register.yaml", "profiles.pillar.points.setpoint", "read-only"),
    (
        "27-unknown-table.yaml",
        "profiles.pillar.points.mode.table",
        "'coil', 'discrete_input', 'input' or 'holding'",
    ),
    ("28-register-bool-without-bit.yaml", "profiles.pillar.points.alarm", "needs bit"),
    (
        "29-step-unknown-command.yaml",
        "profiles.pillar.commands.COMMISSION.steps[2].command",
        "unknown command 'RESTART'",
    ),
    (
        "30-request-without-line.yaml",
        "profiles.pillar.commands.PING.request",
        "needs a line: section",
    ),
    (
        "31-reconnect-initial-above-max.yaml",
        "gateway.reconnect",
        "initial (60.0s) is greater than max (30.0s)",
    ),
    ("32-device-id-with-colon.yaml", "devices[1].id", "must not contain ':'"),
    (
        "33-unknown-text-encoding.yaml",
        "profiles.pillar-ascii.line.encoding",
        "unknown text encoding 'ebcdic-klingon'",
    ),
    (
        "34-inline-link-unknown-driver.yaml",
        "devices[2].link.driver",
        "no driver named 'no-such-driver'",
    ),
    ("35-root-is-a-list.yaml", "<root>", "expected a mapping of sections"),
    ("36-tls-ca-file-missing.yaml", "gateway.tls.ca_file", "does not exist"),
    ("37-tls-cert-file-missing.yaml", "gateway.tls.cert_file", "does not exist"),
    ("38-tls-key-file-missing.yaml", "gateway.tls.key_file", "does not exist"),
    ("39-reconnect-initial-zero.yaml", "gateway.reconnect.initial", "greater than 0"),
    ("40-link-reconnect-initial-zero.yaml", "links.sim-bus.reconnect.initial", "greater than 0"),
    (
        "41-request-template-undeclared-param.yaml",
        "profiles.pillar-ascii.commands.SET_BRIGHTNESS.request",
        "parameter {level} that params does not declare",
    ),
    (
        "42-step-template-undeclared-param.yaml",
        "profiles.pillar.commands.COMMISSION.steps[0].write.mode",
        "parameter {mode} that params does not declare",
    ),
    (
        "43-step-command-undeclared-param.yaml",
        "profiles.pillar.commands.COMMISSION.steps[2].command",
        "needs parameter {brightness}, which COMMISSION's params do not declare",
    ),
    ("44-line-terminator-empty.yaml", "profiles.pillar-ascii.line.terminator", "empty"),
    (
        "45-line-terminator-not-encodable.yaml",
        "profiles.pillar-ascii.line.terminator",
        "cannot be encoded in ascii",
    ),
    (
        "46-write-template-unbalanced-brace.yaml",
        "profiles.pillar.commands.SET_BRIGHTNESS.write.brightness",
        "not a valid template",
    ),
    (
        "47-telemetry-unknown-point.yaml",
        "profiles.pillar.telemetry[0].points[1]",
        "point 'temprature' is not declared",
    ),
    (
        "48-telemetry-write-only-point.yaml",
        "profiles.pillar.telemetry[0].points[1]",
        "point 'door_cmd' is write-only",
    ),
    (
        "49-telemetry-command-writes.yaml",
        "profiles.pillar.telemetry[1].command",
        "command 'COMMISSION' writes (steps[0].write)",
    ),
    (
        "50-telemetry-interval-too-short.yaml",
        "profiles.pillar.telemetry[0].interval",
        "under 10 ms",
    ),
    (
        "51-telemetry-duplicate-group-name.yaml",
        "profiles.pillar.telemetry[1].name",
        "group 'fast' is already used by profiles.pillar.telemetry[0]",
    ),
    (
        "52-telemetry-points-and-command.yaml",
        "profiles.pillar.telemetry[0]",
        "points or command, not both",
    ),
    (
        "53-percent-deadband-without-range.yaml",
        "profiles.pillar.points.mode.deadband",
        "needs both min and max",
    ),
    ("54-deadband-on-bool-point.yaml", "profiles.pillar.points.relay.deadband", "no deadband"),
    ("55-profile-poll-key.yaml", "profiles.pillar.poll", "replaced by telemetry:"),
    (
        "56-telemetry-unknown-command.yaml",
        "profiles.pillar-ascii.telemetry[0].command",
        "unknown command 'STAUS'",
    ),
    (
        "60-console-public-without-token.yaml",
        "console.token",
        "required when console.listen (0.0.0.0:8080) is not a loopback address",
    ),
    ("61-console-bad-port.yaml", "console.listen", "port must be a number from 0 to 65535"),
]


#: Broken files whose expected error config.py does not produce yet (see each reason).
KNOWN_BUGS: dict[str, str] = {}


def broken_params() -> list[ParameterSet]:
    """BROKEN_CASES as pytest params, with the known config.py bugs marked xfail."""
    return [
        pytest.param(
            name,
            path,
            message,
            id=name.removesuffix(".yaml"),
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name])]
            if name in KNOWN_BUGS
            else [],
        )
        for name, path, message in BROKEN_CASES
    ]


def has_error(lines: list[str], path: str, message: str) -> bool:
    """Whether one error line names both the path and the message."""
    return any(path in line and message in line for line in lines)
