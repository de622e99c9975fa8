"""A fixture that fails a test which leaves asyncio tasks, file descriptors or sockets behind.

Autouse for every integration test (``tests/integration/conftest.py`` imports it).

Before the test it notes the running tasks and every open descriptor of this process with what
it points at (``/proc/self/fd``: ``socket:[…]``, ``pipe:[…]``, ``/dev/ptmx``, files). After the
test, and after every other fixture has been torn down, it polls for a short grace period (for
transports and subprocess pipes that close on the next loop iterations) and then fails the test
with whatever is still left, naming each task and each descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest

GRACE = 2.0  # seconds for things that close asynchronously


def open_fds() -> dict[int, str]:
    """Every open descriptor of this process and what it points at."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listdir's own descriptor is gone already
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


def _describe(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    where = getattr(coro, "__qualname__", repr(coro))
    return f"{task.get_name()} ({where})"


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """Fail the test if it leaks tasks, descriptors or sockets."""
    loop = asyncio.get_running_loop()
    tasks_before = asyncio.all_tasks()
    fds_before = open_fds()
    yield
    deadline = loop.time() + GRACE
    while True:
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() - tasks_before if not t.done() and t is not me]
        fds = {fd: target for fd, target in open_fds().items() if fds_before.get(fd) != target}
        if (not tasks and not fds) or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)  # a grace poll: let closing transports finish
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=1)
    if tasks or fds:
        sockets = sorted(t for t in fds.values() if t.startswith("socket:"))
        others = sorted(t for t in fds.values() if not t.startswith("socket:"))
        pytest.fail(
            "leaked after the test: "
            f"{len(tasks)} task(s) {[_describe(t) for t in tasks]}, "
            f"{len(sockets)} socket(s) {sockets}, "
            f"{len(others)} other descriptor(s) {others}",
            pytrace=False,
        )
