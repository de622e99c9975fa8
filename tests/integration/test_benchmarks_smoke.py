"""Each benchmark runs with ``--smoke`` and prints its table (nothing timed is asserted)."""

from __future__ import annotations

import pytest

from tests.integration.support import run_benchmark_smoke

LATENCY_COLUMNS = ["metric", "edge-proxy", "floor", "edge/floor", "wall p50", "wall p99"]
CASES = [
    ("command_latency.py", [], [*LATENCY_COLUMNS, "CPU per command", "SIMPLE write"]),
    ("command_latency.py", ["--profile"], [*LATENCY_COLUMNS, "top 25 by tottime"]),
    ("batch.py", [], ["edge-proxy", "bare pymodbus", "edge/bare pymodbus", "wall (median)"]),
    ("batch.py", ["--profile", "--profile-clock", "cpu"], ["bare pymodbus", "(cpu clock)"]),
    (
        "throughput.py",
        [],
        ["in flight", "edge cmd/s", "edge p99 ms", "edge CPU %", "floor cmd/s", "p99 <= 20 ms"],
    ),
]


@pytest.mark.timeout(200)
@pytest.mark.parametrize(("script", "extra", "columns"), CASES)
def test_benchmark_runs_and_prints_its_table(
    script: str, extra: list[str], columns: list[str]
) -> None:
    run_benchmark_smoke(script, *extra, columns=columns)
