"""benchmarks/telemetry.py runs with ``--smoke`` and prints its tables (nothing timed asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "telemetry.py"

# the table's columns, its two sides, the command latency rows and the targets table
COLUMNS = [
    *["CPU % of one core", "peak RSS MB", "values/s", "jitter p50 ms", "jitter p99 ms"],
    *["skipped ticks", "values delivered %", "edge-proxy", "bare poller", "with telemetry"],
    *["without telemetry", "targets (edge-proxy)"],
]


@pytest.mark.timeout(200)
def test_telemetry_benchmark_runs_and_prints_its_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--time-limit", "150"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    missing = [c for c in COLUMNS if c not in proc.stdout]
    assert not missing, f"{missing} not in:\n{proc.stdout}"
