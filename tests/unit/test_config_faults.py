"""Bad configs get a clear error naming the path; secrets never reach a log line.

Config faults that ``edge-proxy check`` used to let through to a traceback at ``run`` (or to a
busy loop, or to a device that never answers): TLS files that are missing or unreadable, a zero
reconnect backoff, templates naming undeclared parameters wherever templates appear, line
terminators that can never be matched. The broken files of ``tests/configs/broken/`` carry one
of each through ``check`` and ``run`` too.

Secrets: the gateway token (and any other secret of the config) is redacted from every log
record, its message, its arguments, its exception text and stack, in the text and the JSON
format, for every handler on the root logger.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import SecretStr

from edge_proxy.config import Config, ConfigError, validate_tree
from edge_proxy.config.schema import BUILTIN_DRIVERS, build_schema
from edge_proxy.drivers import registry
from edge_proxy.ops import logsetup
from edge_proxy.ops.logsetup import setup_logging
from tests.configs import has_error

SECRET = "tok-5ec7-never-logged"


def tree_of(**sections: Any) -> dict[str, Any]:
    """A small valid tree with a point profile and a line profile; sections replace whole ones."""
    tree: dict[str, Any] = {
        "edge": {"id": "edge-001"},
        "gateway": {"url": "ws://127.0.0.1:9"},
        "links": {"sim": {"driver": "simulated"}},
        "profiles": {
            "p": {
                "points": {
                    "level": {"table": "holding", "address": 1, "access": "rw"},
                    "label": {"address": 2, "type": "string", "length": 4, "access": "rw"},
                },
                "commands": {
                    "SET": {"params": {"level": {"type": "int"}}, "write": {"level": "{level}"}},
                },
            },
            "a": {
                "line": {"terminator": "\r\n", "encoding": "ascii"},
                "commands": {
                    "BRT": {
                        "params": {"level": {"type": "int"}},
                        "request": "BRT {level:03d}",
                        "expect": "^OK$",
                    }
                },
            },
        },
        "devices": [
            {"id": "d1", "profile": "p", "link": "sim"},
            {"id": "d2", "profile": "a", "link": {"driver": "simulated"}},
        ],
    }
    tree.update(copy.deepcopy(sections))
    return tree


def errors_of(tree: dict[str, Any]) -> list[str]:
    """The error lines of validating ``tree`` with the real drivers' checks ([] when valid)."""
    try:
        validate_tree(tree, registry.check_link, registry.check_profile)
    except ConfigError as exc:
        return exc.errors
    return []


def with_gateway(**keys: Any) -> dict[str, Any]:
    tree = tree_of()
    tree["gateway"].update(keys)
    return tree


def test_the_base_tree_is_valid() -> None:
    assert errors_of(tree_of()) == []


# ---------------------------------------------------------------------------- TLS files


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_a_missing_tls_file_is_named(key: str, tmp_path: Path) -> None:
    present = tmp_path / "present.pem"
    present.write_text("-----BEGIN CERTIFICATE-----\n")
    tls = {"cert_file": str(present)} if key == "key_file" else {}
    tls[key] = str(tmp_path / "absent.pem")
    errors = errors_of(with_gateway(url="wss://127.0.0.1:9", tls=tls))
    assert errors == [f"gateway.tls.{key}: {tmp_path / 'absent.pem'} does not exist"]


def test_a_tls_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    errors = errors_of(with_gateway(url="wss://127.0.0.1:9", tls={"ca_file": str(tmp_path)}))
    assert has_error(errors, "gateway.tls.ca_file", "is a directory")


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root reads any file whatever its mode"
)
def test_an_unreadable_tls_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "edge.key"
    key.write_text("secret key")
    key.chmod(0)
    cert = tmp_path / "edge.pem"
    cert.write_text("cert")
    tls = {"cert_file": str(cert), "key_file": str(key)}
    errors = errors_of(with_gateway(url="wss://127.0.0.1:9", tls=tls))
    assert has_error(errors, "gateway.tls.key_file", "cannot be read")


def test_a_relative_tls_path_names_the_directory_it_was_looked_for_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    errors = errors_of(with_gateway(url="wss://127.0.0.1:9", tls={"ca_file": "ca.pem"}))
    assert errors == [f"gateway.tls.ca_file: ca.pem (relative to {tmp_path}) does not exist"]


def test_readable_tls_files_pass(tmp_path: Path) -> None:
    for name in ("ca.pem", "edge.pem", "edge.key"):
        (tmp_path / name).write_text("x")
    tls = {
        "ca_file": str(tmp_path / "ca.pem"),
        "cert_file": str(tmp_path / "edge.pem"),
        "key_file": str(tmp_path / "edge.key"),
    }
    assert errors_of(with_gateway(url="wss://127.0.0.1:9", tls=tls)) == []


# ---------------------------------------------------------------------------- backoff


