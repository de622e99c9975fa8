"""Tests of the configuration loader on good and bad trees and files.

The broken files and their expected errors are in :mod:`tests.configs`; ``edge-proxy check`` and
``run`` on the same files are tested in ``tests/integration/test_config_cli.py``.
"""

from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from edge_proxy.config import (
    Config,
    ConfigError,
    LinkConfig,
    interpolate_env,
    load_config,
    load_config_text,
    parse_duration,
    parse_size,
    validate_tree,
)
from edge_proxy.drivers import registry
from tests.configs import (
    BROKEN_CASES,
    BROKEN_DIR,
    EXAMPLE,
    KNOWN_BUGS,
    MULTI_DEFECT_FILE,
    broken_params,
    has_error,
)

#: Environment of load_config: no EDGE_TOKEN, no test variables.
CLEAN_ENV: dict[str, str] = {}


MINIMAL_YAML = """\
edge:
  id: edge-001
gateway:
  url: "ws://127.0.0.1:9"
links:
  sim: {driver: simulated}
profiles:
  p:
    points:
      level: {table: holding, address: 1, access: rw, min: 0, max: 100}
    commands:
      SET: {params: {level: {type: int}}, write: {level: "{level}"}}
devices:
  - {id: d1, profile: p, link: sim}
"""


def minimal_tree(**sections: Any) -> dict[str, Any]:
    """A small valid config tree; keyword arguments replace whole sections."""
    tree: dict[str, Any] = {
        "edge": {"id": "edge-001"},
        "gateway": {"url": "ws://127.0.0.1:9"},
        "links": {"sim": {"driver": "simulated"}},
        "profiles": {
            "p": {"points": {"level": {"table": "holding", "address": 1, "access": "rw"}}}
        },
        "devices": [{"id": "d1", "profile": "p", "link": "sim"}],
    }
    tree.update(copy.deepcopy(sections))
    return tree


def errors_of(tree: dict[str, Any]) -> list[str]:
    """The error lines of validating ``tree`` (an empty list when it is valid)."""
    try:
        validate_tree(tree)
    except ConfigError as exc:
        return exc.errors
    return []


# ---------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1.5, 1.5),
        (2, 2.0),
        (0, 0.0),
        ("1.5", 1.5),
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("0.5s", 0.5),
        (" 5s ", 5.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    ["fast", "5 sec", "5d", "ms", "", "1.2.3s", "-1s", -1, -0.5, True, None, [5], {"s": 5}],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


def test_parse_duration_rejects_nan() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(math.nan)


def test_durations_in_the_tree_become_seconds() -> None:
    config = validate_tree(
        minimal_tree(
            gateway={"url": "ws://127.0.0.1:9", "heartbeat_interval": "2m"},
            links={"sim": {"driver": "simulated", "timeout": "250ms", "turnaround": 0.5}},
            commands={"dedup_window": "1h"},
        )
    )
    assert config.gateway.heartbeat_interval == 120.0
    assert config.links["sim"].timeout == 0.25
    assert config.links["sim"].turnaround == 0.5
    assert config.commands.dedup_window == 3600.0


# ---------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (65536, 65536),
        (4096.0, 4096),
        ("65536", 65536),
        ("64KiB", 64 * 1024),
        ("16MiB", 16 * 1024**2),
        ("1GiB", 1024**3),
        ("0.5KiB", 512),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value", ["lots", "64 KiBs", "KiB", "1.5.2KiB", "-1", "", -1, 1.5, True, None, [64]]
)
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(value)


def test_sizes_in_the_tree_become_bytes() -> None:
    config = validate_tree(
        minimal_tree(
            gateway={
                "url": "ws://127.0.0.1:9",
                "max_message_size": "64KiB",
                "outbox": {"max_bytes": "16MiB"},
            }
        )
    )
    assert config.gateway.max_message_size == 65536
    assert config.gateway.outbox.max_bytes == 16 * 1024**2


# ---------------------------------------------------------------------------- ${VAR}


def test_interpolate_set_variable() -> None:
    assert interpolate_env("${EDGE_ID}", {"EDGE_ID": "edge-7"}) == "edge-7"


def test_interpolate_default_used_when_unset() -> None:
    assert interpolate_env("${PORT:-18081}", {}) == "18081"
    assert interpolate_env("${TOKEN:-}", {}) == ""


