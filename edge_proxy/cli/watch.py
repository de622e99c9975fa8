"""``edge-proxy status --watch``: the console's overview and devices table, live in a terminal.

For boxes reached over SSH: the running daemon's status (the control socket's ``status``) is
asked for every ``--interval`` seconds and drawn with rich: the edge, the Gateway link and
since when, the outbox, commands in flight, devices online, the recent state changes, and
every device with the broken ones first. ``--count N`` stops after N refreshes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edge_proxy.ops.control import request

STATE_ORDER = {"offline": 0, "connecting": 1, "online": 2, "disabled": 3}
STATE_STYLE = {
    "online": "bold green",
    "connecting": "bold yellow",
    "backoff": "bold yellow",
    "offline": "bold white on red",
    "disabled": "dim",
    "stopped": "bold red",
}
MAX_ROWS = 200  # devices drawn (the rest are counted): a terminal is not a 5000-line page


def _epoch(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def ago(iso: object, now: float) -> str:
    """``3.2s ago`` / ``4.0m ago`` / ``never``."""
    at = _epoch(iso)
    if at is None:
        return "never"
    seconds = max(0.0, now - at)
    if seconds < 60:
        return f"{seconds:.1f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def state(text: object) -> Text:
    """A state word in its colour."""
    word = str(text)
    return Text(word, style=STATE_STYLE.get(word, ""))


def render(report: dict[str, Any], now: float | None = None) -> Group:
    """The overview and the devices table of one status report."""
    now = time.time() if now is None else now
    gw = report.get("gateway", {})
    box = report.get("outbox", {})
    devices = list(report.get("devices", []))
    online = sum(1 for d in devices if d.get("status") == "online")
    dropped = sum((box.get("dropped") or {}).values())
    head = Table.grid(padding=(0, 3))
    head.add_row(
        Text(f"edge {report.get('edge')}", style="bold"),
        Text.assemble("gateway ", state(gw.get("state")), f" since {ago(gw.get('since'), now)}"),
        f"outbox {box.get('messages', 0)} ({dropped} dropped)",
        f"{report.get('inFlight', 0)} in flight",
        Text(f"devices {online}/{len(devices)} online", style="bold"),
    )
    parts: list[Any] = [head]
    if gw.get("lastError"):
        parts.append(Text(f"last gateway error: {gw['lastError']}", style="red"))
    changes = report.get("changes") or []
    if changes:
        recent = Table(title="recent state changes", title_justify="left", box=None, pad_edge=False)
        for col in ("when", "what", "change", "reason"):
            recent.add_column(col, style="dim" if col == "when" else None)
        for c in changes[:5]:
            recent.add_row(
                ago(c.get("at"), now),
                str(c.get("id")),
                Text.assemble(state(c.get("previous")), " -> ", state(c.get("state"))),
                str(c.get("reason") or ""),
            )
        parts.append(recent)
    table = Table(expand=True, title="devices", title_justify="left")
    for col in ("device", "type", "link", "state", "last seen", "last error"):
        table.add_column(col, overflow="fold")
    for col in ("tx", "fail", "t/o", "reconn", "cycle ms", "overruns"):
        table.add_column(col, justify="right")
    devices.sort(key=lambda d: (STATE_ORDER.get(str(d.get("status")), 9), str(d.get("deviceId"))))
    for dev in devices[:MAX_ROWS]:
        err = dev.get("lastError") or {}
        counters = dev.get("counters") or {}
        groups = dev.get("telemetry") or []
        cycles = [g["cycleMs"] for g in groups if g.get("cycleMs") is not None]
        table.add_row(
            str(dev.get("deviceId")),
            str(dev.get("deviceType") or ""),
            str(dev.get("link") or "-"),
            state(dev.get("status")),
            ago(dev.get("lastSeen"), now),
            Text(f"{err.get('code')}: {err.get('message')}", style="red") if err else "-",
            str(counters.get("transactions", "-")),
            str(counters.get("failures", "-")),
            str(counters.get("timeouts", "-")),
            str(counters.get("reconnects", "-")),
            f"{max(cycles):g}" if cycles else "-",
            str(sum(int(g.get("skipped") or 0) for g in groups)) if groups else "-",
        )
    parts.append(table)
    if len(devices) > MAX_ROWS:
        parts.append(Text(f"... and {len(devices) - MAX_ROWS} more", style="dim"))
    return Group(*parts)


async def _status(path: str, timeout: float) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        async for doc in request(path, {"op": "status"}):
            return doc
        raise ConnectionError("it closed the connection without an answer")

    return await asyncio.wait_for(ask(), timeout)


def watch(path: str, interval: float = 1.0, count: int = 0, timeout: float = 5.0) -> int:
    """Redraw the status every ``interval`` s (``count`` times; 0: until Ctrl-C)."""
    console = Console()

    async def main() -> int:
        try:
            first = await _status(path, timeout)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            console.print(f"[red]!! no answer from the daemon on {path}: {exc}[/red]")
            return 1
        shown = 1
        with Live(render(first), console=console, auto_refresh=False, screen=False) as live:
            live.refresh()
            while count == 0 or shown < count:
                await asyncio.sleep(interval)
                try:
                    view: Any = render(await _status(path, timeout))
                except (OSError, asyncio.TimeoutError, ValueError) as exc:
                    view = Text(f"!! the daemon is not answering on {path}: {exc}", style="red")
                live.update(view, refresh=True)
                shown += 1
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 0