@pytest.mark.parametrize("initial", [0, 0.0, "0", "0s", "0ms", "0.0s"])
def test_a_zero_gateway_backoff_is_refused(initial: object) -> None:
    errors = errors_of(with_gateway(reconnect={"initial": initial, "max": "30s"}))
    assert has_error(errors, "gateway.reconnect.initial", "greater than 0")


@pytest.mark.parametrize("initial", [0, "0s"])
def test_a_zero_link_backoff_is_refused_on_named_and_inline_links(initial: object) -> None:
    tree = tree_of()
    tree["links"]["sim"]["reconnect"] = {"initial": initial}
    tree["devices"][1]["link"]["reconnect"] = {"initial": initial}
    errors = errors_of(tree)
    assert has_error(errors, "links.sim.reconnect.initial", "greater than 0")
    assert has_error(errors, "devices[1].link.reconnect.initial", "greater than 0")


@pytest.mark.parametrize(
    ("initial", "valid"), [(0, False), ("0s", False), ("10ms", True), (1, True)]
)
def test_the_schema_refuses_a_zero_backoff_too(initial: object, valid: bool) -> None:
    validator = jsonschema.Draft202012Validator(build_schema(BUILTIN_DRIVERS))
    tree = tree_of()
    tree["gateway"]["reconnect"] = {"initial": initial}
    assert validator.is_valid(tree) is valid


# ---------------------------------------------------------------------------- templates


def with_commands(profile: str, **commands: Any) -> dict[str, Any]:
    tree = tree_of()
    tree["profiles"][profile]["commands"] = commands
    return tree


UNDECLARED = "refers to parameter {nope} that params does not declare"


@pytest.mark.parametrize(
    ("profile", "commands", "path"),
    [
        ("p", {"X": {"write": {"level": "{nope}"}}}, "profiles.p.commands.X.write.level"),
        (
            "p",
            {"X": {"params": {"level": {}}, "write": {"label": "L{level}-{nope}"}}},
            "profiles.p.commands.X.write.label",
        ),
        (
            "p",
            {"X": {"steps": [{"delay": "1ms"}, {"write": {"level": "{nope}"}}]}},
            "profiles.p.commands.X.steps[1].write.level",
        ),
        ("a", {"X": {"request": "GO {nope}"}}, "profiles.a.commands.X.request"),
        # a field nested in a format spec is a field too
        (
            "a",
            {"X": {"params": {"v": {}}, "request": "GO {v:{nope}}"}},
            "profiles.a.commands.X.request",
        ),
        ("a", {"X": {"request": "GO {nope!r}"}}, "profiles.a.commands.X.request"),
    ],
)
def test_a_template_naming_an_undeclared_parameter_is_refused_wherever_it_is(
    profile: str, commands: dict[str, Any], path: str
) -> None:
    errors = errors_of(with_commands(profile, **commands))
    assert errors == [f"{path}: {UNDECLARED}"]


def test_a_step_running_a_command_needs_that_commands_parameters() -> None:
    tree = with_commands(
        "p",
        SET={"params": {"level": {"type": "int"}}, "write": {"level": "{level}"}},
        GOOD={"params": {"level": {"type": "int"}}, "steps": [{"command": "SET"}]},
        BAD={"steps": [{"delay": "1ms"}, {"command": "SET"}]},
    )
    assert errors_of(tree) == [
        "profiles.p.commands.BAD.steps[1].command: SET needs parameter {level}, "
        "which BAD's params do not declare"
    ]


@pytest.mark.parametrize("template", ["{level", "{level}}", "x}{level}", "{level:{w}"])
def test_a_malformed_write_template_is_refused(template: str) -> None:
    tree = with_commands("p", X={"params": {"level": {}}, "write": {"label": template}})
    assert has_error(errors_of(tree), "profiles.p.commands.X.write.label", "not a valid template")


def test_a_written_string_without_braces_is_a_literal() -> None:
    tree = with_commands("p", X={"write": {"label": "a}b"}})
    # a lone "}" without "{" is written as it is, as the planner does
    assert errors_of(tree) == []


def test_a_request_whose_text_holds_the_terminator_is_refused() -> None:
    tree = with_commands("a", X={"request": "A\r\nB"})
    assert has_error(errors_of(tree), "profiles.a.commands.X.request", "two lines")


# ---------------------------------------------------------------------------- terminators


def with_line(**line: Any) -> dict[str, Any]:
    tree = tree_of()
    tree["profiles"]["a"]["line"] = line
    return tree


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({"terminator": ""}, "the terminator is empty"),
        ({"terminator": "\u00b6", "encoding": "ascii"}, "cannot be encoded in ascii"),
        ({"terminator": "\u2028", "encoding": "latin-1"}, "cannot be encoded in latin-1"),
        ({"terminator": "\n", "encoding": "utf-16"}, "byte-order mark"),
        ({"terminator": "\n", "encoding": "utf-32"}, "byte-order mark"),
    ],
)
def test_a_terminator_that_can_never_be_matched_is_refused(
    line: dict[str, Any], message: str
) -> None:
    assert has_error(errors_of(with_line(**line)), "profiles.a.line.terminator", message)