def test_interpolate_set_variable_wins_over_default() -> None:
    assert interpolate_env("${PORT:-18081}", {"PORT": "9000"}) == "9000"


def test_interpolate_inside_a_longer_string() -> None:
    tree = {"gateway": {"url": "wss://${GW_HOST}:${GW_PORT:-443}/edge/${EDGE_ID}"}}
    env = {"GW_HOST": "gw.example.net", "EDGE_ID": "e1"}
    assert interpolate_env(tree, env) == {"gateway": {"url": "wss://gw.example.net:443/edge/e1"}}


def test_interpolate_leaves_other_values_alone() -> None:
    tree = {"a": [1, 2.5, True, None, "plain $HOME {x}"], "b": {"c": 3}}
    assert interpolate_env(tree, {"HOME": "/root"}) == tree


def test_interpolate_unset_without_default_names_every_path() -> None:
    errors: list[str] = []
    tree = {"gateway": {"token": "${SECRET}"}, "devices": [{"id": "a"}, {"link": {"host": "${H}"}}]}
    interpolate_env(tree, {}, "", errors)
    assert len(errors) == 2
    assert errors[0].startswith("gateway.token: ")
    assert "SECRET is not set" in errors[0]
    assert errors[1].startswith("devices[1].link.host: ")
    assert "H is not set" in errors[1]


def test_load_config_text_interpolates_before_validation() -> None:
    text = MINIMAL_YAML.replace("edge-001", "${EDGE_ID}").replace(
        "ws://127.0.0.1:9", "ws://${GW_HOST:-127.0.0.1}:${GW_PORT}"
    )
    config = load_config_text(text, env={"EDGE_ID": "edge-042", "GW_PORT": "18081"})
    assert config.edge.id == "edge-042"
    assert config.gateway.url == "ws://127.0.0.1:18081"


def test_load_config_text_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_PROXY_TEST_EDGE_ID", "edge-from-env")
    text = MINIMAL_YAML.replace("edge-001", "${EDGE_PROXY_TEST_EDGE_ID}")
    assert load_config_text(text).edge.id == "edge-from-env"


def test_unset_variable_is_a_config_error_naming_the_path() -> None:
    text = MINIMAL_YAML.replace('"ws://127.0.0.1:9"', '"ws://127.0.0.1:9"\n  token: ${NO_SUCH}')
    with pytest.raises(ConfigError) as info:
        load_config_text(text, env={})
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith("gateway.token: environment variable NO_SUCH")


def test_interpolated_values_are_converted_to_their_types() -> None:
    text = MINIMAL_YAML.replace(
        "{id: d1, profile: p, link: sim}",
        '{id: d1, profile: p, link: sim, unit: "${UNIT}", enabled: "${ON:-false}"}',
    ).replace("{driver: simulated}", '{driver: simulated, timeout: "${TMO:-250ms}"}')
    config = load_config_text(text, env={"UNIT": "7"})
    assert config.devices[0].unit == 7
    assert config.devices[0].enabled is False
    assert config.links["sim"].timeout == 0.25


def test_port_from_environment_is_a_number() -> None:
    text = MINIMAL_YAML.replace(
        "sim: {driver: simulated}",
        "sim: {driver: simulated}\n"
        '  plc: {driver: modbus-tcp, host: 10.0.0.5, port: "${PLC_PORT:-502}"}',
    )
    config = load_config_text(text, env={})
    assert config.links["plc"].port == 502


def test_interpolate_default_used_when_empty() -> None:
    assert interpolate_env("${PORT:-18081}", {"PORT": ""}) == "18081"


# ---------------------------------------------------------------------------- the example


def packaged_example() -> Path:
    """The copy of config.example.yaml shipped inside the package."""
    return Path(str(resources.files("edge_proxy").joinpath("config.example.yaml")))


def test_example_and_packaged_copy_are_identical() -> None:
    assert packaged_example().resolve() != EXAMPLE.resolve()
    assert packaged_example().read_bytes() == EXAMPLE.read_bytes()


