"""A small local Gateway for commissioning and demos (``edge-proxy gateway``).

It accepts edges, prints every message in a readable one-line form, and sends commands typed on
stdin (JSON lines, or the shorthand ``DEVICE CODE key=value ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from edge_proxy.wire import messages as protocol

Printer = Callable[[str], None]


def summarize(msg: dict[str, Any]) -> str:
    """One readable line for a protocol message."""
    mtype = str(msg.get("type", "?"))
    ref = msg.get("requestRef")
    parts = [mtype]
    if ref:
        parts.append(str(ref))
    if mtype == "REGISTER":
        devices = msg.get("clientInfo", {}).get("devices", [])
        states = ", ".join(f"{d.get('deviceId')}={d.get('status')}" for d in devices)
        parts.append(f"{msg.get('clientId')} devices: {states}")
    elif mtype == "HEARTBEAT":
        parts.append(json.dumps(msg.get("status", {}), separators=(",", ":")))
    elif mtype == "ack":
        parts.append(f"{msg.get('status')} {msg.get('targets')}")
    elif mtype == "progress_update":
        parts.append(f"{msg.get('progress')}% {msg.get('stage')}")
    elif mtype == "command_response":
        parts.append(str(msg.get("status")))
        if "result" in msg:
            parts.append(json.dumps(msg["result"], separators=(",", ":"))[:300])
        if "error" in msg:
            parts.append(json.dumps(msg["error"], separators=(",", ":")))
        if "durationMs" in msg:
            parts.append(f"({msg['durationMs']} ms)")
    elif mtype == "error":
        parts.append(f"{msg.get('code')}: {msg.get('message')}")
    elif mtype == "device_status":
        parts.append(
            f"{msg.get('deviceId')} {msg.get('previous')} -> {msg.get('status')} "
            f"({msg.get('reason')})"
        )
    elif mtype == "telemetry":
        parts.append(summarize_telemetry(msg))
    elif mtype == "COMMAND":
        cmd = msg.get("command", {})
        parts.append(
            f"{msg.get('targetClientId')} {cmd.get('commandType', 'SIMPLE')} "
            f"{cmd.get('commandCode') or cmd.get('operationType')} "
            f"{json.dumps(cmd.get('parameters', {}), separators=(',', ':'))}"
        )
    return " ".join(parts)


#: ``summarize_telemetry``: values shown at most, and the text they may take, before "+N more".
TELEMETRY_VALUES = 8
TELEMETRY_WIDTH = 100


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (bool, str)) or value is None:
        return json.dumps(value)
    return str(value)


def _cut(items: list[str], limit: int, width: int) -> list[str]:
    """Items while they fit in ``limit`` items and about ``width`` characters; then "+N more"."""
    shown: list[str] = []
    used = 0
    for item in items:
        if shown and (len(shown) >= limit or used + len(item) > width):
            break
        shown.append(item)
        used += len(item) + 1
    if len(shown) < len(items):
        shown.append(f"+{len(items) - len(shown)} more")
    return shown


def summarize_telemetry(msg: dict[str, Any]) -> str:
    """``pillar-001 fast #1842 snap door_state=1 temperature=23.5 [energy:bad] @10:00:00.250``."""
    parts = [str(msg.get("deviceId")), str(msg.get("group")), f"#{msg.get('seq')}"]
    if msg.get("snapshot"):
        parts.append("snap")
    values = msg.get("values")
    if isinstance(values, dict):
        items = [f"{k}={_shown(v)}" for k, v in values.items()]
        parts += _cut(items, TELEMETRY_VALUES, TELEMETRY_WIDTH)
    quality = msg.get("quality")
    if isinstance(quality, dict) and quality:
        flags = [f"{k}:{v}" for k, v in quality.items()]
        parts.append("[" + " ".join(_cut(flags, 4, TELEMETRY_WIDTH // 2)) + "]")
    sampled = msg.get("sampledAt")
    if isinstance(sampled, str) and "T" in sampled:
        parts.append("@" + sampled.partition("T")[2].removesuffix("Z"))
    return " ".join(parts)


def shorthand(code: str, args: list[str]) -> tuple[str | None, str | None, dict[str, Any]]:
    """``CODE key=value ...`` (or ``read points=a,b`` / ``write a=1``) as (op, code, params)."""
    params: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ValueError(f"expected key=value, got {arg!r}")
        params[key] = parse_value(value)
    if code.lower() == "read":
        points = params.get("points")
        if isinstance(points, str):
            params["points"] = points.split(",")
        return "read", None, params
    if code.lower() == "write":
        return "write", None, {"values": params}
    return None, code, params


def parse_value(text: str) -> Any:
    """``50`` -> 50, ``true`` -> True, ``a,b`` stays a string; JSON where it parses."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class DevGateway:
    """A local Subway Gateway: edges connect to it; it routes commands to them."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 18081, printer: Printer | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.printer = printer
        self.edges: dict[str, ServerConnection] = {}
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._server: Server | None = None
        self._refs = itertools.count(1)

    async def start(self) -> int:
        """Start listening; returns the bound port."""
        self._server = await serve(self._handler, self.host, self.port)
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _print(self, line: str) -> None:
        if self.printer is not None:
            self.printer(line)

    async def _handler(self, ws: ServerConnection) -> None:
        client: str | None = None
        try:
            async for frame in ws:
                try:
                    msg = json.loads(frame)
                except ValueError:
                    self._print(f"<- (not JSON) {str(frame)[:120]}")
                    continue
                if not isinstance(msg, dict):
                    continue
                if str(msg.get("type", "")).upper() == "REGISTER":
                    client = str(msg.get("clientId"))
                    self.edges[client] = ws
                self._print(f"<- {summarize(msg)}")
                async with self._changed:
                    self.messages.append(msg)
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            if client is not None and self.edges.get(client) is ws:
                del self.edges[client]
                self._print(f"-- edge {client} disconnected")

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0, start: int = 0
    ) -> dict[str, Any]:
        """Wait for a received message matching ``predicate`` (from index ``start``)."""

        def find() -> dict[str, Any] | None:
            return next((m for m in self.messages[start:] if predicate(m)), None)

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: find() is not None), timeout)
        found = find()
        assert found is not None
        return found

    async def send(self, msg: dict[str, Any], edge: str | None = None) -> None:
        """Send a message to one edge (or to the only / every connected edge)."""
        target = edge or str(msg.get("targetClientId", "")).partition(":")[0]
        conns = [self.edges[target]] if target in self.edges else list(self.edges.values())
        if not conns:
            raise ConnectionError("no edge is connected")
        self._print(f"-> {summarize(msg)}")
        text = json.dumps(msg)
        for ws in conns:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(text)

    def command(
        self,
        target: str,
        code: str | None = None,
        *,
        op: str | None = None,
        params: dict[str, Any] | None = None,
        command_type: str = "SIMPLE",
        timeout_ms: int = 5000,
        priority: str = "normal",
        ref: str | None = None,
    ) -> dict[str, Any]:
        """Build a COMMAND frame for ``edge:device``."""
        _, _, device = target.partition(":")
        cmd: dict[str, Any] = {"commandType": command_type, "parameters": params or {}}
        if device and device != "*":
            cmd["deviceId"] = device
        if code:
            cmd["commandCode"] = code
        if op:
            cmd["operationType"] = op
        return {
            "type": "COMMAND",
            "requestRef": ref or f"cmd-{next(self._refs)}",
            "targetClientId": target,
            "command": cmd,
            "priority": priority,
            "timeout": timeout_ms,
            "timestamp": protocol.utc_timestamp(),
            "version": protocol.VERSION,
        }

    async def call(self, msg: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        """Send a COMMAND (or QUERY) and wait for its terminal message."""
        start = len(self.messages)
        await self.send(msg)
        ref = msg.get("requestRef")
        return await self.wait_for(
            lambda m: m.get("requestRef") == ref and m.get("type") in ("command_response", "error"),
            timeout,
            start,
        )

    def parse_line(self, line: str) -> dict[str, Any] | None:
        """A typed line: JSON, or ``[edge:]device CODE|read|write key=value ...``."""
        line = line.strip()
        if not line or line.startswith("#"):
            return None
        if line.startswith("{"):
            msg = json.loads(line)
            if not isinstance(msg, dict):
                raise ValueError("a JSON line must be an object")
            return msg
        words = line.split()
        if len(words) < 2:
            raise ValueError("expected: [edge:]device COMMAND_CODE key=value ...")
        target, code, *args = words
        if ":" not in target:
            if len(self.edges) != 1:
                raise ValueError("several (or no) edges connected: write edge:device")
            target = f"{next(iter(self.edges))}:{target}"
        op, code_or_none, params = shorthand(code, args)
        return self.command(target, code_or_none, op=op, params=params)
