"""benchmarks/telemetry.py runs with ``--smoke`` and prints its tables (nothing timed asserted)."""

from __future__ import annotations

import pytest

from tests.integration.support import run_benchmark_smoke

# the table's columns, its two sides, the command latency rows and the targets table
COLUMNS = [
    *["CPU % of one core", "peak RSS MB", "values/s", "jitter p50 ms", "jitter p99 ms"],
    *["skipped ticks", "values delivered %", "edge-proxy", "bare poller", "with telemetry"],
    *["without telemetry", "targets (edge-proxy)"],
]


@pytest.mark.timeout(200)
def test_telemetry_benchmark_runs_and_prints_its_table() -> None:
    run_benchmark_smoke("telemetry.py", columns=COLUMNS)