@pytest.mark.parametrize("path", [EXAMPLE, packaged_example()], ids=["repo", "packaged"])
def test_example_loads(path: Path) -> None:
    config = load_config(path, env=CLEAN_ENV, check_link=registry.check_link)
    assert config.edge.id == "edge-001"
    assert config.gateway.url == "ws://127.0.0.1:18081"
    assert config.gateway.token is None  # ${EDGE_TOKEN:-} with EDGE_TOKEN unset
    assert config.gateway.outbox.max_bytes == 16 * 1024**2
    ids = ["pillar-001", "pillar-002", "pillar-003", "pillar-101", "pillar-900"]
    assert [d.id for d in config.devices] == ids
    assert [d.enabled for d in config.devices] == [True, True, True, True, False]
    assert set(config.profiles) == {"pillar-modbus", "pillar-ascii"}
    points = config.profiles["pillar-modbus"].points
    assert points["temperature"].scale == 0.1
    assert points["alarm"].bit == 3
    steps = config.profiles["pillar-modbus"].commands["COMMISSION"].steps
    assert steps is not None
    assert steps[1].delay == 0.5


# ---------------------------------------------------------------------------- secrets


def test_token_is_a_secret_that_repr_never_shows() -> None:
    secret = "tok-7c1e9d-DO-NOT-LOG"
    text = MINIMAL_YAML.replace('"ws://127.0.0.1:9"', '"ws://127.0.0.1:9"\n  token: ${EDGE_TOKEN}')
    config = load_config_text(text, env={"EDGE_TOKEN": secret})
    assert isinstance(config.gateway.token, SecretStr)
    assert config.gateway.token.get_secret_value() == secret
    for shown in (repr(config), str(config), repr(config.gateway), config.model_dump_json()):
        assert secret not in shown
    assert "**" in repr(config.gateway.token)


def test_empty_token_means_no_token() -> None:
    text = MINIMAL_YAML.replace('"ws://127.0.0.1:9"', '"ws://127.0.0.1:9"\n  token: ""')
    assert load_config_text(text, env={}).gateway.token is None


# ---------------------------------------------------------------------------- points


@pytest.mark.parametrize(
    ("alias", "table"),
    [
        ("coil", "coil"),
        ("coils", "coil"),
        ("di", "discrete_input"),
        ("discrete_input", "discrete_input"),
        ("discrete_inputs", "discrete_input"),
        ("ir", "input"),
        ("input", "input"),
        ("input_register", "input"),
        ("input_registers", "input"),
        ("hr", "holding"),
        ("holding", "holding"),
        ("holding_register", "holding"),
        ("holding_registers", "holding"),
        ("HR", "holding"),
        ("Coils", "coil"),
    ],
)
def test_table_aliases(alias: str, table: str) -> None:
    config = validate_tree(
        minimal_tree(profiles={"p": {"points": {"x": {"table": alias, "address": 7}}}})
    )
    point = config.profiles["p"].points["x"]
    assert point.table == table
    assert point.address == 7


@pytest.mark.parametrize(
    ("point", "type_"),
    [
        ({"table": "holding"}, "uint16"),
        ({"table": "hr"}, "uint16"),
        ({"table": "input"}, "uint16"),
        ({"table": "input_registers"}, "uint16"),
        ({}, "uint16"),
        ({"table": "coil"}, "bool"),
        ({"table": "coils"}, "bool"),
        ({"table": "discrete_input"}, "bool"),
        ({"table": "di"}, "bool"),
        ({"table": "holding", "bit": 4}, "bool"),
    ],
)
def test_default_point_type(point: dict[str, Any], type_: str) -> None:
    config = validate_tree(minimal_tree(profiles={"p": {"points": {"x": point}}}))
    assert config.profiles["p"].points["x"].type == type_


def test_point_defaults_and_access() -> None:
    config = validate_tree(minimal_tree())
    point = config.profiles["p"].points["level"]
    assert (point.byte_order, point.word_order) == ("big", "big")
    assert point.readable
    assert point.writable
    ro = validate_tree(minimal_tree(profiles={"p": {"points": {"x": {}}}})).profiles["p"]
    assert ro.points["x"].access == "r"
    assert not ro.points["x"].writable


@pytest.mark.parametrize(
    "point",
    [
        {"table": "holding", "address": 65535, "type": "uint32"},
        {"table": "input", "address": 65530, "type": "string", "length": 10},
    ],
    ids=["uint32-at-65535", "string-past-65535"],
)
def test_point_past_the_last_register_is_rejected(point: dict[str, Any]) -> None:
    errors = errors_of(minimal_tree(profiles={"p": {"points": {"x": point}}}))
    assert any(e.startswith("profiles.p.points.x") for e in errors), errors


