"""The operator console under load: N browser tabs' worth of live streams on a running edge.

Used by ``benchmarks/telemetry.py --console-clients N``: the edge runs the same load twice,
without the console and then with ``console.listen`` set and N tabs open, and the two CPU
figures are printed side by side. A tab is what a browser does on a console page: it loads the
page's data once (the JSON API), then follows its live stream (Server-Sent Events), reading
every event. The tabs are spread over the pages: the overview, the devices table (every
device, every second) and device pages (one device's points, values and chart samples).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import socket
from typing import Any

import aiohttp

TARGET_POINTS = 5.0  # the bound: CPU within 5 percentage points of the run without


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_console(tree: dict[str, Any], port: int) -> dict[str, Any]:
    """``tree`` with the console on 127.0.0.1:``port`` (read-only, no token: loopback)."""
    out = copy.deepcopy(tree)
    out["console"] = {"listen": f"127.0.0.1:{port}", "max_clients": 64}
    return out


def pages(count: int, devices: list[str]) -> list[tuple[str, str]]:
    """(data URL, stream topics) of ``count`` tabs: overview, devices, then device pages."""
    out: list[tuple[str, str]] = []
    for i in range(count):
        if i % 3 == 0:
            out.append(("/api/overview", "overview,changes"))
        elif i % 3 == 1:
            out.append(("/api/devices", "devices,changes"))
        else:
            dev = devices[(i * 7919) % len(devices)]
            out.append((f"/api/devices/{dev}", f"device:{dev},changes"))
    return out


class Tabs:
    """``count`` console tabs open on 127.0.0.1:``port`` while the ``async with`` lasts."""

    def __init__(self, port: int, count: int, devices: list[str]) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.count = count
        self.devices = devices
        self.events = 0
        self.bytes = 0
        self.reconnects = 0
        self.errors: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Tabs:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        for i in range(60):  # the console listens once the daemon has started
            try:
                async with self._session.get(self.base + "/api/overview") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.25 + 0 * i)
        for data, topics in pages(self.count, self.devices):
            self._tasks.append(asyncio.create_task(self._tab(data, topics)))
        return self

    async def _tab(self, data: str, topics: str) -> None:
        assert self._session is not None
        while True:
            try:
                async with self._session.get(self.base + data) as r:
                    self.bytes += len(await r.read())
                async with self._session.get(f"{self.base}/api/events?topics={topics}") as r:
                    tail = b""
                    async for chunk in r.content.iter_any():  # events can be long lines
                        self.bytes += len(chunk)
                        text = tail + chunk
                        self.events += text.count(b"\nevent:") + text.startswith(b"event:")
                        tail = text[-8:]
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.reconnects += 1
            await asyncio.sleep(1.0)

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    def summary(self) -> str:
        """What the tabs received."""
        return (
            f"{self.count} tabs received {self.events} events, {self.bytes / 1e6:.1f} MB "
            f"({self.reconnects} stream reconnects"
            + (f"; last error {self.errors[-1]}" if self.errors else "")
            + ")"
        )


def report(without: Any, with_tabs: Any, tabs: Tabs) -> None:
    """Print the two runs' CPU figures (the same load: values/s shown) and the bound's check."""
    delta = with_tabs.run.core_pct - without.run.core_pct
    verdict = "ok" if delta <= TARGET_POINTS else "OVER"
    print(
        f"\nconsole: edge CPU {without.run.core_pct:.1f} % of one core without the console "
        f"({without.rate:.0f} values/s, {without.delivered_pct:.3f} % delivered), "
        f"{with_tabs.run.core_pct:.1f} % with it open in {tabs.count} tabs "
        f"({with_tabs.rate:.0f} values/s, {with_tabs.delivered_pct:.3f} % delivered, peak RSS "
        f"{with_tabs.rss_mb:.1f} MB): {delta:+.1f} points (target <= +{TARGET_POINTS:g}: "
        f"{verdict})\n  {tabs.summary()}"
    )
