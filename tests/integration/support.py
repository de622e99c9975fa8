"""Integration helpers: a test Gateway, the CLI in a subprocess, free ports, installed packages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.builders import is_terminal


class Gateway:
    """A minimal Subway Gateway for tests: records every frame, sends what the test asks."""

    def __init__(self) -> None:
        self.port = 0
        self.server: Server | None = None
        self.conns: list[ServerConnection] = []
        self.frames: list[dict[str, Any]] = []
        self.frame_conn: list[int] = []  # which connection (1-based) each frame came on
        self.close_codes: list[int | None] = []
        self.raw: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.connections = 0
        self._cond = asyncio.Condition()
        self.on_connect: Callable[[ServerConnection], Any] | None = None

    @property
    def url(self) -> str:
        """ws:// address of the running server."""
        return f"ws://127.0.0.1:{self.port}"

    async def start(self, **kwargs: Any) -> None:
        """Listen (on the previous port after a stop, so the edge can come back)."""
        self.server = await serve(self._handler, "127.0.0.1", self.port, **kwargs)
        self.port = next(iter(self.server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        """Kill the server and every connection."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        self.conns.clear()

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        number = self.connections
        self.conns.append(ws)
        assert ws.request is not None
        self.headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        if self.on_connect is not None:
            await self.on_connect(ws)
        try:
            async for frame in ws:
                assert isinstance(frame, str)
                async with self._cond:
                    self.raw.append(frame)
                    self.frames.append(json.loads(frame))
                    self.frame_conn.append(number)
                    self._cond.notify_all()
        except ConnectionClosed:
            pass
        async with self._cond:
            self.close_codes.append(ws.close_code)
            self._cond.notify_all()

    async def wait(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0, count: int = 1
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` received frames match ``pred``; return them."""

        def found() -> list[dict[str, Any]]:
            return [f for f in self.frames if pred(f)]

        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(lambda: len(found()) >= count), timeout)
        return found()

    async def send(self, msg: dict[str, Any] | str) -> None:
        """Send to the newest connection."""
        text = msg if isinstance(msg, str) else json.dumps(msg)
        await self.conns[-1].send(text)

    async def terminal(self, ref: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the terminal message of ``ref``."""
        found = await self.wait(lambda f: f.get("requestRef") == ref and is_terminal(f), timeout)
        return found[0]

    def of(self, ref: str) -> list[dict[str, Any]]:
        """Every frame about ``ref``."""
        return [f for f in self.frames if f.get("requestRef") == ref]


class LocalTcpServer:
    """A TCP server on 127.0.0.1 whose connections a subclass answers in :meth:`serve`.

    Port 0 to start with, a free one; after a stop, :meth:`start` listens on the same port again
    so that a client can come back. :meth:`stop` closes every connection: a handler sees the end
    of its stream and returns, and one still busy after ``grace`` seconds is cancelled.
    """

    grace: ClassVar[float] = 2.0

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen (on the previous port after a stop)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            _, pending = await asyncio.wait(list(self._handlers), timeout=self.grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one connection until it ends."""
        raise NotImplementedError

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self.serve(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # end normally: asyncio's stream server callback chokes on a cancelled handler
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)


ServerT = TypeVar("ServerT", bound=LocalTcpServer)


@contextlib.asynccontextmanager
async def running(server: ServerT) -> AsyncIterator[ServerT]:
    """``server`` started, and stopped on the way out: the body of a server fixture."""
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


#: The benchmark scripts of the repository.
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_benchmark_smoke(
    script: str,
    *extra: str,
    columns: Sequence[str] = (),
    timeout: float = 180,
    check_exit: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<script> --smoke --time-limit 150 *extra`` and check its table: exit
    code 0 (unless ``check_exit`` is false) and every one of ``columns`` in its output."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", "--time-limit", "150", *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check_exit:
        assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    missing = [c for c in columns if c not in proc.stdout]
    assert not missing, f"{missing} not in:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc


def edge_cmd(*args: str) -> list[str]:
    """The command line of ``edge-proxy *args``, run by this interpreter."""
    return [sys.executable, "-m", "edge_proxy", *args]


def cli(
    *args: str,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``edge-proxy *args`` to its end, its output captured as text (any exit code)."""
    return subprocess.run(
        edge_cmd(*args),
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


async def acli(
    *args: str, timeout: float = 60, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """:func:`cli` in a thread, so that the test's Gateway and daemon go on meanwhile."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: cli(*args, timeout=timeout, env=env))


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def installed_package(source: Path, target: Path, module_prefix: str) -> Iterator[Path]:
    """pip-install a package into ``target`` and put it on sys.path, as a user's site would be.

    ``--no-build-isolation`` keeps it offline (setuptools and wheel come with the dev extras).
    """
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.startswith(module_prefix)]:
            del sys.modules[name]
