"""Config errors name the YAML line of their path as well as the path itself.

``ConfigError.errors`` keeps its plain ``path: problem`` text; ``ConfigError.lines`` holds each
error's line and ``ConfigError.located`` the text an operator reads: ``path (line N): problem``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_proxy.config import (
    ConfigError,
    DriverChecker,
    LinkConfig,
    ProfileChecker,
    ProfileConfig,
    load_config,
    load_config_text,
    validate_tree,
)
from edge_proxy.config.loader import line_of, parse_yaml

# line numbers are given in the comments; the tests below rely on them
GOOD = """\
edge:                                   # 1
  id: edge-001                          # 2
gateway:                                # 3
  url: ws://127.0.0.1:9                 # 4
links:                                  # 5
  sim: {driver: simulated}              # 6
profiles:                               # 7
  p:                                    # 8
    points:                             # 9
      level: {table: holding, address: 1, access: rw}   # 10
devices:                                # 11
  - id: d1                              # 12
    profile: p                          # 13
    link: sim                           # 14
  - id: d2                              # 15
    profile: p                          # 16
    link: {driver: simulated}           # 17
    unit: 2                             # 18
"""


def lines_of(text: str) -> list[int]:
    """The 1-based numbers of the lines whose comment is ``# N``, checked against N."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if "#" in line:
            assert line.rsplit("#", 1)[1].strip() == str(n)
            out.append(n)
    return out


def edited(changes: dict[int, str]) -> str:
    """GOOD with the lines numbered in ``changes`` replaced (the line count stays the same)."""
    lines = GOOD.splitlines()
    for n, text in changes.items():
        lines[n - 1] = text
    return "\n".join(lines) + "\n"


def error_of(
    text: str,
    check_link: DriverChecker | None = None,
    source: str = "<config>",
    check_profile: ProfileChecker | None = None,
) -> ConfigError:
    """The ConfigError of loading ``text`` with an empty environment."""
    with pytest.raises(ConfigError) as info:
        load_config_text(
            text, env={}, check_link=check_link, source=source, check_profile=check_profile
        )
    return info.value


def test_the_fixture_is_valid_and_numbered() -> None:
    assert lines_of(GOOD) == list(range(1, 19))
    assert [d.id for d in load_config_text(GOOD, env={}).devices] == ["d1", "d2"]


def test_a_shape_error_names_path_and_line() -> None:
    exc = error_of(edited({18: "    unit: 300"}))
    assert exc.errors == ["devices[1].unit: Input should be less than or equal to 247 (got 300)"]
    assert exc.lines == [18]
    assert exc.located == [
        "devices[1].unit (line 18): Input should be less than or equal to 247 (got 300)"
    ]


def test_a_key_inside_a_flow_mapping_has_the_line_of_that_mapping() -> None:
    exc = error_of(edited({17: "    link: {driver: simulated, parity: X}"}))
    assert len(exc.located) == 1
    assert exc.located[0].startswith("devices[1].link.parity (line 17): Input should be 'N'")


def test_an_unknown_key_names_its_own_line() -> None:
    exc = error_of(edited({10: "      level: {table: holding, adress: 1, access: rw}"}))
    assert exc.located == [
        "profiles.p.points.level.adress (line 10): unknown key (check its spelling)"
    ]


def test_a_missing_key_takes_the_line_of_the_mapping_it_belongs_in() -> None:
    exc = error_of(edited({2: "  name: station"}))
    assert exc.located == ["edge.id (line 1): required key is missing"]


def test_a_missing_section_has_no_line() -> None:
    text = edited({1: "", 2: ""})
    exc = error_of(text)
    assert exc.errors == ["edge: required key is missing"]
    assert exc.lines == [None]
    assert exc.located == exc.errors


def test_a_cross_reference_error_names_its_line() -> None:
    exc = error_of(edited({13: "    profile: q"}))
    assert exc.located == ["devices[0].profile (line 13): unknown profile 'q' (known: p)"]


def test_a_unit_clash_names_the_second_device_line() -> None:
    text = """\
edge: {id: edge-001}
gateway: {url: "ws://127.0.0.1:9"}
links:
  plc: {driver: modbus-tcp, host: 10.0.0.5, port: 502}
profiles:
  p: {}
devices:
  - {id: d1, profile: p, link: plc, unit: 1}
  - id: d2
    profile: p
    link: plc
    unit: 1
"""
    exc = error_of(text)
    assert exc.located == ["devices[1].unit (line 12): unit 1 is already used on this link by 'd1'"]


def test_an_unset_variable_names_its_line() -> None:
    text = edited({4: "  url: ${NO_SUCH_URL}"})
    exc = error_of(text)
    assert exc.errors[0].startswith("gateway.url: environment variable NO_SUCH_URL is not set")
    assert exc.located[0].startswith("gateway.url (line 4): environment variable NO_SUCH_URL")


