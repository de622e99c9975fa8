"""Fixtures of the fault-injection tests: a plain-frame Gateway, proxies, edge processes.

Every test here also runs under :func:`~tests.integration.leaks.no_leaks` (autouse).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.faults.edge import EdgeProcess
from tests.integration.faults.parts import FaultProxy
from tests.integration.support import Gateway

__all__ = ["EdgeFactory", "ProxyFactory"]

ProxyFactory = Callable[..., Awaitable[FaultProxy]]
EdgeFactory = Callable[..., Awaitable[EdgeProcess]]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``faults`` marker."""
    config.addinivalue_line("markers", "faults: fault-injection tests (tests/integration/faults)")


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    """A running test Gateway that refuses permessage-deflate, so a proxy tap can read frames."""
    gateway = Gateway()
    await gateway.start(compression=None)
    yield gateway
    await gateway.stop()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (a Unix socket path must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ep-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def proxies() -> AsyncIterator[ProxyFactory]:
    """Start fault proxies in front of a Gateway; all stopped at teardown."""
    started: list[FaultProxy] = []

    async def start(
        gateway: Gateway, *, tap: bool = False, rcvbuf: int | None = None
    ) -> FaultProxy:
        proxy = FaultProxy(("127.0.0.1", gateway.port), tap=tap, rcvbuf=rcvbuf)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


@pytest.fixture
async def edges(tmp_path: Path) -> AsyncIterator[EdgeFactory]:
    """Start edge processes (logging to tmp_path/edge.log); all stopped at teardown."""
    started: list[EdgeProcess] = []
    log_path = tmp_path / "edge.log"

    async def start(config: Path) -> EdgeProcess:
        edge = EdgeProcess(config, log_path)
        started.append(edge)
        return await edge.start()

    yield start
    for edge in started:
        await edge.stop()
    if log_path.exists():  # shown by pytest when the test failed
        print(log_path.read_text(encoding="utf-8", errors="replace")[-20000:])