# ---------------------------------------------------------------------------- links


def test_named_and_inline_links() -> None:
    config = load_config(EXAMPLE, env=CLEAN_ENV, check_link=registry.check_link)
    named = config.devices[2]
    inline = config.devices[-1]
    assert named.link == "sim-bus"
    assert config.link_of(named) is config.links["sim-bus"]
    assert config.link_name_of(named) == "sim-bus"
    assert config.link_of(named).extra_keys == {"latency": "5ms"}
    assert isinstance(inline.link, LinkConfig)
    assert config.link_of(inline) is inline.link
    assert config.link_of(inline).driver == "simulated"
    assert config.link_name_of(inline) == "pillar-900/link"


def test_inline_link_is_checked_by_its_driver() -> None:
    tree = minimal_tree(devices=[{"id": "d1", "profile": "p", "link": {"driver": "simulated"}}])
    assert validate_tree(tree, registry.check_link).devices[0].link == LinkConfig(
        driver="simulated"
    )
    tree["devices"][0]["link"]["latency"] = "soon"
    with pytest.raises(ConfigError) as info:
        validate_tree(tree, registry.check_link)
    assert has_error(info.value.errors, "devices[0].link.latency", "expected a duration")


def test_disabled_device_may_reuse_a_unit() -> None:
    devices = [
        {"id": "d1", "profile": "p", "link": "plc", "unit": 1},
        {"id": "d2", "profile": "p", "link": "plc", "unit": 1, "enabled": False},
    ]
    links = {"plc": {"driver": "modbus-tcp", "host": "10.0.0.5", "port": 502}}
    assert errors_of(minimal_tree(links=links, devices=devices)) == []
    devices[1]["enabled"] = True
    assert errors_of(minimal_tree(links=links, devices=devices)) == [
        "devices[1].unit: unit 1 is already used on this link by 'd1'"
    ]


def test_default_unit_is_1_for_clashes() -> None:
    devices = [
        {"id": "d1", "profile": "p", "link": "plc"},
        {"id": "d2", "profile": "p", "link": "plc", "unit": 1},
    ]
    links = {"plc": {"driver": "modbus-rtu", "port": "/dev/ttyUSB0"}}
    errors = errors_of(minimal_tree(links=links, devices=devices))
    assert errors == ["devices[1].unit: unit 1 is already used on this link by 'd1'"]


def test_same_unit_on_different_links_or_non_modbus_links_is_fine() -> None:
    links = {
        "plc-a": {"driver": "modbus-tcp", "host": "10.0.0.5", "port": 502},
        "plc-b": {"driver": "modbus-tcp", "host": "10.0.0.6", "port": 502},
        "sim": {"driver": "simulated"},
    }
    devices = [
        {"id": "a", "profile": "p", "link": "plc-a", "unit": 1},
        {"id": "b", "profile": "p", "link": "plc-b", "unit": 1},
        {"id": "c", "profile": "p", "link": "sim", "unit": 1},
        {"id": "d", "profile": "p", "link": "sim", "unit": 1},
    ]
    assert errors_of(minimal_tree(links=links, devices=devices)) == []


@pytest.mark.parametrize(
    ("links", "second_link"),
    [
        (
            {
                "rs485-a": {"driver": "modbus-rtu", "port": "/dev/ttyUSB0"},
                "rs485-a-slow": {"driver": "modbus-rtu", "port": "/dev/ttyUSB0", "timeout": "3s"},
            },
            "rs485-a-slow",
        ),
        (
            {"plc": {"driver": "modbus-tcp", "host": "10.0.0.5", "port": 502}},
            {"driver": "modbus-tcp", "host": "10.0.0.5", "port": 502},
        ),
    ],
    ids=["two-names-one-serial-port", "named-and-inline-same-host"],
)
def test_unit_clash_on_the_same_bus_under_two_link_names(
    links: dict[str, Any], second_link: str | dict[str, Any]
) -> None:
    first = next(iter(links))
    devices = [
        {"id": "a", "profile": "p", "link": first, "unit": 5},
        {"id": "b", "profile": "p", "link": second_link, "unit": 5},
    ]
    errors = errors_of(minimal_tree(links=links, devices=devices))
    assert has_error(errors, "devices[1].unit", "unit 5 is already used"), errors


# ---------------------------------------------------------------------------- other findings


