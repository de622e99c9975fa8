"""The telemetry keys through the real loader: poll groups, deadbands, the retired ``poll:``.

Each case is a small YAML snippet spliced into one base file: the points and groups of a
Modbus-like profile ``p``, the groups of a line-protocol profile ``line``, extra device keys
and extra top-level sections. Bad cases name the path and a part of the message.
"""

from __future__ import annotations

import textwrap

import pytest

from edge_proxy.config import Config, ConfigError, TelemetryGroupConfig, load_config_text

POINTS = """\
level:   {table: holding, address: 1, access: rw, min: 0, max: 200}
temp:    {table: input, address: 0, type: int16, scale: 0.1}
cmd:     {table: holding, address: 2, access: w}
flag:    {table: coil, address: 0}
label:   {table: holding, address: 10, type: string, length: 4}
"""

COMMANDS = """\
SET: {params: {level: {type: int, required: true}}, write: {level: "{level}"}}
READ: {read: [level, temp]}
SETUP: {steps: [{delay: 10ms}, {write: {level: 1}}]}
OPEN: {write: {level: 1}}
CALL_OPEN: {steps: [{read: [temp]}, {command: OPEN}]}
CALL_READ: {steps: [{command: READ}, {delay: 10ms}]}
WRITE_AND_READ: {write: {level: 5}, read: [level]}
"""

LINE_COMMANDS = """\
STATUS: {request: "STS?", expect: "^STS (?P<door>\\\\d)$"}
BRT: {params: {b: {type: int, required: true}}, request: "BRT {b:03d}"}
BRT_DEFAULT: {params: {b: {type: int, default: 50}}, request: "BRT {b:03d}"}
"""


def config_text(
    groups: str = "[]",
    line_groups: str = "[]",
    points: str = POINTS,
    device: str = "",
    top: str = "",
    profile: str = "",
) -> str:
    """The base file with the given snippets (each a YAML block or flow value)."""

    def block(text: str, indent: int) -> str:
        return textwrap.indent(textwrap.dedent(text), " " * indent)

    return (
        "edge: {id: edge-001}\n"
        'gateway: {url: "ws://127.0.0.1:9"}\n'
        "links: {sim: {driver: simulated}}\n"
        "profiles:\n"
        "  p:\n"
        "    points:\n"
        + block(points, 6)
        + "    commands:\n"
        + block(COMMANDS, 6)
        + "    telemetry:\n"
        f"{block(groups, 6)}\n" + block(profile, 4) + "  line:\n"
        '    line: {terminator: "\\n"}\n'
        "    commands:\n" + block(LINE_COMMANDS, 6) + "    telemetry:\n"
        f"{block(line_groups, 6)}\n"
        "devices:\n"
        f"  - {{id: d1, profile: p, link: sim{device}}}\n"
        "  - {id: d2, profile: line, link: sim}\n" + top
    )


def load(**snippets: str) -> Config:
    """Load the base file with the snippets."""
    return load_config_text(config_text(**snippets), env={})


def errors(**snippets: str) -> list[str]:
    """The error lines of loading the base file with the snippets."""
    with pytest.raises(ConfigError) as info:
        load(**snippets)
    return info.value.errors


def test_the_base_file_loads_with_the_defaults() -> None:
    config = load()
    assert config.profiles["p"].telemetry == []
    assert config.telemetry.buffer == "latest"
    assert config.devices[0].telemetry is True
    assert config.profiles["p"].points["level"].deadband_value() == 0.0


def test_a_group_has_these_defaults() -> None:
    (group,) = load(groups="- {interval: 1s, points: [level]}").profiles["p"].telemetry
    assert group == TelemetryGroupConfig(interval=1.0, points=["level"])
    assert (group.name, group.report, group.heartbeat, group.min_interval) == (
        "default",
        "change",
        0.0,
        0.0,
    )
    assert group.command is None


def test_a_full_group() -> None:
    text = """\
    - name: fast
      interval: 250ms
      points: [temp, level]
      report: always
      heartbeat: 10m
      min_interval: 2s
    """
    (group,) = load(groups=text).profiles["p"].telemetry
    assert group.name == "fast"
    assert (group.interval, group.heartbeat, group.min_interval) == (0.25, 600.0, 2.0)
    assert group.points == ["temp", "level"]
    assert group.report == "always"


@pytest.mark.parametrize(
    ("points", "names"),
    [
        ('"*"', ["level", "temp", "flag", "label"]),  # profile order, write-only cmd left out
        ("[temp, level]", ["temp", "level"]),  # the group's order
    ],
)
def test_point_names(points: str, names: list[str]) -> None:
    config = load(groups=f"- {{interval: 1s, points: {points}}}")
    profile = config.profiles["p"]
    assert profile.telemetry[0].point_names(profile) == names


