"""The JSON Schema accepts the example, rejects broken configs; docs/config.md is current.

``edge-proxy schema`` itself is run in ``tests/integration/test_schema_cli.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from edge_proxy.config.schema import BUILTIN_DRIVERS, build_markdown, build_schema
from tests.configs import BROKEN_CASES, BROKEN_DIR

ROOT = Path(__file__).resolve().parents[2]

# Broken files whose defect only the whole-file checks of `edge-proxy check` see: a JSON Schema
# describes one value at a time. It cannot compare two parts of the file (ids, references,
# units, min with max), read the environment, or compile a regular expression.
WHOLE_FILE_ONLY = {
    "01-not-yaml.yaml",
    "04-duplicate-device-id.yaml",
    "05-unknown-profile.yaml",
    "06-unknown-link-name.yaml",
    "07-command-undeclared-point.yaml",
    "08-command-writes-read-only-point.yaml",
    "10-modbus-unit-clash.yaml",
    "11-point-min-above-max.yaml",
    "18-unset-env-var.yaml",
    "19-template-undeclared-param.yaml",
    "21-bad-expect-regex.yaml",
    "23-simulated-link-unknown-key.yaml",
    "25-command-reads-write-only-point.yaml",
    "29-step-unknown-command.yaml",
    "30-request-without-line.yaml",
    "31-reconnect-initial-above-max.yaml",
    "33-unknown-text-encoding.yaml",
    # files named by the config must exist: the schema cannot look at the disk
    "36-tls-ca-file-missing.yaml",
    "37-tls-cert-file-missing.yaml",
    "38-tls-key-file-missing.yaml",
    # templates against the params they may name
    "41-request-template-undeclared-param.yaml",
    "42-step-template-undeclared-param.yaml",
    "43-step-command-undeclared-param.yaml",
    # the terminator against the encoding: two values at once
    "45-line-terminator-not-encodable.yaml",
    # a template's syntax, like a regular expression's, needs a parser
    "46-write-template-unbalanced-brace.yaml",
    # a telemetry group against the profile's points and commands
    "47-telemetry-unknown-point.yaml",
    "48-telemetry-write-only-point.yaml",
    "49-telemetry-command-writes.yaml",
    "51-telemetry-duplicate-group-name.yaml",
    "56-telemetry-unknown-command.yaml",
    # "5ms" is a duration string: its value needs parsing (a number under 0.01 is caught)
    "50-telemetry-interval-too-short.yaml",
}


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(build_schema(BUILTIN_DRIVERS))


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(build_schema())


def test_example_config_is_valid() -> None:
    errors = list(_validator().iter_errors(_load(ROOT / "config.example.yaml")))
    assert errors == []


@pytest.mark.parametrize(
    ("name", "path_part", "message"), BROKEN_CASES, ids=[c[0] for c in BROKEN_CASES]
)
def test_broken_files_rejected_like_check(name: str, path_part: str, message: str) -> None:
    try:
        tree = _load(BROKEN_DIR / name)
    except yaml.YAMLError:
        assert name in WHOLE_FILE_ONLY
        return
    errors = list(_validator().iter_errors(tree))
    if name in WHOLE_FILE_ONLY:
        assert errors == [], f"{name} is now caught by the schema: move it out of the list"
        return
    assert errors, f"{name}: edge-proxy check rejects it, the schema accepts it"
    # the schema complains about the place `edge-proxy check` names, a parent or a child of it
    check_path = path_part.replace("[", ".").replace("]", "")
    where = [".".join(str(p) for p in e.absolute_path) for e in errors]
    assert any(check_path.startswith(w) or w.startswith(check_path) for w in where), (
        name,
        where,
        check_path,
    )


def test_docs_config_md_is_current() -> None:
    assert (ROOT / "docs" / "config.md").read_text(encoding="utf-8") == build_markdown(), (
        "docs/config.md is out of date: run `edge-proxy schema --markdown > docs/config.md`"
    )


def test_docs_name_every_key() -> None:
    text = build_markdown()
    for key in (
        "heartbeat_interval",
        "offline_after",
        "word_order",
        "continueOnError",
        "dedup_window",
        "spool",
        "terminator",
    ):
        assert f"`{key}`" in text
