"""Integration fixtures: a running test Gateway, running edges, and a leaked-task check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from edge_proxy.config import Config
from edge_proxy.ops.daemon import Daemon
from tests.builders import base_tree, make_config
from tests.integration.support import Gateway


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    """A running test Gateway."""
    gw = Gateway()
    await gw.start()
    yield gw
    await gw.stop()


@pytest.fixture
async def edge_factory() -> AsyncIterator[Callable[[Config], Awaitable[Daemon]]]:
    """Start daemons on configs; stops them all at teardown."""
    started: list[Daemon] = []

    async def start(config: Config) -> Daemon:
        daemon = Daemon(config)
        await daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if not daemon.stopped.is_set():
            await daemon.stop(grace=1.0)


@pytest.fixture
async def edge(gateway: Gateway) -> AsyncIterator[Daemon]:
    """A daemon on base_tree() connected to the test Gateway, REGISTER received."""
    daemon = Daemon(make_config(base_tree(gateway.url)))
    await daemon.start()
    await gateway.wait(lambda f: f["type"] == "REGISTER")
    yield daemon
    await daemon.stop(grace=1.0)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks of its own running."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [
        t
        for t in asyncio.all_tasks() - before
        if not t.done() and t is not asyncio.current_task() and "websockets" not in repr(t)
    ]
    if leaked:
        for t in leaked:
            t.cancel()
        pytest.fail(f"leaked tasks: {[t.get_name() for t in leaked]}")