def test_a_command_group_reads_no_points_of_its_own() -> None:
    config = load(line_groups="- {interval: 5s, command: STATUS}")
    profile = config.profiles["line"]
    assert profile.telemetry[0].command == "STATUS"
    assert profile.telemetry[0].point_names(profile) == []


@pytest.mark.parametrize(
    ("groups", "line_groups"),
    [
        ("- {interval: 1s, command: READ}", "[]"),  # a read command
        ("- {interval: 1s, command: CALL_READ}", "[]"),  # steps that read, delay, call a read
        ("[]", "- {interval: 1s, command: STATUS}"),  # a line request: it reads
        ("[]", "- {interval: 1s, command: BRT_DEFAULT}"),  # a parameter with a default
        ("- {interval: 10ms, points: [level]}", "[]"),  # the shortest interval
        ("- {interval: 0.01, points: [level]}", "[]"),
        ("[{interval: 1s, points: [level]}, {name: b, interval: 1s, points: [level]}]", "[]"),
    ],
)
def test_good_groups(groups: str, line_groups: str) -> None:
    load(groups=groups, line_groups=line_groups)


def test_device_telemetry_false_and_buffer_queue() -> None:
    config = load(device=", telemetry: false", top="telemetry: {buffer: queue}\n")
    assert config.devices[0].telemetry is False
    assert config.devices[1].telemetry is True
    assert config.telemetry.buffer == "queue"


# ----------------------------------------------------------------------------- deadbands


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ("deadband: 0.5", 0.5),
        ("deadband: 0", 0.0),
        ("deadband: 3", 3.0),
        ('deadband: "10%"', 20.0),  # of min 0 .. max 200
        ('deadband: "0.5%"', 1.0),
        ('deadband: " 2 % "', 4.0),
        ('deadband: "1.5"', 1.5),  # a number written as a string (an ${ENV} value)
        ("min: -50, max: 200, deadband: 10%", 25.0),  # span -50..200
        ("min: 20, max: 20, deadband: 10%", 0.0),  # an empty span
    ],
)
def test_deadband_value(spec: str, value: float) -> None:
    if "max:" not in spec:
        spec = f"min: 0, max: 200, {spec}"
    points = POINTS.replace("min: 0, max: 200}", spec + "}")
    config = load(points=points)
    assert config.profiles["p"].points["level"].deadband_value() == pytest.approx(value)


def test_deadband_on_a_point_without_range() -> None:
    points = POINTS.replace("scale: 0.1}", "scale: 0.1, deadband: 0.2}")
    assert load(points=points).profiles["p"].points["temp"].deadband_value() == 0.2


# ----------------------------------------------------------------------------- errors

AT = "profiles.p.telemetry"