def test_several_errors_keep_their_order_and_each_has_its_line() -> None:
    text = edited(
        {
            4: "  url: http://gw:9",
            10: "      level: {table: holding, address: 1, access: rw, bit: 16}",
            18: "    unit: 300",
        }
    )
    exc = error_of(text)
    assert exc.lines == [4, 10, 18]
    assert [e.split(" (line ")[0] for e in exc.located] == [
        "gateway.url",
        "profiles.p.points.level.bit",
        "devices[1].unit",
    ]
    assert [e.split(": ")[0] for e in exc.errors] == [
        "gateway.url",
        "profiles.p.points.level.bit",
        "devices[1].unit",
    ]


def test_driver_check_errors_are_located_too() -> None:
    def check_link(driver: str, link: LinkConfig) -> list[str]:
        return [f".{key}: unknown key for driver {driver!r}" for key in link.extra_keys]

    text = edited({17: "    link: {driver: simulated, colour: red}"})
    exc = error_of(text, check_link=check_link)
    assert exc.located == ["devices[1].link.colour (line 17): unknown key for driver 'simulated'"]


def test_driver_profile_check_errors_are_located_too() -> None:
    def check_profile(driver: str, profile: ProfileConfig) -> list[str]:
        return [f".points.{name}: not served by {driver!r}" for name in profile.points]

    exc = error_of(GOOD, check_profile=check_profile)
    assert exc.located == [
        "profiles.p.points.level (line 10): not served by 'simulated' "
        "(for driver 'simulated', used by devices[0])"
    ]


def test_the_exception_text_is_the_located_lines() -> None:
    exc = error_of(edited({18: "    unit: 300"}))
    assert "devices[1].unit (line 18): " in str(exc)


def test_load_config_locates_errors_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "station.yaml"
    path.write_text(edited({18: "    unit: -1"}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.lines == [18]
    assert info.value.located[0].startswith("devices[1].unit (line 18): ")


def test_a_tree_not_from_text_has_no_lines() -> None:
    with pytest.raises(ConfigError) as info:
        validate_tree({"edge": {"id": "e"}, "gateway": {"url": "http://x"}})
    assert info.value.lines == [None]
    assert info.value.located == info.value.errors


def test_yaml_syntax_errors_keep_their_own_position() -> None:
    exc = error_of("edge:\n  id: [e\n", source="x.yaml")
    assert len(exc.errors) == 1
    assert exc.errors[0].startswith("x.yaml: line 3, column 1: not valid YAML")
    assert exc.located == exc.errors


def test_a_duplicate_key_keeps_its_own_position() -> None:
    exc = error_of("edge:\n  id: a\n  id: b\n", source="x.yaml")
    assert exc.errors[0].startswith("x.yaml: line 3, column 3: not valid YAML: duplicate key 'id'")


def test_parse_yaml_records_every_key_and_item() -> None:
    tree, lines = parse_yaml("a:\n  b: 1\n  c:\n    - x\n    -\n      d: 2\n7: seven\n")
    assert tree == {"a": {"b": 1, "c": ["x", {"d": 2}]}, 7: "seven"}
    assert lines == {"a": 1, "a.b": 2, "a.c": 3, "a.c[0]": 4, "a.c[1]": 6, "a.c[1].d": 6, "7": 7}


def test_parse_yaml_of_an_empty_document() -> None:
    assert parse_yaml("") == (None, {})
    assert parse_yaml("# nothing\n") == (None, {})


def test_merge_keys_and_aliases_get_lines() -> None:
    text = "base: &b\n  x: 1\n  y: 2\nuse:\n  <<: *b\n  y: 3\ncopy: *b\n"
    tree, lines = parse_yaml(text)
    assert tree["use"] == {"x": 1, "y": 3}
    assert lines["use.x"] == 2  # merged from the anchor
    assert lines["use.y"] == 6  # its own key wins, as its value does
    assert lines["copy.x"] == 2


def test_an_aliased_item_has_the_line_of_its_anchor() -> None:
    tree, lines = parse_yaml("a: &a [1, 2]\nb:\n  - *a\n")
    assert tree == {"a": [1, 2], "b": [[1, 2]]}
    # an alias is its anchor's node: what it holds is found where the anchor is written
    assert lines == {"a": 1, "a[0]": 1, "a[1]": 1, "b": 2, "b[0]": 1, "b[0][0]": 1, "b[0][1]": 1}


def test_a_recursive_alias_is_a_yaml_error_not_a_crash() -> None:
    exc = error_of("edge: &a\n  - 1\n  - *a\n", source="x.yaml")
    assert len(exc.errors) == 1
    # the position is the anchor's (after &a): PyYAML keeps no mark of where an alias is
    assert exc.errors[0] == (
        "x.yaml: line 1, column 7: not valid YAML: edge[1] is an alias of the anchor here, "
        "which contains it (a recursive alias)"
    )


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("devices[1].link.parity", 17),
        ("devices[1].link", 17),
        ("devices[1].nothing.deeper", 15),
        ("devices[9].unit", 11),
        ("gateway.tls.ca_file", 3),
        ("metrics.listen", None),
        ("<root>", None),
        ("", None),
    ],
)
def test_line_of_falls_back_to_the_nearest_enclosing_path(path: str, line: int | None) -> None:
    _, lines = parse_yaml(GOOD)
    assert line_of(path, lines) == line
