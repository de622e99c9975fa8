"""``benchmarks/soak.py --smoke`` runs and prints its table with no terminal lost or duplicated.

Only the delivery guarantees are asserted (they hold on any machine); nothing timed is.
"""

from __future__ import annotations

import re

import pytest

from tests.integration.support import run_benchmark_smoke


def row(output: str, metric: str) -> int:
    """The value column of a row of the soak table."""
    match = re.search(rf"^\s*{re.escape(metric)}\s+(\d+)\s", output, re.MULTILINE)
    assert match, f"no row {metric!r} in:\n{output}"
    return int(match.group(1))


@pytest.mark.timeout(240)
def test_soak_smoke_runs_and_loses_or_duplicates_nothing() -> None:
    title = "Soak: delivery under link faults"
    proc = run_benchmark_smoke("soak.py", columns=[title], timeout=220, check_exit=False)
    out = proc.stdout
    assert row(out, "terminals lost (acked, no terminal)") == 0, out
    assert row(out, "duplicated terminals (2 messageIds)") == 0, out
    assert row(out, "commands sent (distinct requestRefs)") > 0, out
    assert row(out, "connection drops (proxy)") == 1, out
    assert row(out, "black holes (proxy)") == 1, out