@pytest.mark.parametrize(
    "line",
    [
        {"terminator": "\n", "encoding": "utf-16-le"},
        {"terminator": "\u00b6", "encoding": "utf-8"},
        {"terminator": "\u00b6", "encoding": "latin-1"},
        {"terminator": "\x03", "encoding": "ascii"},
    ],
)
def test_a_terminator_the_encoding_can_write_passes(line: dict[str, Any]) -> None:
    assert errors_of(with_line(**line)) == []


# ---------------------------------------------------------------------------- secrets


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger and the record factory back as they were."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    factory = logging.getLogRecordFactory()
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


def _boom() -> None:
    raise ConnectionError(f"handshake refused for Bearer {SECRET}")


def _log_everything(logger: logging.Logger) -> None:
    """Log the secret through every door a record has."""
    logger.debug("debug with the token %s", SECRET)
    logger.info("info with the token in a dict arg: %(tok)s", {"tok": SECRET})
    logger.warning("warning with the token %r", {"token": SECRET})
    try:
        _boom()
    except ConnectionError:
        logger.exception("gateway failed")
    try:
        try:
            _boom()
        except ConnectionError as inner:
            raise RuntimeError("while connecting") from inner
    except RuntimeError:
        logger.error("chained", exc_info=True)
    logger.info("a stack for %s", "the record", stack_info=True)
    try:
        _boom()
    except ConnectionError as exc:
        logger.error("an exception as exc_info", exc_info=exc)


def _secret_stack_frame(logger: logging.Logger) -> None:
    # the token is in the source line shown by the stack: "... tok-5ec7-never-logged ..."
    logger.info("stack", stack_info=True)  # tok-5ec7-never-logged


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_logged_exception_never_shows_the_token(fmt: str, restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("debug", fmt, [SECRET], stream=stream)
    logger = logging.getLogger("edge_proxy.test_faults")
    _log_everything(logger)
    _secret_stack_frame(logger)
    out = stream.getvalue()
    assert "handshake refused for Bearer ***" in out
    assert "Traceback" in out and "RuntimeError: while connecting" in out
    assert "_secret_stack_frame" in out
    assert SECRET not in out
    if fmt == "json":
        docs = [json.loads(line) for line in out.splitlines()]
        assert len(docs) == 8
        assert sum("exc" in d for d in docs) == 3
        assert sum("stack" in d for d in docs) == 2


def test_every_handler_on_the_root_logger_gets_redacted_records(restore_logging: None) -> None:
    """Not only edge-proxy's own handler: one added before it and one added after it."""
    before, after = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    early = logging.StreamHandler(before)
    early.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(early)
    setup_logging("debug", "text", [SECRET], stream=io.StringIO())
    late = logging.StreamHandler(after)
    late.setFormatter(logging.Formatter("%(levelname)s %(message)s %(args)s"))
    root.addHandler(late)
    _log_everything(logging.getLogger("some.library"))
    for out in (before.getvalue(), after.getvalue()):
        assert "Bearer ***" in out and "Traceback" in out
        assert SECRET not in out


def test_a_record_the_filter_sees_first_is_redacted_for_the_handlers_after_it(
    restore_logging: None,
) -> None:
    """The RedactFilter alone (no record factory) also cleans exc_text and stack_info."""
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "msg %s", (SECRET,), None)
    try:
        _boom()
    except ConnectionError:
        record.exc_info = sys.exc_info()
    record.stack_info = f"Stack (most recent call last):\n  token = {SECRET!r}"
    assert logsetup.RedactFilter([SECRET]).filter(record) is True
    text = logging.Formatter().format(record)
    assert "msg ***" in text and "Bearer ***" in text and "token = '***'" in text
    assert SECRET not in text


def test_a_token_with_quotes_is_redacted_in_its_escaped_forms_too(restore_logging: None) -> None:
    secret = 'to"k\\en'
    stream = io.StringIO()
    setup_logging("info", "json", [secret], stream=stream)
    logging.getLogger("edge_proxy.x").info("repr %r and plain %s", secret, secret)
    doc = json.loads(stream.getvalue())
    assert doc["msg"] == "repr '***' and plain ***"
    assert secret not in stream.getvalue()
    assert json.dumps(secret)[1:-1] not in stream.getvalue()


def test_every_secret_of_the_config_is_found() -> None:
    tree = tree_of()
    tree["gateway"]["token"] = SECRET
    config: Config = validate_tree(tree)
    assert config.secrets() == [SECRET]
    assert validate_tree(tree_of()).secrets() == []


def test_secrets_can_be_added_later_for_a_reloaded_token(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("info", "text", [SECRET], stream=stream)
    logsetup.add_secrets([SecretStr("tok-new").get_secret_value()])
    logging.getLogger("edge_proxy.x").info("old %s new %s", SECRET, "tok-new")
    assert "old *** new ***" in stream.getvalue()