@pytest.mark.parametrize(
    ("snippets", "path", "message"),
    [
        # points
        (
            {"groups": "[{interval: 1s, points: [level]}, {name: b, interval: 1s, points: [tmp]}]"},
            f"{AT}[1].points[0]",
            "point 'tmp' is not declared",
        ),
        (
            {"groups": "- {interval: 1s, points: [level, temp, cmd]}"},
            f"{AT}[0].points[2]",
            "point 'cmd' is write-only",
        ),
        (
            {"groups": "- {interval: 1s, points: [level, temp, level]}"},
            f"{AT}[0].points[2]",
            "listed twice",
        ),
        ({"groups": "- {interval: 1s, points: []}"}, f"{AT}[0].points", "points is empty"),
        ({"groups": "- {interval: 1s, points: all}"}, f"{AT}[0].points", 'or "*"'),
        (
            {"line_groups": '- {interval: 1s, points: "*"}'},
            "profiles.line.telemetry[0].points",
            "no readable",
        ),
        # points or command
        ({"groups": "- {interval: 1s}"}, f"{AT}[0]", "needs points or command: neither"),
        (
            {"groups": "- {interval: 1s, points: [level], command: READ}"},
            f"{AT}[0]",
            "points or command, not both",
        ),
        # commands
        (
            {"groups": "- {interval: 1s, command: REDA}"},
            f"{AT}[0].command",
            "unknown command 'REDA'",
        ),
        ({"groups": "- {interval: 1s, command: SET}"}, f"{AT}[0].command", "writes (write)"),
        (
            {"groups": "- {interval: 1s, command: WRITE_AND_READ}"},
            f"{AT}[0].command",
            "writes (write)",
        ),
        (
            {"groups": "- {interval: 1s, command: SETUP}"},
            f"{AT}[0].command",
            "writes (steps[1].write)",
        ),
        (
            {"groups": "- {interval: 1s, command: CALL_OPEN}"},
            f"{AT}[0].command",
            "writes (steps[1].command OPEN: write)",
        ),
        (
            {"line_groups": "- {interval: 1s, command: BRT}"},
            "profiles.line.telemetry[0].command",
            "needs parameter 'b', which a poll cannot give",
        ),
        # interval, names, keys
        ({"groups": "- {interval: 5ms, points: [level]}"}, f"{AT}[0].interval", "under 10 ms"),
        ({"groups": "- {interval: 0.009, points: [level]}"}, f"{AT}[0].interval", "under 10 ms"),
        ({"groups": "- {interval: 0, points: [level]}"}, f"{AT}[0].interval", "under 10 ms"),
        ({"groups": "- {points: [level]}"}, f"{AT}[0].interval", "required key is missing"),
        (
            {"groups": "[{interval: 1s, points: [level]}, {interval: 1m, points: [temp]}]"},
            f"{AT}[1].name",
            "group 'default' is already used by profiles.p.telemetry[0]",
        ),
        ({"groups": "- {name: '', interval: 1s, points: [level]}"}, f"{AT}[0].name", "at least 1"),
        (
            {"groups": "- {interval: 1s, points: [level], report: sometimes}"},
            f"{AT}[0].report",
            "'change' or 'always'",
        ),
        (
            {"groups": "- {interval: 1s, points: [level], heartbeat: soon}"},
            f"{AT}[0].heartbeat",
            "duration",
        ),
        (
            {"groups": "- {interval: 1s, points: [level], every: 1s}"},
            f"{AT}[0].every",
            "unknown key",
        ),
        ({"top": "telemetry: {buffer: all}\n"}, "telemetry.buffer", "'latest' or 'queue'"),
        ({"device": ", telemetry: maybe"}, "devices[0].telemetry", "boolean"),
        # deadbands
        (
            {"points": POINTS.replace("scale: 0.1}", 'scale: 0.1, deadband: "2%"}')},
            "profiles.p.points.temp.deadband",
            "needs both min and max",
        ),
        (
            {"points": POINTS.replace("max: 200}", 'deadband: "2%"}')},
            "profiles.p.points.level.deadband",
            "needs both min and max",
        ),
        (
            {
                "points": POINTS.replace(
                    "{table: coil, address: 0}", "{table: coil, address: 0, deadband: 1}"
                )
            },
            "profiles.p.points.flag.deadband",
            "a bool point takes no deadband",
        ),
        (
            {"points": POINTS.replace("length: 4}", "length: 4, deadband: 0}")},
            "profiles.p.points.label.deadband",
            "a string point takes no deadband",
        ),
        (
            {"points": POINTS.replace("max: 200}", "max: 200, deadband: -1}")},
            "profiles.p.points.level.deadband",
            ">= 0",
        ),
        (
            {"points": POINTS.replace("max: 200}", 'max: 200, deadband: "0%"}')},
            "profiles.p.points.level.deadband",
            "above 0%",
        ),
        (
            {"points": POINTS.replace("max: 200}", 'max: 200, deadband: "-2%"}')},
            "profiles.p.points.level.deadband",
            "above 0%",
        ),
        (
            {"points": POINTS.replace("max: 200}", 'max: 200, deadband: "two"}')},
            "profiles.p.points.level.deadband",
            '"2%"',
        ),
        (
            {"points": POINTS.replace("max: 200}", "max: 200, deadband: true}")},
            "profiles.p.points.level.deadband",
            '"2%"',
        ),
        (
            {"points": POINTS.replace("max: 200}", "max: 200, deadband: .nan}")},
            "profiles.p.points.level.deadband",
            ">= 0",
        ),
        (
            {"points": POINTS.replace("max: 200}", "max: 200, deadband: [1]}")},
            "profiles.p.points.level.deadband",
            ">= 0",
        ),
        # the key of earlier versions
        (
            {"profile": "poll: {interval: 1s, points: [level]}\n"},
            "profiles.p.poll",
            "poll: is replaced by telemetry:",
        ),
    ],
)
def test_errors(snippets: dict[str, str], path: str, message: str) -> None:
    found = errors(**snippets)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}: ") or found[0].startswith(f"{path} ("), found
    assert message in found[0], found


def test_poll_is_refused_even_when_empty() -> None:
    found = errors(profile="poll: null\n")
    assert found == [
        "profiles.p.poll: poll: is replaced by telemetry:, a list of poll groups "
        "(telemetry: [{interval: 10s, points: [...]}]) (got None)"
    ]


def test_every_group_error_is_reported_at_once() -> None:
    groups = "[{interval: 5ms, points: [nope]}, {name: b, interval: 1s, command: SET}]"
    found = errors(groups=groups)
    # the interval is a shape error: the cross checks wait for a valid file
    assert found == [
        f"{AT}[0].interval: an interval under 10 ms is too short: 10ms at least (got '5ms')"
    ]
    found = errors(groups=groups.replace("5ms", "1s"))
    assert [e.partition(":")[0] for e in found] == [f"{AT}[0].points[0]", f"{AT}[1].command"]
