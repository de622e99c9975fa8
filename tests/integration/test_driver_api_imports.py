"""What importing the driver API costs, each measured in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys


def run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``python -c`` in a new interpreter, its output captured."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_the_contract_suite_does_not_import_pytest() -> None:
    code = (
        "import sys, edge_proxy.testing\n"
        "from edge_proxy.testing import ContractSetup, DriverContract\n"
        "assert 'pytest' not in sys.modules, 'edge_proxy.testing imported pytest'\n"
    )
    proc = run_fresh(code)
    assert proc.returncode == 0, proc.stderr


def test_importing_the_driver_api_imports_no_driver() -> None:
    code = (
        "import sys, edge_proxy.drivers, edge_proxy.cli.simulate\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('edge_proxy_drivers', 'pymodbus', 'serial', 'serial_asyncio')]\n"
        "assert not bad, bad\n"
    )
    proc = run_fresh(code)
    assert proc.returncode == 0, proc.stderr
