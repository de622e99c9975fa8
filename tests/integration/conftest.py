"""Integration fixtures: a running test Gateway, running edges, and a leak check."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from edge_proxy.config import Config
from edge_proxy.ops.daemon import Daemon
from tests.builders import base_tree, make_config
from tests.integration.leaks import no_leaks
from tests.integration.support import Gateway

__all__ = ["no_leaks"]  # autouse: every integration test fails if it leaks tasks or fds


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
