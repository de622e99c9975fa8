"""``edge-proxy schema``, run in a subprocess, prints the JSON Schema."""

from __future__ import annotations

import json
import subprocess
import sys


def test_schema_command_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge_proxy", "schema"], capture_output=True, text=True, check=True
    )
    schema = json.loads(out.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "simulated" in schema["$defs"]["LinkConfig"]["properties"]["driver"]["enum"]