def test_duplicate_yaml_key_is_an_error() -> None:
    text = MINIMAL_YAML.replace(
        "      level: {table: holding, address: 1, access: rw, min: 0, max: 100}\n",
        "      level: {table: holding, address: 1, access: rw, min: 0, max: 100}\n"
        "      level: {table: holding, address: 2, access: rw}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, env={})
    assert any("level" in e and "duplicate" in e.lower() for e in info.value.errors)


def test_yaml_error_without_position_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text("edge: {id: e\x00}\n", env={}, source="x.yaml")
    assert len(info.value.errors) == 1
    line = info.value.errors[0]
    assert "\n" not in line
    assert "::" not in line
    assert line.startswith("x.yaml")


def test_param_default_outside_its_range_is_rejected() -> None:
    profiles = {
        "p": {
            "points": {"level": {"table": "holding", "address": 1, "access": "rw"}},
            "commands": {
                "SET": {
                    "params": {"level": {"type": "int", "min": 0, "max": 100, "default": 500}},
                    "write": {"level": "{level}"},
                }
            },
        }
    }
    errors = errors_of(minimal_tree(profiles=profiles))
    assert any(e.startswith("profiles.p.commands.SET.params.level") for e in errors), errors


def test_template_with_empty_field_is_rejected() -> None:
    profiles = {
        "p": {
            "points": {"level": {"table": "holding", "address": 1, "access": "rw"}},
            "commands": {"SET": {"params": {"level": {}}, "write": {"level": "L{}"}}},
        }
    }
    errors = errors_of(minimal_tree(profiles=profiles))
    assert any(e.startswith("profiles.p.commands.SET") for e in errors), errors


def test_shape_and_reference_errors_are_reported_together() -> None:
    tree = minimal_tree()
    tree["devices"] = [
        {"id": "d1", "profile": "p", "link": "sim", "unit": 300},
        {"id": "d2", "profile": "no-such-profile", "link": "sim"},
    ]
    errors = errors_of(tree)
    assert has_error(errors, "devices[0].unit", "247")
    assert has_error(errors, "devices[1].profile", "unknown profile")


def test_nan_duration_in_the_tree_is_rejected() -> None:
    tree = minimal_tree(links={"sim": {"driver": "simulated", "turnaround": math.nan}})
    assert has_error(errors_of(tree), "links.sim.turnaround", "duration")


# ---------------------------------------------------------------------------- broken files


def test_broken_case_table_matches_the_files() -> None:
    names = [name for name, _, _ in BROKEN_CASES]
    assert len(names) >= 18
    assert len(set(names)) == len(names)
    on_disk = {p.name for p in BROKEN_DIR.glob("*.yaml")}
    assert on_disk == {*names, MULTI_DEFECT_FILE}
    assert set(KNOWN_BUGS) <= set(names)


@pytest.mark.parametrize(("name", "path", "message"), broken_params())
def test_load_config_rejects_broken_file(name: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BROKEN_DIR / name, env=CLEAN_ENV, check_link=registry.check_link)
    errors = info.value.errors
    assert all("\n" not in e for e in errors), errors
    assert has_error(errors, path, message), errors


@pytest.mark.parametrize(("name", "path", "message"), broken_params())
def test_broken_file_has_exactly_one_defect(name: str, path: str, message: str) -> None:
    """Each file differs from a valid config by one defect, so it yields exactly one error.

    A driver that is declared but cannot be imported yet (a plugin still being written) is
    an environment problem, not the file's defect, and is left out of the count.
    """
    with pytest.raises(ConfigError) as info:
        load_config(BROKEN_DIR / name, env=CLEAN_ENV, check_link=registry.check_link)
    errors = [e for e in info.value.errors if "failed to load" not in e]
    assert len(errors) == 1, errors
    assert path in errors[0]
    assert message in errors[0]


def test_errors_name_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BROKEN_DIR / "14-bad-duration.yaml", env=CLEAN_ENV)
    assert info.value.errors == [
        "links.sim-bus.timeout: expected a duration such as 5s, 250ms, 2m or a number of "
        "seconds (got 'fast')"
    ]


def test_config_type_is_frozen() -> None:
    config: Config = validate_tree(minimal_tree())
    with pytest.raises(ValueError, match="frozen"):
        config.edge.id = "other"  # type: ignore[misc]
