"""Unit tests are pure: a test here that opens a socket, runs an event loop, starts a process or
opens a pty fails, naming what it tried (move it to ``tests/integration/``).

The doors are closed around every phase of a unit test (setup, call, teardown), so a fixture of
any scope is held to the same rule, and an ``async def`` test fails when its loop is created.
The refusal is :func:`pytest.fail`, a ``BaseException``: ``except Exception`` does not hide it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

#: (owner, attribute, what calling it means)
DOORS: list[tuple[Any, str, str]] = [
    (socket.socket, "__init__", "opened a socket"),
    # __new__, not __init__: a half-built loop would complain when it is collected
    (asyncio.BaseEventLoop, "__new__", "created an event loop"),
    (asyncio.BaseEventLoop, "run_forever", "ran an event loop"),
    (asyncio.BaseEventLoop, "run_until_complete", "ran an event loop"),
    (subprocess.Popen, "__init__", "started a subprocess"),
    (os, "openpty", "opened a pty"),
    (os, "forkpty", "opened a pty"),
]


def _refuse(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        pytest.fail(f"a unit test {what}: move it to tests/integration/", pytrace=True)

    return refuse


@contextlib.contextmanager
def pure() -> Iterator[None]:
    """Close every door in :data:`DOORS` for the duration of the block."""
    with pytest.MonkeyPatch.context() as mp:
        for owner, name, what in DOORS:
            mp.setattr(owner, name, _refuse(what))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with pure():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with pure():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    with pure():
        return (yield)
