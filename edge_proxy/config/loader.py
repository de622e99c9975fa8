"""Loading: YAML -> validated, frozen config objects, with errors that name path and line.

Loading runs in three passes so that one run reports every problem at once:

1. YAML is parsed and ``${VAR}`` / ``${VAR:-default}`` are replaced from the environment;
2. the tree is validated against the pydantic models (shape, types, ranges);
3. cross-references are checked (unique ids, known profiles/links/drivers/points, unit clashes).

Every error is a single line ``path: problem (got value)`` so an operator can fix a device map
without reading code. When the tree came from YAML text, :attr:`ConfigError.located` also gives
the line where the path is found: ``devices[2].link.parity (line 41): ...``. The strict loader
records the line of every mapping key and sequence item by its path; a path that is not in the
file (a required key that is missing) takes the line of the nearest enclosing one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edge_proxy.config.checks import (
    DriverChecker,
    ProfileChecker,
    check_files,
    cross_check,
    raw_references,
)
from edge_proxy.config.links import UNION_TAGS
from edge_proxy.config.model import Config
from edge_proxy.config.values import interpolate_env, join_path
from edge_proxy.errors import EdgeProxyError

#: Most paths whose line is recorded (a guard against alias bombs; later paths get no line).
MAX_LINES = 100_000


class ConfigError(EdgeProxyError):
    """A configuration that cannot be used; ``errors`` holds one line per problem.

    ``errors`` are ``path: problem`` lines (stable text, for programs and tests); ``lines`` the
    YAML line of each one's path, or None where it is not known (the tree did not come from
    text, or the problem has no path); ``located`` the lines an operator reads, with both.
    """

    def __init__(self, errors: Sequence[str], lines: Sequence[int | None] = ()) -> None:
        self.errors = list(errors)
        self.lines: list[int | None] = [*lines[: len(self.errors)]]
        self.lines += [None] * (len(self.errors) - len(self.lines))
        super().__init__("; ".join(self.located))

    @property
    def located(self) -> list[str]:
        """Each error with its YAML line after its path: ``devices[2].unit (line 41): ...``."""
        lines = self.lines + [None] * (len(self.errors) - len(self.lines))
        return [_with_line(error, line) for error, line in zip(self.errors, lines, strict=False)]


def _with_line(error: str, line: int | None) -> str:
    if line is None:
        return error
    path, sep, problem = error.partition(": ")
    return f"{path} (line {line}): {problem}" if sep else f"{error} (line {line})"


def _error_path(error: str) -> str:
    # "path: problem", or "path (for driver ...): problem" from a driver's profile check
    return error.partition(": ")[0].partition(" (")[0]


def line_of(path: str, lines: Mapping[str, int]) -> int | None:
    """The line of ``path`` in ``lines``, else of its nearest enclosing path that has one."""
    while path:
        if path in lines:
            return lines[path]
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            return None
        path = path[:cut]
    return None


def _located(errors: Sequence[str], lines: Mapping[str, int]) -> ConfigError:
    return ConfigError(errors, [line_of(_error_path(e), lines) for e in errors])


def _loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in UNION_TAGS or "[" in str(part):
            continue
        else:
            out = join_path(out, part)
    return out or "<root>"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_validation(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = _loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            out.append(f"{loc}: unknown key (check its spelling)")
        elif err["type"] == "missing":
            out.append(f"{loc}: required key is missing")
        else:
            out.append(f"{loc}: {msg} (got {_short(err.get('input'))})")
    return out


def validate_tree(
    tree: object,
    check_link: DriverChecker | None = None,
    check_profile: ProfileChecker | None = None,
) -> Config:
    """Validate an already-interpolated tree; raise ConfigError listing every problem."""
    if not isinstance(tree, dict):
        raise ConfigError([f"<root>: expected a mapping of sections (got {_short(tree)})"])
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        # the full cross-check needs a valid config; the name references can be checked anyway
        raise ConfigError(_format_validation(exc) + raw_references(tree)) from None
    errors = cross_check(config, check_link, check_profile) + check_files(config)
    if errors:
        raise ConfigError(errors)
    return config


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    check_link: DriverChecker | None = None,
    check_profile: ProfileChecker | None = None,
) -> Config:
    """Read, interpolate and validate a YAML config file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.start + 1]
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start}: {bad!r})"]) from None
    return load_config_text(text, env, check_link, source=str(path), check_profile=check_profile)


def load_config_text(
    text: str,
    env: Mapping[str, str] | None = None,
    check_link: DriverChecker | None = None,
    source: str = "<config>",
    check_profile: ProfileChecker | None = None,
) -> Config:
    """Parse and validate YAML text (see load_config)."""
    try:
        tree, lines = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        problem = " ".join(str(problem).split())
        raise ConfigError([f"{source}:{where} not valid YAML: {problem}"]) from None
    errors: list[str] = []
    tree = interpolate_env(tree, os.environ if env is None else env, "", errors)
    if errors:
        raise _located(errors, lines)
    try:
        return validate_tree(tree, check_link, check_profile)
    except ConfigError as exc:
        raise _located(exc.errors, lines) from None


def parse_yaml(text: str) -> tuple[Any, dict[str, int]]:
    """Parse YAML strictly; return the tree and the line (1-based) of every path in it.

    Raise ``yaml.YAMLError`` for text that is not YAML, a duplicate key or a recursive alias.
    """
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        tree = loader.construct_document(node)
        lines: dict[str, int] = {}
        _record_lines(loader, node, "", lines, set())
        return tree, lines
    finally:
        loader.dispose()


def _record_lines(
    loader: yaml.SafeLoader, node: yaml.Node, path: str, out: dict[str, int], active: set[int]
) -> None:
    """Record the line of each key and item under ``node``; the last of a repeated path wins.

    Raise a YAML error for an alias inside its own anchor: the tree would be infinite.
    """
    if id(node) in active:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"{path or '<root>'} is an alias of the anchor here, which contains it "
            "(a recursive alias)",
            node.start_mark,
        )
    if len(out) >= MAX_LINES:
        return  # an alias bomb: the paths after the first MAX_LINES get no line
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        # after construction, merge keys (<<) have been flattened into node.value
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            at = join_path(path, loader.construct_object(key_node))
            out[at] = key_node.start_mark.line + 1
            _record_lines(loader, value_node, at, out, active)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            at = f"{path}[{i}]"
            out[at] = item.start_mark.line + 1
            _record_lines(loader, item, at, out, active)
    active.discard(id(node))


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (the last would win silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    """Build a mapping, refusing a key that it already has."""
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # "<<: *anchor" is flattened below; a key of one's own overrides it
        key = loader.construct_object(key_node)
        if isinstance(key, (str, int, float, bool)):
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (it appears twice in one mapping)",
                    key_node.start_mark,
                )
            seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
