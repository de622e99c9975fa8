"""The guard of tests/unit/conftest.py refuses each kind of I/O a unit test must not do."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest


def test_a_socket_is_refused() -> None:
    with pytest.raises(pytest.fail.Exception, match="opened a socket"):
        socket.socket()
    with pytest.raises(pytest.fail.Exception, match="opened a socket"):
        socket.create_connection(("127.0.0.1", 9))


def test_an_event_loop_is_refused() -> None:
    with pytest.raises(pytest.fail.Exception, match="created an event loop"):
        asyncio.new_event_loop()


def test_a_subprocess_is_refused() -> None:
    with pytest.raises(pytest.fail.Exception, match="started a subprocess"):
        subprocess.run([sys.executable, "-c", "pass"], check=False)


def test_a_pty_is_refused() -> None:
    with pytest.raises(pytest.fail.Exception, match="opened a pty"):
        os.openpty()
