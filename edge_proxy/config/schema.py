"""The config file's JSON Schema and its reference page, both made from the pydantic models.

``edge-proxy schema`` prints the schema, for editors (the YAML language server) to complete
and check device maps while they are typed. ``edge-proxy schema --markdown`` prints
``docs/config.md``; a test keeps the checked-in page equal to it.

A JSON Schema checks the shape of the file. Cross-references (an unknown profile name, a unit
used twice on one bus, a point a command uses but the profile does not declare) need the whole
file and are checked by ``edge-proxy check`` only; :data:`CROSS_CHECKS_ONLY` lists them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edge_proxy.config.model import Config

#: The drivers shipped with edge-proxy, the default ``driver`` enum of the schema.
BUILTIN_DRIVERS = (
    "line-serial",
    "line-tcp",
    "modbus-ascii",
    "modbus-rtu",
    "modbus-rtu-over-tcp",
    "modbus-tcp",
    "simulated",
)

#: What ``edge-proxy check`` verifies beyond the schema (it needs the file as a whole).
CROSS_CHECKS_ONLY = (
    "device ids are unique",
    "a device's profile and named link exist",
    "two enabled devices on one physical bus do not share a Modbus unit",
    "points named by commands, steps and telemetry groups exist and allow the access",
    "a template (a write, a step's write, a request) is well-formed and names declared params; "
    "a step's command finds the parameters it needs among its caller's",
    "min is not above max; a default lies in its own range",
    "a bool in a register table has a bit; a string has a length; a point ends by 65535",
    "a request command's profile has a line: section; expect is a valid regular expression",
    "a driver's own link keys (checked by the driver itself)",
    "${VAR} without a default names a set environment variable",
    "a line terminator can be written in the line's encoding; a request's own text lacks it",
    "the gateway.tls files exist and can be read",
    "a telemetry group's command exists, writes nothing (nor do its steps) and needs no "
    'parameter; group names are unique in a profile; "*" finds a readable point',
    'a poll interval is at least 10ms also when written with a unit ("5ms")',
    "a point's simulate rule fits the point: a bool takes toggle, a string none; the values "
    "of ramp, sine and noise lie within the point's min..max",
)

#: Examples for keys whose default does not show a typical value, by dotted path.
EXAMPLES: dict[str, Any] = {
    "edge.id": "edge-001",
    "edge.name": "Station 12 north hall",
    "gateway.url": "wss://gateway.example.net:18081",
    "gateway.token": "${EDGE_TOKEN}",
    "gateway.tls.ca_file": "/etc/edge-proxy/ca.pem",
    "gateway.tls.cert_file": "/etc/edge-proxy/edge.pem",
    "gateway.tls.key_file": "/etc/edge-proxy/edge.key",
    "gateway.outbox.spool": "/var/lib/edge-proxy/spool.sqlite3",
    "links.<name>.driver": "modbus-rtu",
    "links.<name>.host": "192.168.10.5",
    "links.<name>.port": "/dev/ttyUSB0 or 502",
    "links.<name>.connect_timeout": "3s",
    "profiles.<name>.points.<name>.address": 100,
    "profiles.<name>.points.<name>.type": "uint16",
    "profiles.<name>.points.<name>.length": 8,
    "profiles.<name>.points.<name>.bit": 3,
    "profiles.<name>.points.<name>.scale": 0.1,
    "profiles.<name>.points.<name>.offset": -40,
    "profiles.<name>.points.<name>.min": 0,
    "profiles.<name>.points.<name>.max": 100,
    "profiles.<name>.points.<name>.unit": "degC",
    "profiles.<name>.commands.<name>.params": {"brightness": {"type": "int", "max": 100}},
    "profiles.<name>.commands.<name>.write": {"brightness": "{brightness}"},
    "profiles.<name>.commands.<name>.read": ["door_state", "brightness"],
    "profiles.<name>.commands.<name>.steps": [{"write": {"mode": 2}}, {"delay": "500ms"}],
    "profiles.<name>.commands.<name>.request": "BRT {brightness:03d}",
    "profiles.<name>.commands.<name>.expect": "^OK$",
    "profiles.<name>.commands.<name>.timeout": "2s",
    "profiles.<name>.points.<name>.deadband": 0.2,
    "profiles.<name>.points.<name>.simulate.ramp.min": 0,
    "profiles.<name>.points.<name>.simulate.ramp.max": 100,
    "profiles.<name>.points.<name>.simulate.ramp.period": "60s",
    "profiles.<name>.points.<name>.simulate.sine.min": 18,
    "profiles.<name>.points.<name>.simulate.sine.max": 24,
    "profiles.<name>.points.<name>.simulate.sine.period": "10m",
    "profiles.<name>.points.<name>.simulate.noise.around": 20,
    "profiles.<name>.points.<name>.simulate.noise.amplitude": 0.5,
    "profiles.<name>.points.<name>.simulate.noise.every": "1s",
    "profiles.<name>.points.<name>.simulate.toggle.period": "5s",
    "profiles.<name>.points.<name>.simulate.count.step": 3,
    "profiles.<name>.points.<name>.simulate.count.every": "1s",
    "profiles.<name>.telemetry[].name": "fast",
    "profiles.<name>.telemetry[].interval": "1s",
    "profiles.<name>.telemetry[].points": ["door_state", "temperature"],
    "profiles.<name>.telemetry[].command": "STATUS",
    "profiles.<name>.telemetry[].heartbeat": "10m",
    "profiles.<name>.telemetry[].min_interval": "10s",
    "devices[].id": "pillar-001",
    "devices[].type": "pillar",
    "devices[].profile": "pillar-modbus",
    "devices[].link": "rs485-a",
    "devices[].unit": 1,
    "metrics.listen": "127.0.0.1:9108",
    "control.socket": "/run/edge-proxy/control.sock",
}


def build_schema(drivers: Sequence[str] = BUILTIN_DRIVERS) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the config file, for the given driver names."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edge-proxy configuration"
    link = schema["$defs"]["LinkConfig"]
    link["properties"]["driver"] = {
        "enum": sorted(drivers),
        "description": "The driver that talks on this link (an installed driver's name).",
        "title": "Driver",
    }
    return schema


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _object_of(schema: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """The object schema a property leads to, and the path suffix (for maps and lists)."""
    node = _resolve(schema, node)
    for alt in node.get("anyOf", []) + node.get("oneOf", []):
        found = _object_of(schema, alt)
        if found is not None:
            return found
    if node.get("type") == "object" and "properties" in node:
        return node, ""
    extra = node.get("additionalProperties")
    if node.get("type") == "object" and isinstance(extra, dict):
        inner = _object_of(schema, extra)
        if inner is not None:
            return inner[0], ".<name>" + inner[1]
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        inner = _object_of(schema, node["items"])
        if inner is not None:
            return inner[0], "[]" + inner[1]
    return None


def _type_text(schema: dict[str, Any], node: dict[str, Any]) -> str:
    node = _resolve(schema, node)
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    alts = node.get("anyOf") or node.get("oneOf")
    if alts:
        texts = [_type_text(schema, a) for a in alts if _resolve(schema, a).get("type") != "null"]
        if "pattern" in json.dumps(alts) and "ms|s|m|h" in json.dumps(alts):
            return "duration"
        if "KiB" in json.dumps(alts):
            return "size"
        return " or ".join(dict.fromkeys(texts))
    kind = node.get("type")
    if kind == "object":
        return "mapping" if "title" not in node or "properties" not in node else node["title"]
    if kind == "array":
        return f"list of {_type_text(schema, node.get('items', {}))}"
    return str(kind or "any")


def _cell(value: Any) -> str:
    plain = isinstance(value, str) and value.isprintable()
    text = value if plain else json.dumps(value)
    return "`" + text.replace("|", "\\|") + "`"


def build_markdown(drivers: Sequence[str] = BUILTIN_DRIVERS) -> str:
    """The config reference page: every key, its type, default, an example and its meaning."""
    schema = build_schema(drivers)
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `edge-proxy schema --markdown`; a test keeps it in sync. -->",
        "",
        "Every key of the YAML file given to `edge-proxy run --config FILE`. Durations are a",
        "number of seconds or a string with a unit (`250ms`, `5s`, `2m`, `1h`); sizes a number",
        "of bytes or `64KiB`, `16MiB`. `${VAR}` and `${VAR:-default}` are replaced from the",
        "environment in every string. Editors can check a file with the JSON Schema that",
        "`edge-proxy schema` prints.",
        "",
    ]
    sections: list[tuple[str, dict[str, Any]]] = [("", schema)]
    seen: set[str] = set()
    while sections:
        path, node = sections.pop(0)
        props = node.get("properties", {})
        required = set(node.get("required", []))
        rows = []
        for key, prop in props.items():
            full = f"{path}.{key}" if path else key
            sub = _object_of(schema, prop)
            resolved = _resolve(schema, prop)
            description = prop.get("description") or resolved.get("description") or ""
            if sub is not None and full + sub[1] not in seen:
                seen.add(full + sub[1])
                sections.append((full + sub[1], sub[0]))
            if sub is not None:
                kind = f"section, see `{full + sub[1]}`"
            else:
                kind = _type_text(schema, prop)
            if sub is not None and isinstance(prop.get("default"), (dict, list)):
                default = ""
            elif "default" in prop:
                default = _cell(prop["default"])
            elif key in required:
                default = "required"
            else:
                default = ""
            example = EXAMPLES.get(full)
            if example is None and sub is None and prop.get("default") not in (None, {}, []):
                example = prop["default"]
            rows.append(
                f"| `{key}` | {kind} | {default} | "
                f"{_cell(example) if example is not None else ''} | "
                f"{description.replace('|', '/')} |"
            )
        if not rows:
            continue
        title = path or "top level"
        lines += [f"## `{title}`", ""]
        doc = node.get("description", "")
        if doc and path:
            lines += [doc, ""]
        if node.get("additionalProperties") is True:
            lines += ["Drivers may accept further keys here (see each driver's documentation).", ""]
        lines += [
            "| key | type | default | example | meaning |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    lines += [
        "## Checked by `edge-proxy check` beyond the schema",
        "",
        *[f"- {item}" for item in CROSS_CHECKS_ONLY],
        "",
    ]
    return "\n".join(lines)
